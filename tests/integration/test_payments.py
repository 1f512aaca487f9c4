"""Payment-service over real gRPC, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import error_details_pb2

from ordermesh.common.v1 import money_pb2
from ordermesh.payment.v1 import payment_pb2 as pb
from ordermesh.payment.v1 import payment_pb2_grpc
from ordermesh_cli.registry import load_service
from tests.support.rich_status import detail
from tests.support.services import running_service

pytestmark = pytest.mark.integration

if TYPE_CHECKING:
    Stub = payment_pb2_grpc.PaymentServiceAsyncStub


@pytest.fixture
async def payments(any_database: str) -> AsyncIterator[Stub]:
    async with (
        running_service(load_service("payment"), any_database, psp_timeout_s=0.2) as service,
        grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel,
    ):
        yield payment_pb2_grpc.PaymentServiceStub(channel)


def _authorize(
    order_id: str, token: str = "tok_ok", amount: int = 1250
) -> pb.AuthorizePaymentRequest:
    return pb.AuthorizePaymentRequest(
        order_id=order_id,
        customer_id="c1",
        amount=money_pb2.Money(amount_minor=amount, currency="EUR"),
        payment_token=token,
    )


async def _refusal(call: object) -> error_details_pb2.ErrorInfo:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    assert raised.value.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED)
    return detail(raised.value, error_details_pb2.ErrorInfo)


async def test_concurrent_authorizations_of_one_order_make_one_payment(payments: Stub) -> None:
    replies = await asyncio.gather(
        *(payments.AuthorizePayment(_authorize("o1")) for _ in range(10))
    )
    assert len({r.payment.payment_id for r in replies}) == 1
    assert {r.payment.state for r in replies} == {pb.PAYMENT_STATE_AUTHORIZED}
    assert (
        await _refusal(payments.AuthorizePayment(_authorize("o1", amount=9)))
    ).reason == "PAYMENT_MISMATCH"


async def test_capture_then_refund_and_illegal_moves_are_refused(payments: Stub) -> None:
    authorized = await payments.AuthorizePayment(_authorize("o1"))
    assert not authorized.payment.HasField("risk_assessment")  # risk scoring is off
    with pytest.raises(grpc.aio.AioRpcError):
        await payments.RefundPayment(pb.RefundPaymentRequest(order_id="o1"))  # not captured
    for _ in range(2):
        captured = await payments.CapturePayment(pb.CapturePaymentRequest(order_id="o1"))
    assert captured.payment.state == pb.PAYMENT_STATE_CAPTURED
    info = await _refusal(payments.VoidPayment(pb.VoidPaymentRequest(order_id="o1")))
    assert (info.reason, info.metadata["state"]) == ("ILLEGAL_PAYMENT_TRANSITION", "CAPTURED")
    refunded = await payments.RefundPayment(pb.RefundPaymentRequest(order_id="o1"))
    assert refunded.payment.state == pb.PAYMENT_STATE_REFUNDED


async def test_a_decline_is_recorded_and_repeated(payments: Stub) -> None:
    for _ in range(2):
        info = await _refusal(payments.AuthorizePayment(_authorize("o1", token="tok_decline")))
        assert (info.reason, info.metadata["decline_reason"]) == (
            "PAYMENT_DECLINED",
            "card_declined",
        )
    got = await payments.GetPayment(pb.GetPaymentRequest(order_id="o1"))
    assert got.payment.state == pb.PAYMENT_STATE_DECLINED


async def test_a_void_before_the_authorization_stops_it_landing(payments: Stub) -> None:
    await payments.VoidPayment(pb.VoidPaymentRequest(order_id="late"))
    assert (
        await _refusal(payments.AuthorizePayment(_authorize("late")))
    ).reason == "PAYMENT_VOIDED"


async def test_a_provider_that_never_answers_is_unavailable_and_voidable(payments: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await payments.AuthorizePayment(_authorize("o1", token="tok_timeout"), timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    voided = await payments.VoidPayment(pb.VoidPaymentRequest(order_id="o1"))
    assert voided.payment.state == pb.PAYMENT_STATE_VOIDED


async def test_unknown_payments_are_not_found_and_bad_amounts_invalid(payments: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await payments.GetPayment(pb.GetPaymentRequest(order_id="none"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await payments.AuthorizePayment(_authorize("o2", amount=0))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
