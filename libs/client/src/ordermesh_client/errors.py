"""Typed errors decoded from a failed call's google.rpc.Status: the code, the
ErrorInfo reason (ordermesh.common.v1.ErrorReason), its metadata, RetryInfo's delay and
BadRequest's field violations, read in this one place."""

from __future__ import annotations

from typing import Any, TypeVar, cast

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from ordermesh.common.v1 import risk_pb2
from ordermesh.common.v1.errors_pb2 import ErrorReason

M = TypeVar("M", bound=Message)

_CODES = {member.value[0]: member for member in grpc.StatusCode}


def status_of(error: grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status a server attached to a failed call (None: it sent none)."""
    return rpc_status.from_call(cast(Any, error))


def first_detail(status: status_pb2.Status, kind: type[M]) -> M | None:
    """The first detail of ``kind`` among the status's details."""
    for item in status.details:
        found = kind()
        if item.Unpack(found):
            return found
    return None


def reason_of(name: str) -> ErrorReason.ValueType:
    """The contract's value named ``name`` (an ErrorInfo reason); unspecified when the
    name is empty or newer than this client."""
    try:
        return ErrorReason.Value(name)
    except ValueError:
        return ErrorReason.ERROR_REASON_UNSPECIFIED


class OrdermeshError(Exception):
    """A refused call. ``reason`` is the ErrorInfo reason as the contract's enum
    (ERROR_REASON_UNSPECIFIED when there was none, or one this client does not know;
    ``reason_name`` keeps the string that came); ``metadata`` is the ErrorInfo's."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason_name: str = "",
        metadata: dict[str, str] | None = None,
        retry_after: float | None = None,
        violations: tuple[tuple[str, str], ...] = (),
        status: status_pb2.Status | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}" + (f" ({reason_name})" if reason_name else ""))
        self.code = code
        self.message = message
        self.reason_name = reason_name
        self.reason = reason_of(reason_name)
        self.metadata = dict(metadata or {})
        self.retry_after = retry_after
        self.violations = violations
        # The google.rpc.Status as it came (None: the server sent none): its other details.
        self.status = status

    @property
    def retryable(self) -> bool:
        """The same call, with the same idempotency key, may succeed later."""
        return False


class OutOfStock(OrdermeshError):
    """An order line asks for more than is in stock."""

    @property
    def sku(self) -> str:
        return self.metadata.get("sku", "")


class PaymentDeclined(OrdermeshError):
    """The payment was declined; ``decline_reason`` is the provider's word for why."""

    @property
    def decline_reason(self) -> str:
        return self.metadata.get("decline_reason", "")


class RiskDeclined(PaymentDeclined):
    """The payment was declined by payment risk scoring; ``risk_assessment`` is the
    score, decision, model version and variant that declined it (None: none was sent)."""

    @property
    def risk_assessment(self) -> risk_pb2.RiskAssessment | None:
        if self.status is None:
            return None
        return first_detail(self.status, risk_pb2.RiskAssessment)


class IdempotencyConflict(OrdermeshError):
    """The idempotency key was used before with another request: never retry it."""


class InvalidRequest(OrdermeshError):
    """INVALID_ARGUMENT; ``violations`` holds (field, description) pairs."""


class Overloaded(OrdermeshError):
    """The service shed the call before doing any work: try again after
    ``retry_after`` seconds (None: it named no delay)."""

    @property
    def retryable(self) -> bool:
        return True


class Unavailable(OrdermeshError):
    """UNAVAILABLE. Without a reason the call did not get through (retry it, same key);
    with one (PAYMENT_UNAVAILABLE, SAGA_TIMEOUT) the order was rejected for good, and
    placing it again needs a new idempotency key."""

    @property
    def retryable(self) -> bool:
        return self.reason == ErrorReason.ERROR_REASON_UNSPECIFIED and not self.reason_name


_BY_REASON: dict[ErrorReason.ValueType, type[OrdermeshError]] = {
    ErrorReason.OUT_OF_STOCK: OutOfStock,
    ErrorReason.PAYMENT_DECLINED: PaymentDeclined,
    ErrorReason.RISK_DECLINED: RiskDeclined,
    ErrorReason.IDEMPOTENCY_KEY_REUSED: IdempotencyConflict,
    ErrorReason.OVERLOADED: Overloaded,
}
_BY_CODE: dict[grpc.StatusCode, type[OrdermeshError]] = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
}


def from_status(status: status_pb2.Status) -> OrdermeshError:
    """The typed error of a google.rpc.Status (a batch item's, or a call's)."""
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    return _typed(code, str(status.message), status)


def decode(error: grpc.RpcError | OrdermeshError) -> OrdermeshError:
    """The typed error of a failed call (``grpc.aio.AioRpcError`` or a sync one); an
    error typed already is returned as it is."""
    if isinstance(error, OrdermeshError):
        return error
    call = cast(grpc.Call, error)
    status = status_of(error)
    return _typed(call.code(), call.details() or "", status)


def _typed(code: grpc.StatusCode, message: str, status: status_pb2.Status | None) -> OrdermeshError:
    info = retry = bad = None
    if status is not None:
        info = first_detail(status, error_details_pb2.ErrorInfo)
        retry = first_detail(status, error_details_pb2.RetryInfo)
        bad = first_detail(status, error_details_pb2.BadRequest)
    reason_name = str(info.reason) if info is not None else ""
    kind = _BY_REASON.get(reason_of(reason_name)) or _BY_CODE.get(code, OrdermeshError)
    return kind(
        code,
        message,
        reason_name,
        dict(info.metadata) if info is not None else {},
        retry.retry_delay.ToMilliseconds() / 1000 if retry is not None else None,
        tuple((v.field, v.description) for v in bad.field_violations) if bad else (),
        status,
    )
