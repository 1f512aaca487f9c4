"""The one place where domain errors become gRPC statuses with google.rpc details."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ordermesh.common.v1.errors_pb2 import ErrorReason
from ordermesh_platform.errors import (
    ERROR_DOMAIN,
    Conflict,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Overloaded,
    PermissionDenied,
    ReasonedError,
    ServiceError,
    Unauthenticated,
    Unavailable,
)

# gRPC's own server pushback: a client's retry policy waits this long before its next
# attempt (and a negative value stops it retrying).
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"


@dataclass(frozen=True)
class _StatusWithTrailers(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _status_pb(code: int, message: str, *details: object) -> status_pb2.Status:
    packed = []
    for detail in details:
        item = any_pb2.Any()
        item.Pack(detail)  # type: ignore[arg-type]
        packed.append(item)
    return status_pb2.Status(code=code, message=message, details=packed)


def _status(
    code: int, message: str, *details: object, trailing: tuple[tuple[str, str], ...] = ()
) -> grpc.Status:
    status: grpc.Status = rpc_status.to_status(_status_pb(code, message, *details))
    if trailing:
        return _StatusWithTrailers(
            status.code, status.details, (*status.trailing_metadata, *trailing)
        )
    return status


def _info(error: ReasonedError) -> error_details_pb2.ErrorInfo:
    # The reason on the wire is the contract's name of it (ordermesh.common.v1.ErrorReason).
    return error_details_pb2.ErrorInfo(
        reason=error.reason_name, domain=ERROR_DOMAIN, metadata=error.metadata
    )


OK_STATUS = status_pb2.Status(code=code_pb2.OK)


def to_status_pb(error: BaseException) -> status_pb2.Status:
    """One item's outcome in a batch answer: the google.rpc.Status the single-item call
    would have answered (a bug is INTERNAL, with nothing of its text)."""
    if not isinstance(error, ServiceError):
        return _status_pb(code_pb2.INTERNAL, "internal error")
    status = to_grpc_status(error)
    return rpc_status_pb_of(status)


def rpc_status_pb_of(status: grpc.Status) -> status_pb2.Status:
    for key, value in status.trailing_metadata or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return status_pb2.Status(code=status.code.value[0], message=status.details)


def to_grpc_status(error: ServiceError) -> grpc.Status:
    """Map a domain error to its status code and rich details."""
    if isinstance(error, InvalidArgument):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations
            ]
        )
        return _status(code_pb2.INVALID_ARGUMENT, error.message, bad_request)
    if isinstance(error, FailedPrecondition | Conflict):
        info = _info(error)
        code = code_pb2.FAILED_PRECONDITION
        if isinstance(error, Conflict):
            code = code_pb2.ABORTED
        return _status(code, error.message, info, *error.details)
    if isinstance(error, NotFound):
        info = error_details_pb2.ResourceInfo(
            resource_type=error.resource_type, resource_name=error.resource_name
        )
        return _status(code_pb2.NOT_FOUND, error.message, info)
    if isinstance(error, Unavailable):
        if error.reason == ErrorReason.ERROR_REASON_UNSPECIFIED:
            return _status(code_pb2.UNAVAILABLE, error.message)
        return _status(code_pb2.UNAVAILABLE, error.message, _info(error))
    if isinstance(error, DeadlineExceeded):
        return _status(code_pb2.DEADLINE_EXCEEDED, error.message)
    if isinstance(error, Unauthenticated):
        return _status(code_pb2.UNAUTHENTICATED, error.message, _info(error))
    if isinstance(error, PermissionDenied):
        return _status(code_pb2.PERMISSION_DENIED, error.message, _info(error))
    if isinstance(error, Overloaded):
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(round(error.retry_after_s * 1000))
        return _status(
            code_pb2.RESOURCE_EXHAUSTED,
            error.message,
            _info(error),
            error_details_pb2.RetryInfo(retry_delay=delay),
            trailing=((RETRY_PUSHBACK_KEY, str(round(error.retry_after_s * 1000))),),
        )
    return _status(code_pb2.INTERNAL, "internal error")


def internal_error() -> grpc.Status:
    """What a caller sees of a bug: no stack, no SQL, no secrets."""
    return _status(code_pb2.INTERNAL, "internal error")
