"""Off-policy estimates: the explored share of would-be declines stands in for the
declines nobody can label, and recovers their fraud rate without bias."""

from __future__ import annotations

import random

import pytest

from ordermesh_payment.risk.decision_log import LoggedDecision
from ordermesh_payment.risk.metrics import Costs
from ordermesh_payment.risk.report import report, variant_segment_rates

COSTS = Costs(margin_rate=0.25, chargeback_fee_minor=1500)
SHARE = 0.2  # exploration: large, so that a test-sized log has enough labels


def _log(n: int, seed: int) -> tuple[list[LoggedDecision], set[str], dict[str, float]]:
    """A policy declining 5% of orders, 60% of them fraud; 0.5% of its approvals are
    fraud. Returns the log, the chargebacks that would be known, and the truth."""
    rng = random.Random(seed)
    decisions, known, truth_fraud, would, caught = [], set(), 0, 0, 0
    for i in range(n):
        would_decline = rng.random() < 0.05
        fraud = rng.random() < (0.6 if would_decline else 0.005)
        explored = would_decline and rng.random() < SHARE
        propensity = (SHARE if explored else 1 - SHARE) if would_decline else 1.0
        order = f"o{i}"
        decisions.append(
            LoggedDecision(order, i, "champion", would_decline, explored, propensity, 1000)
        )
        truth_fraud += fraud
        would += would_decline
        caught += fraud and would_decline
        # A declined order moves no money: its fraud is never charged back.
        if fraud and (not would_decline or explored):
            known.add(order)
    return decisions, known, {"precision": caught / would, "recall": caught / truth_fraud}


def test_inverse_propensity_recovers_precision_and_recall_of_the_blocked_traffic() -> None:
    decisions, chargebacks, truth = _log(20_000, seed=5)
    [champion] = report(decisions, chargebacks, COSTS, rounds=100)
    assert champion.variant == "champion"
    assert champion.would_decline > 900
    assert champion.explored > 150
    assert champion.precision.low <= truth["precision"] <= champion.precision.high
    assert champion.recall.low <= truth["recall"] <= champion.recall.high
    assert champion.cost_minor.low <= champion.cost_minor.value <= champion.cost_minor.high
    # Naively, counting only the labels seen, the declines would look far less precise.
    naive = (
        sum(d.order_id in chargebacks for d in decisions if d.would_decline)
        / champion.would_decline
    )
    assert naive < champion.precision.low


def test_each_variant_gets_its_own_report() -> None:
    decisions, chargebacks, _ = _log(2000, seed=6)
    half = [
        LoggedDecision(d.order_id, d.decided_ms, "challenger" if i % 2 else "champion",
                       d.would_decline, d.explored, d.propensity, d.amount_minor)
        for i, d in enumerate(decisions)
    ]  # fmt: skip
    reports = report(half, chargebacks, COSTS, rounds=50)
    assert [(r.variant, r.decisions) for r in reports] == [("challenger", 1000), ("champion", 1000)]


def test_segment_rates_of_the_log_weigh_the_explored_declines() -> None:
    """Genuine orders of new customers are declined 10% of the time, of returning ones
    never; only a fifth of the declines is explored (labelled), each standing for five."""
    decisions, fraud = [], set[str]()
    for i in range(5000):
        new = i % 2 == 0
        would_decline = new and i % 20 == 0
        explored = would_decline and i % 100 == 0
        propensity = (SHARE if explored else 1 - SHARE) if would_decline else 1.0
        segments = {"billing_country": "DE", "customer": "new" if new else "returning",
                    "payment_token": "known"}  # fmt: skip
        decisions.append(
            LoggedDecision(f"o{i}", i, "champion", would_decline, explored, propensity, 1000,
                           segments)
        )  # fmt: skip
    rates = variant_segment_rates(decisions, fraud, min_genuine=100)["champion"]
    by = {(r.segmentation, r.segment): r for r in rates}
    assert by[("customer", "new")].false_decline_rate == pytest.approx(0.1)
    assert by[("customer", "returning")].false_decline_rate == 0.0
    assert by[("customer", "new")].approval_rate == pytest.approx(0.9)
    assert by[("customer", "new")].orders == 2250 + 50  # labelled: approvals and explored
