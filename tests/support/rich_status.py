"""Read the google.rpc details a server attached to an error (through the client's
decoding, ordermesh_client.errors)."""

from __future__ import annotations

from typing import TypeVar

import grpc
from google.protobuf.message import Message

from ordermesh_client.errors import first_detail, status_of

M = TypeVar("M", bound=Message)


def detail(error: grpc.aio.AioRpcError, kind: type[M]) -> M:
    """The first detail of ``kind`` in the error's google.rpc.Status."""
    status = status_of(error)
    assert status is not None, "the error carries no google.rpc.Status"
    found = first_detail(status, kind)
    assert found is not None, f"no {kind.__name__} among the details"
    return found
