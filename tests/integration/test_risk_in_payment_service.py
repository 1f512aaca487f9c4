"""Risk scoring inside payment-service on PostgreSQL: the batch scored before the
provider is asked, RISK_DECLINED for what it refuses, the rules when the model is
unusable, and the features fed by payment's consumer of its own events (on a real
broker)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.message import Message
from sqlalchemy import select
from typer.testing import CliRunner

from ordermesh.common.v1 import money_pb2, risk_pb2
from ordermesh.events.v1 import events_pb2
from ordermesh.payment.v1 import payment_pb2 as pb
from ordermesh.payment.v1 import payment_pb2_grpc
from ordermesh_cli.main import app
from ordermesh_cli.registry import load_service
from ordermesh_client.errors import RiskDeclined, decode, from_status
from ordermesh_messaging.events import TOPICS
from ordermesh_payment.risk.decision_log import unpack_features
from ordermesh_payment.risk.metrics import Costs
from ordermesh_payment.risk.models import (
    BASELINE_RULES,
    Artifact,
    LogisticModel,
    Rule,
    RulesModel,
)
from ordermesh_payment.risk.registry import ModelRegistry
from ordermesh_payment.risk.settings import RiskSettings
from ordermesh_payment.risk.simulate import SimulationSettings, Simulator, simulate
from ordermesh_payment.risk.training import TrainingSettings, train
from ordermesh_payment.store import risk_decisions, risk_models
from ordermesh_platform.db import create_engine
from ordermesh_platform.metrics import RISK_DECISIONS, RISK_FALLBACKS
from tests.support.broker import Broker, events_on, running_broker
from tests.support.outbox import until_outbox_empty
from tests.support.risk_features import until_features_hold
from tests.support.services import running_service

pytestmark = pytest.mark.integration

if TYPE_CHECKING:
    Stub = payment_pb2_grpc.PaymentServiceAsyncStub


@pytest.fixture
def broker() -> Iterator[Broker]:
    """One per test: its payment events reach no other test's features."""
    with running_broker() as b:
        yield b


@asynccontextmanager
async def _payment(
    database: str, model_path: Path | None = None, broker: Broker | None = None
) -> AsyncIterator[Stub]:
    """Without a broker, the features stay as they are: only tests of history need one."""
    async with (
        running_service(
            load_service("payment"),
            database,
            risk_enabled=True,
            risk_model_path=str(model_path or ""),
            risk_registry_poll_s=0.05,
            kafka_bootstrap=broker.bootstrap if broker is not None else "127.0.0.1:1",
            consumer_session_timeout_s=2.0,  # the group is joined within a second
        ) as service,
        grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel,
    ):
        yield payment_pb2_grpc.PaymentServiceStub(channel)


def _authorize(order_id: str, token: str, customer: str = "c-risk") -> pb.AuthorizePaymentRequest:
    return pb.AuthorizePaymentRequest(
        order_id=order_id,
        customer_id=customer,
        amount=money_pb2.Money(amount_minor=900, currency="EUR"),
        payment_token=token,
    )


def _count(metric: object, *labels: str) -> float:
    return float(metric.labels(*labels)._value.get())  # type: ignore[attr-defined]


async def test_a_customer_cycling_through_cards_is_declined_by_the_rules_when_the_model_is_corrupt(
    pg_database: str, tmp_path: Path, broker: Broker
) -> None:
    corrupt = tmp_path / "model.json"
    corrupt.write_text('{"format": "ordermesh-risk-model/1", "kind": "lightg')
    fallbacks = _count(RISK_FALLBACKS, "no_model")
    async with _payment(pg_database, corrupt, broker) as stub:
        # One batch of three cards: scored together, from the history before the batch.
        first = await stub.AuthorizePaymentBatch(
            pb.AuthorizePaymentBatchRequest(
                requests=[_authorize(f"o{i}", f"tok-card-{i}") for i in (1, 2, 3)]
            )
        )
        assert [r.payment.state for r in first.results] == [pb.PAYMENT_STATE_AUTHORIZED] * 3
        await until_features_hold(pg_database, "c-risk", ["o1", "o2", "o3"])
        # The fourth card within a day: the features saw the three, the rules decline.
        fourth = await stub.AuthorizePaymentBatch(
            pb.AuthorizePaymentBatchRequest(
                requests=[_authorize("o4", "tok-card-4"), _authorize("o5", "tok_ok", "c-other")]
            )
        )
        refused, other = fourth.results
        failure = from_status(refused.status)
        assert isinstance(failure, RiskDeclined)
        assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
        assert failure.decline_reason == "RISK_DECLINED"
        # The batch item's status carries the assessment that declined it.
        assert failure.risk_assessment is not None
        assert failure.risk_assessment.decision == risk_pb2.RISK_DECISION_DECLINE
        assert other.payment.state == pb.PAYMENT_STATE_AUTHORIZED
        # Recorded as a declined payment: a retry answers the same, the provider unasked.
        got = await stub.GetPayment(pb.GetPaymentRequest(order_id="o4"))
        assert (got.payment.state, got.payment.decline_reason) == (
            pb.PAYMENT_STATE_DECLINED,
            "RISK_DECLINED",
        )
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await stub.AuthorizePayment(_authorize("o4", "tok-card-4"))
        assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _count(RISK_FALLBACKS, "no_model") == fallbacks + 2


async def test_a_trained_model_scores_the_batches_of_the_running_service(
    pg_database: str, tmp_path: Path
) -> None:
    events, _ = Simulator(
        SimulationSettings(orders=1500, fraud_share=0.06, days=20, chargeback_delay_days=(2, 6))
    ).run()
    risk = RiskSettings()
    artifacts = train(
        events,
        risk.feature_definition(),
        Costs(risk.margin_rate, risk.chargeback_fee_minor),
        TrainingSettings(maturity_days=6),
    )
    [trees] = [a for a in artifacts if a.kind == "lightgbm"]
    path = trees.save(tmp_path / "lightgbm.json")
    scored = _count(RISK_DECISIONS, "champion", "approve") + _count(
        RISK_DECISIONS, "champion", "decline"
    )
    async with _payment(pg_database, path) as stub:
        answer = await stub.AuthorizePaymentBatch(
            pb.AuthorizePaymentBatchRequest(
                requests=[_authorize(f"m{i}", "tok_ok", f"c{i}") for i in range(5)]
            )
        )
    assert len(answer.results) == 5
    after = _count(RISK_DECISIONS, "champion", "approve") + _count(
        RISK_DECISIONS, "champion", "decline"
    )
    assert after == scored + 5


def _constant(score_logit: float) -> Artifact:
    """A model that gives every payment the same score: approve all, or decline all."""
    definition = RiskSettings().feature_definition()
    n = len(definition.names)
    model = LogisticModel([0.0] * n, [1.0] * n, [0.0] * n, score_logit)
    return Artifact(model, definition.names, definition.schema_hash, 0.5, {}, {})


async def _state_of(stub: Stub, order_id: str) -> str:
    answer = await stub.AuthorizePaymentBatch(
        pb.AuthorizePaymentBatchRequest(requests=[_authorize(order_id, "tok_ok", order_id)])
    )
    [result] = answer.results
    if result.HasField("payment"):
        return pb.PaymentState.Name(result.payment.state)
    refused = from_status(result.status)
    return refused.reason_name or str(result.status.code)


async def _until(stub: Stub, wanted: str, prefix: str) -> int:
    """Authorize new orders until one answers ``wanted``; how many it took."""
    for attempt in range(200):
        if await _state_of(stub, f"{prefix}{attempt}") == wanted:
            return attempt
        await asyncio.sleep(0.05)
    raise AssertionError(f"no order answered {wanted}")


async def test_a_promotion_and_a_rollback_are_picked_up_by_the_running_service(
    pg_database: str,
) -> None:
    lenient, strict = _constant(-8.0), _constant(8.0)
    async with _payment(pg_database) as stub:
        engine = create_engine(pg_database)
        registry = ModelRegistry(risk_models)
        try:
            async with engine.begin() as conn:
                await registry.register(conn, lenient)
                await registry.register(conn, strict)
                await registry.promote(conn, lenient.version)
            await _until(stub, "PAYMENT_STATE_AUTHORIZED", "a")
            async with engine.begin() as conn:
                await registry.promote(conn, strict.version)
            await _until(stub, "RISK_DECLINED", "b")
            async with engine.begin() as conn:
                assert await registry.rollback(conn) == (strict.version, lenient.version)
            await _until(stub, "PAYMENT_STATE_AUTHORIZED", "c")
            async with engine.connect() as conn:
                roles = {m.version: m.role for m in await registry.models(conn)}
            assert roles == {lenient.version: "champion", strict.version: "retired"}
        finally:
            await engine.dispose()


def test_the_registry_commands_register_promote_list_and_roll_back(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/payment.db"
    first, second = _constant(-1.0), _constant(1.0)
    paths = [first.save(tmp_path / "first.json"), second.save(tmp_path / "second.json")]
    runner = CliRunner()

    def risk(*args: str) -> str:
        result = runner.invoke(app, ["risk", *args, "--database-url", url])
        assert result.exit_code == 0, result.output
        return result.output

    risk("register", str(paths[0]), "--champion")
    risk("register", str(paths[1]))
    risk("promote", second.version, "--no-checks")
    assert f'"rolled_back": "{second.version}"' in risk("rollback")
    listed = risk("models")
    assert listed.index(first.version) < listed.index(second.version)
    assert '"role": "champion"' in listed
    assert '"role": "retired"' in listed
    refused = runner.invoke(app, ["risk", "rollback", "--database-url", url])
    assert refused.exit_code == 1
    assert "no champion before" in refused.output


def test_retire_takes_a_challenger_out_and_registering_keeps_the_newest_challengers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDERMESH_RISK_MAX_CHALLENGERS", "2")
    url = f"sqlite+aiosqlite:///{tmp_path}/payment.db"
    champion, *challengers = [_constant(logit) for logit in (-3.0, -2.0, -1.0, 1.0)]
    runner = CliRunner()

    def risk(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, ["risk", *args, "--database-url", url])
        assert result.exit_code == code, result.output
        return result.output

    def roles() -> dict[str, str]:
        listed = json.loads(risk("models"))
        return {m["version"]: m["role"] for m in listed}

    risk("register", str(champion.save(tmp_path / "champion.json")), "--champion")
    outputs = [
        risk("register", str(c.save(tmp_path / f"{i}.json"))) for i, c in enumerate(challengers)
    ]
    oldest, middle, newest = (c.version for c in challengers)
    # The third challenger is one too many: the oldest leaves shadowing.
    assert json.loads(outputs[-1])["retired"] == [oldest]
    assert roles() == {champion.version: "champion", oldest: "retired", middle: "challenger",
                       newest: "challenger"}  # fmt: skip
    assert json.loads(risk("retire", middle)) == {"retired": middle, "was": "challenger"}
    assert roles()[middle] == "retired"
    assert "is the champion" in risk("retire", champion.version, code=1)
    assert roles()[champion.version] == "champion"
    assert "not found" in risk("retire", "logistic-000000000000", code=1)


def test_promote_refuses_a_challenger_biased_against_new_customers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDERMESH_RISK_MIN_SEGMENT_GENUINE", "10")  # a test-sized holdout
    simulate(
        SimulationSettings(
            orders=3000, fraud_share=0.05, days=30, chargeback_delay_days=(3.0, 10.0)
        ),
        tmp_path / "sim",
    )
    definition = RiskSettings().feature_definition()
    rules = (*BASELINE_RULES, Rule("new_customer", 0.9, (("customer_seen_before", "==", 0),)))
    biased = Artifact(
        RulesModel(rules, definition.names), definition.names, definition.schema_hash, 0.4, {}, {}
    )
    lenient = _constant(-8.0)
    url = f"sqlite+aiosqlite:///{tmp_path}/payment.db"
    runner = CliRunner()
    for artifact in (lenient, biased):
        path = artifact.save(tmp_path / f"{artifact.version}.json")
        champion = ["--champion"] if artifact is lenient else []
        added = runner.invoke(
            app, ["risk", "register", str(path), *champion, "--database-url", url]
        )
        assert added.exit_code == 0, added.output
    refused = runner.invoke(
        app,
        ["risk", "promote", biased.version, "--events", str(tmp_path / "sim"),
         "--maturity-days", "10", "--database-url", url],
    )  # fmt: skip
    assert refused.exit_code == 1
    assert "unevenly" in refused.output
    listed = runner.invoke(app, ["risk", "models", "--database-url", url]).output
    assert f'"version": "{lenient.version}"' in listed
    assert listed.count('"role": "champion"') == 1
    assert listed.index(lenient.version) < listed.index('"role": "champion"')


async def test_the_decision_log_replays_to_the_scored_features_except_within_a_batch(
    pg_database: str, tmp_path: Path, broker: Broker
) -> None:
    async with _payment(pg_database, broker=broker) as stub:
        for i in range(3):  # one order at a time: each sees the one before
            await stub.AuthorizePaymentBatch(
                pb.AuthorizePaymentBatchRequest(requests=[_authorize(f"s{i}", f"tok-s{i}")])
            )
            await until_features_hold(pg_database, "c-risk", [f"s{i}"])
        # Two orders of one customer in one batch: both scored from the state before it.
        await stub.AuthorizePaymentBatch(
            pb.AuthorizePaymentBatchRequest(
                requests=[
                    _authorize("t1", "tok-t1", "c-batch"),
                    _authorize("t2", "tok-t2", "c-batch"),
                ]
            )
        )
    # The command runs its own event loop: off this test's loop, in a thread.
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["risk", "skew", "--database-url", pg_database]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index('{\n  "decisions"') :])
    assert report["decisions"] == 5
    # Only the second order of the shared batch saw less than the replay does.
    assert report["decisions_with_skew"] == 1
    assert report["features"]["customer_count_10m"] == [1, 1.0]

    # The same log, reported per segment (segments of one order judged, for this size).
    chargebacks = tmp_path / "chargebacks.txt"
    chargebacks.write_text("s1\n")
    result = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["risk", "report", "--chargebacks", str(chargebacks), "--maturity-days", "0",
         "--out", str(tmp_path / "report"), "--database-url", pg_database],
        env={"ORDERMESH_RISK_MIN_SEGMENT_GENUINE": "1"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [variant] = json.loads(result.output[result.output.index("[") :])
    assert variant["decisions"] == 5
    customers = {
        s["segment"]: (s["orders"], s["genuine"])
        for s in variant["fairness"]["segments"]
        if s["segmentation"] == "customer"
    }
    assert customers == {"new": (3, 3), "returning": (2, 1)}  # s1 was charged back
    assert (tmp_path / "report" / "segments.png").read_bytes()[:4] == b"\x89PNG"


async def _events(broker: Broker, order_id: str) -> list[Message]:
    """The order's payment events on their topic, decoded, each once, oldest first."""
    found = await events_on(broker.bootstrap, TOPICS["payment"])
    return [event for key, event in found.values() if key == order_id]


async def _scored_features(database: str, order_id: str) -> dict[str, float]:
    """The feature vector the service scored for the order, from its decision log."""
    engine = create_engine(database)
    try:
        async with engine.connect() as conn:
            logged = await conn.scalar(
                select(risk_decisions.c.features).where(risk_decisions.c.order_id == order_id)
            )
    finally:
        await engine.dispose()
    assert logged is not None, f"no decision logged for {order_id}"
    names = RiskSettings().feature_definition().names
    return dict(zip(names, unpack_features(logged), strict=True))


async def test_the_payment_its_answer_and_its_events_carry_the_risk_assessment(
    pg_database: str, broker: Broker
) -> None:
    async with _payment(pg_database, broker=broker) as stub:  # no model: the rules decide
        # The order's lines come with the authorization: the order features see them.
        price = money_pb2.Money(amount_minor=300, currency="EUR")
        with_items = _authorize("a1", "tok-card-1")
        with_items.items.add(sku="TEA-SENCHA", quantity=2, unit_price=price)
        with_items.items.add(sku="GIFT-CARD-50", quantity=1, unit_price=price)
        approved = await stub.AuthorizePayment(with_items)
        # The items are not the authorization's identity: a retry without them is the same.
        retried = await stub.AuthorizePayment(_authorize("a1", "tok-card-1"))
        assert retried.payment == approved.payment
        assessment = approved.payment.risk_assessment
        assert approved.payment.HasField("risk_assessment")
        assert assessment.decision == risk_pb2.RISK_DECISION_APPROVE
        assert (assessment.model_version, assessment.variant) == ("rules", "rules")
        assert 0 <= assessment.score < 0.4
        await stub.AuthorizePaymentBatch(
            pb.AuthorizePaymentBatchRequest(
                requests=[_authorize(f"a{i}", f"tok-card-{i}") for i in (2, 3)]
            )
        )
        await until_features_hold(pg_database, "c-risk", ["a1", "a2", "a3"])
        # The fourth card within a day: declined by the rules, the provider unasked.
        with pytest.raises(grpc.aio.AioRpcError) as refusal:
            await stub.AuthorizePayment(_authorize("a4", "tok-card-4"))
        declined = (await stub.GetPayment(pb.GetPaymentRequest(order_id="a4"))).payment
        assert declined.risk_assessment.decision == risk_pb2.RISK_DECISION_DECLINE
        assert declined.risk_assessment.score >= 0.4
        # The refusal carries it too, beside its ErrorInfo.
        refused_with = decode(refusal.value)
        assert isinstance(refused_with, RiskDeclined)
        assert refused_with.risk_assessment == declined.risk_assessment
        # Kept with the payment: a later read answers the same.
        again = await stub.GetPayment(pb.GetPaymentRequest(order_id="a1"))
        assert again.payment.risk_assessment == assessment
        await until_outbox_empty(pg_database)  # the events, on their topic
    features = await _scored_features(pg_database, "a1")
    assert (features["item_count"], features["distinct_skus"]) == (3.0, 2.0)
    assert features["resale_share"] == 300 / 900  # the gift card
    [authorized] = await _events(broker, "a1")
    assert isinstance(authorized, events_pb2.PaymentAuthorized)
    assert authorized.risk_assessment == assessment
    # With what was scored, for the features consumer.
    assert (authorized.customer_id, authorized.risk_attempt.payment_token) == (
        "c-risk",
        "tok-card-1",
    )
    assert authorized.risk_attempt.amount == money_pb2.Money(amount_minor=900, currency="EUR")
    [refused] = await _events(broker, "a4")
    assert isinstance(refused, events_pb2.PaymentDeclined)
    assert refused.decline_reason == "RISK_DECLINED"
    assert refused.risk_assessment == declined.risk_assessment
    assert refused.risk_attempt.payment_token == "tok-card-4"
