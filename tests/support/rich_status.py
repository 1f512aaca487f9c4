"""Read the google.rpc details a server attached to an error."""

from __future__ import annotations

from typing import Any, TypeVar, cast

import grpc
from google.protobuf.message import Message
from grpc_status import rpc_status

M = TypeVar("M", bound=Message)


def detail(error: grpc.aio.AioRpcError, kind: type[M]) -> M:
    """The first detail of ``kind`` in the error's google.rpc.Status."""
    status = rpc_status.from_call(cast(Any, error))
    assert status is not None, "the error carries no google.rpc.Status"
    for item in status.details:
        found = kind()
        if item.Unpack(found):
            return found
    raise AssertionError(f"no {kind.__name__} among the details")
