"""``ordermesh risk report``: each variant's precision, recall and cost, blocked traffic
included, from the decision log and the chargebacks known.

The fraud a policy declines never gets a label, except in the random share of would-be
declines that exploration approved. Each of those stands for 1 / propensity would-be
declines (inverse-propensity weighting), so the would-be declines' fraud rate, and with
it precision, recall and cost, can be estimated without bias; a bootstrap over the
decisions gives the intervals."""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from ordermesh_payment.risk.decision_log import LoggedDecision
from ordermesh_payment.risk.fairness import SegmentRates, segment_rates
from ordermesh_payment.risk.metrics import Costs


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class VariantReport:
    variant: str
    decisions: int
    would_decline: int
    explored: int
    precision: Estimate  # of the would-be declines: the share that is fraud
    recall: Estimate  # of all fraud: the share the policy declines
    cost_minor: Estimate  # fraud approved + margin of genuine would-be declines


def _point(
    sample: Sequence[LoggedDecision], fraud: Collection[str], costs: Costs
) -> tuple[float, float, float]:
    """(precision, recall, cost) of declining every would-be decline, estimated."""
    caught = 0.0  # estimated fraud among the would-be declines
    genuine_margin = 0.0  # estimated margin of genuine would-be declines
    passed = 0.0  # fraud among plain approvals (observed)
    passed_cost = 0.0
    for d in sample:
        is_fraud = d.order_id in fraud
        if d.would_decline:
            if d.explored:  # the only would-be declines with a label
                weight = 1.0 / d.propensity
                caught += weight * is_fraud
                genuine_margin += weight * (not is_fraud) * d.amount_minor * costs.margin_rate
        elif is_fraud:
            passed += 1
            passed_cost += d.amount_minor + costs.chargeback_fee_minor
    declines = sum(d.would_decline for d in sample)
    precision = caught / declines if declines else 0.0
    recall = caught / (caught + passed) if caught + passed else 0.0
    return precision, recall, passed_cost + genuine_margin


def report(
    decisions: Sequence[LoggedDecision],
    fraud: Collection[str],
    costs: Costs,
    rounds: int = 300,
    seed: int = 7,
) -> list[VariantReport]:
    """One report per variant, with 95% bootstrap intervals."""
    rng = random.Random(seed)
    reports = []
    for variant in sorted({d.variant for d in decisions}):
        mine = [d for d in decisions if d.variant == variant]
        point = _point(mine, fraud, costs)
        samples = [
            _point([mine[rng.randrange(len(mine))] for _ in mine], fraud, costs)
            for _ in range(rounds)
        ]

        def interval(i: int, value: float, draws: list[tuple[float, float, float]]) -> Estimate:
            ordered = sorted(s[i] for s in draws)
            return Estimate(
                value,
                ordered[int(0.025 * (len(ordered) - 1))],
                ordered[int(0.975 * (len(ordered) - 1))],
            )

        reports.append(
            VariantReport(
                variant,
                len(mine),
                sum(d.would_decline for d in mine),
                sum(d.explored for d in mine),
                interval(0, point[0], samples),
                interval(1, point[1], samples),
                interval(2, point[2], samples),
            )
        )
    return reports


def variant_segment_rates(
    decisions: Sequence[LoggedDecision], fraud: Collection[str], min_genuine: int
) -> dict[str, list[SegmentRates]]:
    """Per variant, each segment's false-decline and approval rates of its would-be
    declines. Only labelled decisions count (plain approvals, and explored would-be
    declines standing for 1 / propensity each), as for precision and recall."""
    rates = {}
    for variant in sorted({d.variant for d in decisions}):
        labelled = [
            d for d in decisions if d.variant == variant and (d.explored or not d.would_decline)
        ]
        rates[variant] = segment_rates(
            [d.segments for d in labelled],
            [int(d.order_id in fraud) for d in labelled],
            [d.would_decline for d in labelled],
            min_genuine,
            [1.0 / d.propensity for d in labelled],
        )
    return rates
