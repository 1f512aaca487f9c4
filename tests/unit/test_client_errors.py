"""ordermesh-client decodes each refusal into its typed error, from the status the
servers build (ordermesh_platform.grpc_errors), directly and over a real gRPC call."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from ordermesh.common.v1 import risk_pb2
from ordermesh.common.v1.errors_pb2 import ErrorReason
from ordermesh.order.v1 import order_pb2, order_pb2_grpc
from ordermesh_client.errors import (
    IdempotencyConflict,
    InvalidRequest,
    OrdermeshError,
    OutOfStock,
    Overloaded,
    PaymentDeclined,
    RiskDeclined,
    Unavailable,
    decode,
    from_status,
)
from ordermesh_inventory.domain import out_of_stock
from ordermesh_payment.domain import RISK_DECLINED, declined
from ordermesh_platform import errors
from ordermesh_platform.grpc_errors import rpc_status_pb_of, to_grpc_status
from tests.support.scripted_orders import scripted_order_service


def _decoded(error: errors.ServiceError) -> OrdermeshError:
    """The client's error for the status a server answers ``error`` with."""
    return from_status(rpc_status_pb_of(to_grpc_status(error)))


def test_out_of_stock_names_its_sku() -> None:
    error = _decoded(out_of_stock("TEA-1", "2 wanted, 1 available"))
    assert isinstance(error, OutOfStock)
    assert (error.code, error.reason, error.sku) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        ErrorReason.OUT_OF_STOCK,
        "TEA-1",
    )
    assert not error.retryable


def test_payment_declined_carries_the_providers_reason() -> None:
    error = _decoded(declined("o-1", "insufficient_funds"))
    assert isinstance(error, PaymentDeclined)
    assert not isinstance(error, RiskDeclined)
    assert error.decline_reason == "insufficient_funds"
    assert error.metadata["order_id"] == "o-1"


def test_risk_decline_is_a_payment_decline_of_its_own_kind() -> None:
    error = _decoded(
        errors.FailedPrecondition(
            ErrorReason.RISK_DECLINED, "declined", {"decline_reason": RISK_DECLINED}
        )
    )
    assert isinstance(error, RiskDeclined)
    assert isinstance(error, PaymentDeclined)
    assert error.reason_name == "RISK_DECLINED"
    assert error.risk_assessment is None  # none sent


def test_a_risk_decline_carries_its_assessment_beside_the_error_info() -> None:
    assessment = risk_pb2.RiskAssessment(
        score=0.93, decision=risk_pb2.RISK_DECISION_DECLINE, model_version="rules", variant="rules"
    )
    error = _decoded(
        errors.FailedPrecondition(
            ErrorReason.RISK_DECLINED, "declined", {"decline_reason": RISK_DECLINED},
            details=(assessment,),
        )
    )  # fmt: skip
    assert isinstance(error, RiskDeclined)
    assert (error.reason_name, error.decline_reason) == ("RISK_DECLINED", "RISK_DECLINED")
    assert error.risk_assessment == assessment


def test_a_reused_idempotency_key_is_a_conflict_never_retried() -> None:
    error = _decoded(errors.Conflict(ErrorReason.IDEMPOTENCY_KEY_REUSED, "other order", {}))
    assert isinstance(error, IdempotencyConflict)
    assert error.code == grpc.StatusCode.ABORTED
    assert not error.retryable


def test_overloaded_says_when_to_retry() -> None:
    error = _decoded(errors.Overloaded("busy", 0.25, {"service": "order"}))
    assert isinstance(error, Overloaded)
    assert (error.retry_after, error.retryable) == (0.25, True)
    assert error.metadata == {"service": "order"}


def test_unavailable_is_retried_only_when_it_names_no_reason() -> None:
    away = _decoded(errors.Unavailable("database away"))
    rejected = _decoded(errors.Unavailable("too slow", ErrorReason.SAGA_TIMEOUT, {"order_id": "o"}))
    assert isinstance(away, Unavailable)
    assert isinstance(rejected, Unavailable)
    assert (away.retryable, rejected.retryable) == (True, False)
    assert rejected.metadata["order_id"] == "o"


def test_an_invalid_request_lists_its_fields() -> None:
    error = _decoded(errors.InvalidArgument([errors.FieldViolation("items", "at least one item")]))
    assert isinstance(error, InvalidRequest)
    assert error.violations == (("items", "at least one item"),)


def test_a_reason_newer_than_the_client_keeps_its_name() -> None:
    status = rpc_status_pb_of(
        to_grpc_status(errors.FailedPrecondition(ErrorReason.NO_CHAMPION, ""))
    )
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert from_status(status).reason == ErrorReason.NO_CHAMPION
    info.reason = "SOMETHING_NEW"
    status.details[0].Pack(info)
    newer = from_status(status)
    assert type(newer) is OrdermeshError
    assert (newer.reason, newer.reason_name) == (
        ErrorReason.ERROR_REASON_UNSPECIFIED,
        "SOMETHING_NEW",
    )


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (out_of_stock("TEA-1", "none left"), OutOfStock),
        (declined("o-1", "card_declined"), PaymentDeclined),
        (errors.Conflict(ErrorReason.IDEMPOTENCY_KEY_REUSED, "other", {}), IdempotencyConflict),
        (errors.Overloaded("busy", 0.5, {}), Overloaded),
    ],
)
async def test_a_failed_call_decodes_to_the_same_typed_error(
    error: errors.ServiceError, kind: type[OrdermeshError]
) -> None:
    async with (
        scripted_order_service() as (orders, address),
        grpc.aio.insecure_channel(address) as channel,
    ):
        orders.script = [error]
        stub = order_pb2_grpc.OrderServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.PlaceOrder(order_pb2.PlaceOrderRequest(), timeout=5)
    decoded = decode(raised.value)
    assert type(decoded) is kind
    assert (decoded.reason_name, decoded.metadata) == (
        _decoded(error).reason_name,
        _decoded(error).metadata,
    )
