"""Domain errors. Raised by domain code (which knows nothing of gRPC) and mapped to a
gRPC status with google.rpc details in one place: ``ordermesh_platform.grpc_errors``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from google.protobuf.message import Message

from ordermesh.common.v1.errors_pb2 import ErrorReason

ERROR_DOMAIN = "ordermesh"


class ServiceError(Exception):
    """Base of every error a caller may see with its own status code."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class InvalidArgument(ServiceError):
    """The request is malformed: INVALID_ARGUMENT + google.rpc.BadRequest."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        fields = ", ".join(v.field for v in violations)
        super().__init__(f"invalid request: {fields}")
        self.violations = violations


class ReasonedError(ServiceError):
    """``reason``: the contract's ErrorReason; its name is ErrorInfo.reason on the wire.
    ``details``: messages of the contract that travel beside the ErrorInfo, as more
    google.rpc.Status details (a risk decline's RiskAssessment, say)."""

    def __init__(
        self,
        reason: ErrorReason.ValueType,
        message: str,
        metadata: Mapping[str, str] | None = None,
        details: Sequence[Message] = (),
    ):
        super().__init__(message)
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.details = tuple(details)

    @property
    def reason_name(self) -> str:
        return ErrorReason.Name(self.reason)


class FailedPrecondition(ReasonedError):
    """The request is valid but the system's state refuses it: ErrorInfo carries the reason."""


class Conflict(ReasonedError):
    """A concurrency or idempotency conflict (ABORTED): the caller must not blindly retry."""


class NotFound(ServiceError):
    """The named resource does not exist: NOT_FOUND + google.rpc.ResourceInfo."""

    def __init__(self, resource_type: str, resource_name: str) -> None:
        super().__init__(f"{resource_type} {resource_name!r} not found")
        self.resource_type = resource_type
        self.resource_name = resource_name


class Unavailable(ReasonedError):
    """A dependency is down; the caller may retry later (UNAVAILABLE). A reason, when
    given, travels as google.rpc.ErrorInfo."""

    def __init__(
        self,
        message: str,
        reason: ErrorReason.ValueType = ErrorReason.ERROR_REASON_UNSPECIFIED,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(reason, message, metadata)


class DeadlineExceeded(ServiceError):
    """The work did not finish within the caller's deadline."""


class Unauthenticated(ReasonedError):
    """The caller did not prove who it is (no token, a bad one, no trusted certificate):
    UNAUTHENTICATED + ErrorInfo."""


class PermissionDenied(ReasonedError):
    """The caller is known but may not do this: PERMISSION_DENIED + ErrorInfo."""


class Overloaded(ReasonedError):
    """The service sheds the call before doing any work (RESOURCE_EXHAUSTED + ErrorInfo
    ``OVERLOADED`` + RetryInfo): a retry after ``retry_after_s`` is safe."""

    def __init__(self, message: str, retry_after_s: float, metadata: Mapping[str, str]) -> None:
        super().__init__(ErrorReason.OVERLOADED, message, metadata)
        self.retry_after_s = retry_after_s


class Validator:
    """Collects every field violation of a request before raising once."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def check(self, ok: bool, field: str, description: str) -> bool:
        if not ok:
            self.violations.append(FieldViolation(field, description))
        return ok

    def storable(self, text: str, field: str) -> bool:
        """Text a database can hold: PostgreSQL refuses NUL (U+0000) in any text, even
        in a query's parameters, so a NUL would otherwise end the call as INTERNAL."""
        return self.check("\x00" not in text, field, "must not contain NUL characters")

    def raise_if_invalid(self) -> None:
        if self.violations:
            raise InvalidArgument(self.violations)
