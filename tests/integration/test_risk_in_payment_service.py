"""Risk scoring inside payment-service on PostgreSQL: the batch scored before the
provider is asked, RISK_DECLINED for what it refuses, the rules when the model is
unusable, and the features fed by the outcomes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from ordermesh.common.v1 import money_pb2
from ordermesh.payment.v1 import payment_pb2 as pb
from ordermesh.payment.v1 import payment_pb2_grpc
from ordermesh_cli.registry import load_service
from ordermesh_payment.risk.metrics import Costs
from ordermesh_payment.risk.settings import RiskSettings
from ordermesh_payment.risk.simulate import SimulationSettings, Simulator
from ordermesh_payment.risk.training import TrainingSettings, train
from ordermesh_platform.grpc_errors import ItemFailed
from ordermesh_platform.metrics import RISK_DECISIONS, RISK_FALLBACKS
from tests.support.services import running_service

pytestmark = pytest.mark.integration

if TYPE_CHECKING:
    Stub = payment_pb2_grpc.PaymentServiceAsyncStub


@asynccontextmanager
async def _payment(database: str, model_path: Path) -> AsyncIterator[Stub]:
    async with (
        running_service(
            load_service("payment"),
            database,
            risk_enabled=True,
            risk_model_path=str(model_path),
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
    pg_database: str, tmp_path: Path
) -> None:
    corrupt = tmp_path / "model.json"
    corrupt.write_text('{"format": "ordermesh-risk-model/1", "kind": "lightg')
    fallbacks = _count(RISK_FALLBACKS, "no_model")
    async with _payment(pg_database, corrupt) as stub:
        # One batch of three cards: scored together, from the history before the batch.
        first = await stub.AuthorizePaymentBatch(
            pb.AuthorizePaymentBatchRequest(
                requests=[_authorize(f"o{i}", f"tok-card-{i}") for i in (1, 2, 3)]
            )
        )
        assert [r.payment.state for r in first.results] == [pb.PAYMENT_STATE_AUTHORIZED] * 3
        # The fourth card within a day: the features saw the three, the rules decline.
        fourth = await stub.AuthorizePaymentBatch(
            pb.AuthorizePaymentBatchRequest(
                requests=[_authorize("o4", "tok-card-4"), _authorize("o5", "tok_ok", "c-other")]
            )
        )
        refused, other = fourth.results
        failure = ItemFailed(refused.status)
        info = failure.error_info()
        assert failure.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert info is not None
        assert (info.reason, info.metadata["decline_reason"]) == ("RISK_DECLINED", "RISK_DECLINED")
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
    scored = _count(RISK_DECISIONS, "model", "approve") + _count(RISK_DECISIONS, "model", "decline")
    async with _payment(pg_database, path) as stub:
        answer = await stub.AuthorizePaymentBatch(
            pb.AuthorizePaymentBatchRequest(
                requests=[_authorize(f"m{i}", "tok_ok", f"c{i}") for i in range(5)]
            )
        )
    assert len(answer.results) == 5
    after = _count(RISK_DECISIONS, "model", "approve") + _count(RISK_DECISIONS, "model", "decline")
    assert after == scored + 5
