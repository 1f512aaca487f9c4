"""The risk scorer: the model decides within its budget, the rules whenever it cannot."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from ordermesh.common.v1 import money_pb2, risk_pb2
from ordermesh.payment.v1 import payment_pb2 as pb
from ordermesh_payment.api import authorization_of
from ordermesh_payment.domain import AuthorizationRequest, RiskSignals
from ordermesh_payment.risk import scoring
from ordermesh_payment.risk.drift import reference
from ordermesh_payment.risk.events import Attempt, Item
from ordermesh_payment.risk.features import FeatureDefinition
from ordermesh_payment.risk.models import Artifact, LogisticModel
from ordermesh_payment.risk.registry import RegistryWatch
from ordermesh_payment.risk.scoring import (
    RULES_THRESHOLD,
    RiskObserver,
    RiskScorer,
    load_model,
    variant_bucket,
)
from ordermesh_payment.risk.settings import RiskSettings
from ordermesh_payment.usecases import _attempt
from ordermesh_platform.errors import InvalidArgument

DEFINITION = RiskSettings().feature_definition()
MANY_TOKENS = DEFINITION.names.index("customer_distinct_tokens_24h")


class FakeFeatures:
    """History as a test sets it: every attempt gets ``tokens`` distinct tokens."""

    def __init__(self, definition: FeatureDefinition, tokens: int = 1, fail: bool = False):
        self.definition = definition
        self.tokens = tokens
        self.fail = fail

    async def vectors(self, conn: object, attempts: Sequence[Attempt]) -> list[list[float]]:
        if self.fail:
            raise ConnectionError("database gone")
        vectors = [self.definition.vector({}, a) for a in attempts]
        for v in vectors:
            v[MANY_TOKENS] = float(self.tokens)
        return vectors


class Sessions:
    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        yield None

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[None]:
        yield None


class SlowModel:
    kind = "logistic"

    def __init__(self, seconds: float = 0.0, fail: bool = False, waits: bool = False) -> None:
        self.seconds = seconds
        self.fail = fail
        self.waits = waits  # off the CPU (as when the OS runs another process), or on it

    def scores(self, vectors: Sequence[Sequence[float]]) -> list[float]:
        if self.waits:
            time.sleep(self.seconds)
        else:
            until = time.thread_time() + self.seconds
            while time.thread_time() < until:
                pass
        if self.fail:
            raise RuntimeError("model broke")
        return [0.9 for _ in vectors]

    def payload(self) -> dict[str, Any]:
        return {}


def _artifact(model: Any, threshold: float = 0.5) -> Artifact:
    return Artifact(model, DEFINITION.names, DEFINITION.schema_hash, threshold, {}, {})


def _attempts(n: int) -> list[Attempt]:
    return [
        Attempt(f"o{i}", 1_000_000, "c1", f"t{i}", "", "", 2000, "EUR",
                (Item("TEA", 1, 2000),), "DE", "DE", "", 0)
        for i in range(n)
    ]  # fmt: skip


async def _decide(scorer: RiskScorer, attempts: Sequence[Attempt]) -> list[scoring.RiskDecision]:
    """As payment does: the features read, then the decisions on them."""
    return await scorer.decide(attempts, await scorer.vectors_for(attempts))


def _scorer(
    features: FakeFeatures, model: Artifact | None, budget_s: float = 1.0
) -> tuple[RiskScorer, list[str]]:
    fallbacks: list[str] = []
    observer = RiskObserver(fallback=fallbacks.append)
    return RiskScorer(Sessions(), features, model, budget_s, observer), fallbacks  # type: ignore[arg-type]


async def test_without_a_model_the_rules_decide_and_the_fallback_is_counted() -> None:
    scorer, fallbacks = _scorer(FakeFeatures(DEFINITION, tokens=5), None)
    decisions = await _decide(scorer, _attempts(3))
    assert [d.declined for d in decisions] == [True, True, True]  # many tokens
    assert {d.model_version for d in decisions} == {"rules"}
    assert {d.threshold for d in decisions} == {RULES_THRESHOLD}
    assert fallbacks == ["no_model"]
    quiet, _ = _scorer(FakeFeatures(DEFINITION, tokens=1), None)
    assert not any(d.declined for d in await _decide(quiet, _attempts(3)))


async def test_the_model_decides_the_whole_batch_at_its_threshold() -> None:
    model = LogisticModel([0.0] * 48, [1.0] * 48, [0.0] * 48, 0.0)  # scores 0.5
    artifact = _artifact(model, threshold=0.6)
    scorer, fallbacks = _scorer(FakeFeatures(DEFINITION, tokens=5), artifact)
    decisions = await _decide(scorer, _attempts(4))
    assert [(d.score, d.declined, d.model_version) for d in decisions] == [
        (0.5, False, artifact.version)
    ] * 4
    assert fallbacks == []


async def test_a_corrupt_model_file_leaves_the_rules_deciding(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    path.write_text('{"format": "ordermesh-risk-model/1", "kind": "lightgbm", "mod')
    assert load_model(str(path), DEFINITION.schema_hash) is None
    assert load_model("", DEFINITION.schema_hash) is None
    scorer, fallbacks = _scorer(FakeFeatures(DEFINITION, tokens=5), load_model(str(path), ""))
    assert all(d.declined for d in await _decide(scorer, _attempts(2)))
    assert fallbacks == ["no_model"]


async def test_a_failing_model_leaves_the_rules_deciding() -> None:
    scorer, fallbacks = _scorer(FakeFeatures(DEFINITION), _artifact(SlowModel(fail=True)))
    decisions = await _decide(scorer, _attempts(2))
    assert {d.model_version for d in decisions} == {"rules"}
    assert fallbacks == ["failed"]


async def test_a_model_over_budget_sends_the_next_batches_to_the_rules_for_a_rest() -> None:
    clock = [1000.0]
    fallbacks: list[str] = []
    scorer = RiskScorer(
        Sessions(),  # type: ignore[arg-type]
        FakeFeatures(DEFINITION),  # type: ignore[arg-type]
        _artifact(SlowModel(seconds=0.05)),
        budget_s=0.01,
        observer=RiskObserver(fallback=fallbacks.append),
        clock=lambda: clock[0],
    )
    first = await _decide(scorer, _attempts(2))  # already scored: it keeps the model's scores
    assert {d.variant for d in first} == {"champion"}
    second = await _decide(scorer, _attempts(2))
    assert {(d.model_version, d.fallback) for d in second} == {("rules", "over_budget")}
    assert fallbacks == ["over_budget"]
    clock[0] += scoring.OVER_BUDGET_REST_S + 0.1
    assert {d.variant for d in await _decide(scorer, _attempts(1))} == {"champion"}


async def test_a_model_call_that_waits_off_the_cpu_is_not_over_its_budget() -> None:
    # Wall time past the budget, CPU time within it: the machine was busy, not the model.
    scorer, fallbacks = _scorer(
        FakeFeatures(DEFINITION), _artifact(SlowModel(seconds=0.05, waits=True)), budget_s=0.01
    )
    for _ in range(2):
        assert {d.variant for d in await _decide(scorer, _attempts(2))} == {"champion"}
    assert fallbacks == []


async def test_unreadable_features_are_scored_by_the_rules_without_history() -> None:
    scorer, fallbacks = _scorer(FakeFeatures(DEFINITION, fail=True), _artifact(SlowModel()))
    decisions = await _decide(scorer, _attempts(2))
    assert [d.declined for d in decisions] == [False, False]
    assert fallbacks == ["no_features"]


@pytest.mark.parametrize("count", [0])
async def test_an_empty_batch_is_not_scored(count: int) -> None:
    scorer, fallbacks = _scorer(FakeFeatures(DEFINITION), None)
    assert await _decide(scorer, _attempts(count)) == []
    assert fallbacks == []


def _item(sku: str, quantity: int, unit_minor: int, currency: str = "EUR") -> pb.PaymentItem:
    price = money_pb2.Money(amount_minor=unit_minor, currency=currency)
    return pb.PaymentItem(sku=sku, quantity=quantity, unit_price=price)


def test_risk_signals_and_items_travel_from_the_request_into_the_attempt_scored() -> None:
    created = Timestamp(seconds=1_700_000_000)
    request = pb.AuthorizePaymentRequest(
        order_id="o1",
        customer_id="c1",
        amount=money_pb2.Money(amount_minor=11_200, currency="EUR"),
        payment_token="tok_ok",
        risk_signals=risk_pb2.RiskSignals(
            client_ip="192.0.2.7", device_id="d1", billing_country="DE",
            shipping_country="FR", account_created_at=created,
        ),
        items=[_item("TEA-SENCHA", 2, 600), _item("GIFT-CARD-100", 1, 10_000)],
    )  # fmt: skip
    attempt = _attempt(authorization_of(request), at_ms=1_800_000_000_000)
    assert (attempt.ip, attempt.device_id) == ("192.0.2.7", "d1")
    assert (attempt.billing_country, attempt.shipping_country) == ("DE", "FR")
    assert attempt.account_created_ms == 1_700_000_000_000
    assert attempt.items == (Item("TEA-SENCHA", 2, 600), Item("GIFT-CARD-100", 1, 10_000))
    features = dict(zip(DEFINITION.names, DEFINITION.vector({}, attempt), strict=True))
    assert features["country_mismatch"] == 1.0
    assert (features["item_count"], features["distinct_skus"]) == (3.0, 2.0)
    assert features["resale_share"] == 10_000 / 11_200  # the gift card is resale-prone
    bare = _attempt(authorization_of(pb.AuthorizePaymentRequest(order_id="o2")), at_ms=5)
    assert (bare.ip, bare.device_id, bare.account_created_ms, bare.items) == ("", "", 5, ())


def test_oversized_risk_signals_are_invalid_arguments_naming_the_field() -> None:
    request = AuthorizationRequest(
        "o1", "c1", 100, "EUR", "tok_ok", RiskSignals(client_ip="x" * 65, billing_country="DEU")
    )
    with pytest.raises(InvalidArgument) as raised:
        request.validate()
    fields = {v.field for v in raised.value.violations}
    assert fields == {"risk_signals.client_ip", "risk_signals.billing_country"}


def test_malformed_or_too_many_items_are_invalid_arguments_naming_the_field() -> None:
    def violations(*items: pb.PaymentItem) -> set[str]:
        request = pb.AuthorizePaymentRequest(
            order_id="o1", customer_id="c1", payment_token="tok_ok",
            amount=money_pb2.Money(amount_minor=100, currency="EUR"), items=items,
        )  # fmt: skip
        with pytest.raises(InvalidArgument) as raised:
            authorization_of(request).validate()
        return {v.field for v in raised.value.violations}

    assert violations(
        _item("ok", 1, 100), _item("no spaces", 1, 100), _item("A", 0, 100),
        _item("B", 1, -1), _item("C", 1, 100, "USD"),
    ) == {
        "items[1].sku", "items[2].quantity", "items[3].unit_price.amount_minor",
        "items[4].unit_price.currency",
    }  # fmt: skip
    assert violations(*(_item(f"S{i}", 1, 1) for i in range(51))) == {"items"}


def _logistic(logit: float, threshold: float = 0.5) -> Artifact:
    """A model scoring every payment alike: logit -8 approves all, +8 declines all."""
    n = len(DEFINITION.names)
    return _artifact(LogisticModel([0.0] * n, [1.0] * n, [0.0] * n, logit), threshold)


def _customers(n: int) -> list[Attempt]:
    return [replace(a, customer_id=f"cust-{i}") for i, a in enumerate(_attempts(n))]


def test_variant_assignment_is_stable_and_follows_the_share() -> None:
    # A digest, not Python's salted hash(): the same on every pod and after restarts.
    assert variant_bucket("c1") == 0.8162566297959147
    buckets = [variant_bucket(f"customer-{i}") for i in range(10_000)]
    assert 0.18 < sum(b < 0.2 for b in buckets) / len(buckets) < 0.22


async def test_the_newest_challenger_decides_for_its_share_of_customers() -> None:
    seen: list[tuple[str, str]] = []
    observer = RiskObserver(decided=lambda variant, decision: seen.append((variant, decision)))
    champion, older, newest = _logistic(-8.0), _logistic(-8.0, 0.4), _logistic(8.0)
    scorer = RiskScorer(Sessions(), FakeFeatures(DEFINITION), champion, 1.0, observer, 0.5)  # type: ignore[arg-type]
    scorer.use_models(champion, [older, newest])
    attempts = _customers(60)
    decisions = await _decide(scorer, attempts)
    for attempt, decision in zip(attempts, decisions, strict=True):
        treated = variant_bucket(attempt.customer_id) < 0.5
        assert decision.variant == ("challenger" if treated else "champion")
        assert decision.declined is treated
        assert decision.model_version == (newest if treated else champion).version
    assert 10 < sum(d.variant == "challenger" for d in decisions) < 50
    assert seen == [(d.variant, "decline" if d.declined else "approve") for d in decisions]


async def test_challengers_score_every_batch_in_shadow_without_acting() -> None:
    shadowed: list[tuple[str, bool]] = []
    observer = RiskObserver(shadowed=lambda version, declined: shadowed.append((version, declined)))
    champion, challenger = _logistic(-8.0), _logistic(8.0)
    scorer = RiskScorer(Sessions(), FakeFeatures(DEFINITION), champion, 1.0, observer)  # type: ignore[arg-type]
    scorer.use_models(champion, [challenger])
    decisions = await _decide(scorer, _customers(5))
    assert {(d.variant, d.declined) for d in decisions} == {("champion", False)}
    for _ in range(100):  # the shadow runs off the path, in a thread
        if len(shadowed) == 5:
            break
        await asyncio.sleep(0.01)
    assert shadowed == [(challenger.version, True)] * 5


async def test_drift_is_measured_for_the_champion_on_its_recent_batches() -> None:
    champion = _logistic(-8.0)
    assert await _scorer(FakeFeatures(DEFINITION), champion)[0].drift_now() is None  # no ref
    vectors = [DEFINITION.vector({}, a) for a in _attempts(20)]
    champion.reference = reference(DEFINITION.names, vectors, champion.model.scores(vectors))
    scorer, _ = _scorer(FakeFeatures(DEFINITION, tokens=9), champion)
    assert await scorer.drift_now() is None  # nothing scored yet
    await _decide(scorer, _attempts(20))
    measured = await scorer.drift_now()
    assert measured is not None
    version, psi = measured
    assert version == champion.version
    # Every attempt now has 9 tokens where the reference saw 1: that feature moved.
    assert psi["features"]["customer_distinct_tokens_24h"] > 0.25
    assert psi["features"]["amount_log"] < 0.01


async def test_exploration_approves_would_be_declines_with_their_propensity_logged() -> None:
    seen: list[str] = []
    observer = RiskObserver(decided=lambda variant, decision: seen.append(decision))
    strict = _logistic(8.0)  # would decline everything
    scorer = RiskScorer(
        Sessions(), FakeFeatures(DEFINITION), strict, 1.0, observer,  # type: ignore[arg-type]
        exploration_share=0.25, rng=random.Random(3),
    )  # fmt: skip
    decisions = await _decide(scorer, _customers(400))
    explored = [d for d in decisions if d.explored]
    assert 60 < len(explored) < 140  # about a quarter
    assert all(not d.declined and d.propensity == 0.25 for d in explored)
    assert all(d.declined and d.propensity == 0.75 for d in decisions if not d.explored)
    assert seen.count("explore") == len(explored)
    lenient = _logistic(-8.0)  # approvals are never explored
    scorer.use_model(lenient)
    assert {(d.explored, d.propensity) for d in await _decide(scorer, _customers(50))} == {
        (False, 1.0)
    }


class RegistryCutOffOnce:
    """A registry with one champion whose first read is cut off by its budget."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.reads = 0

    async def live(self, conn: object) -> tuple[tuple[str, str], ...]:
        return (("v1", "champion"),)

    async def artifact_text(self, conn: object, version: str) -> str:
        self.reads += 1
        if self.reads == 1:
            raise TimeoutError
        return self.text


async def test_a_registry_check_that_was_cut_off_is_tried_again_and_loads_the_champion() -> None:
    artifact = _artifact(LogisticModel([0.0] * 48, [1.0] * 48, [0.0] * 48, 0.0))
    registry = RegistryCutOffOnce(json.dumps(artifact.to_json()))
    scorer, _ = _scorer(FakeFeatures(DEFINITION), None)
    watch = RegistryWatch(registry, Sessions(), scorer)  # type: ignore[arg-type]
    with pytest.raises(TimeoutError):
        await watch.check()
    assert scorer.model is None
    await watch.check()  # the same versions: read again, not skipped as seen
    assert scorer.model is not None
    assert scorer.model.version == artifact.version
