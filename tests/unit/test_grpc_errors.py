"""Domain errors become the documented status codes with google.rpc details."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from ordermesh.common.v1.errors_pb2 import ErrorReason
from ordermesh_platform.errors import (
    Conflict,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ServiceError,
    Unavailable,
    Validator,
)
from ordermesh_platform.grpc_errors import to_grpc_status


def _decode(status: grpc.Status) -> status_pb2.Status:
    metadata = dict(status.trailing_metadata)
    return status_pb2.Status.FromString(metadata["grpc-status-details-bin"])


def test_invalid_argument_carries_every_field_violation() -> None:
    error = InvalidArgument([FieldViolation("items", "empty"), FieldViolation("currency", "bad")])
    status = to_grpc_status(error)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    detail = error_details_pb2.BadRequest()
    assert _decode(status).details[0].Unpack(detail)
    assert [(v.field, v.description) for v in detail.field_violations] == [
        ("items", "empty"),
        ("currency", "bad"),
    ]


def test_failed_precondition_and_conflict_carry_error_info() -> None:
    for error, code in [
        (
            FailedPrecondition(ErrorReason.OUT_OF_STOCK, "no tea", {"sku": "TEA"}),
            "FAILED_PRECONDITION",
        ),
        (Conflict(ErrorReason.IDEMPOTENCY_KEY_REUSED, "other request", {"key": "k"}), "ABORTED"),
    ]:
        status = to_grpc_status(error)
        assert status.code.name == code
        info = error_details_pb2.ErrorInfo()
        assert _decode(status).details[0].Unpack(info)
        assert info.reason == error.reason_name
        assert info.domain == "ordermesh"
        assert dict(info.metadata) == error.metadata


def test_not_found_names_the_resource() -> None:
    status = to_grpc_status(NotFound("order", "o-1"))
    assert status.code == grpc.StatusCode.NOT_FOUND
    info = error_details_pb2.ResourceInfo()
    assert _decode(status).details[0].Unpack(info)
    assert (info.resource_type, info.resource_name) == ("order", "o-1")


def test_unavailable_and_unknown_errors() -> None:
    assert to_grpc_status(Unavailable("payment down")).code == grpc.StatusCode.UNAVAILABLE
    bare = to_grpc_status(ServiceError("secret detail"))
    assert bare.code == grpc.StatusCode.INTERNAL
    assert "secret" not in bare.details


def test_validator_collects_before_raising() -> None:
    v = Validator()
    v.check(True, "a", "fine")
    v.check(False, "b", "wrong")
    v.check(False, "c", "wrong too")
    with pytest.raises(InvalidArgument) as raised:
        v.raise_if_invalid()
    assert [x.field for x in raised.value.violations] == ["b", "c"]
