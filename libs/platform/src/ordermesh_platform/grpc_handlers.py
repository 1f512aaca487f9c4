"""Rebuilding a gRPC method handler around a new behaviour: how a server interceptor
puts code around a call it does not own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    unary: Callable[[Any], Any],
    stream: Callable[[Any], Any],
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler with its unary-unary behaviour replaced by ``unary(behaviour)``
    or its unary-stream one by ``stream(behaviour)``; ``request_deserializer`` replaces
    the handler's own. A client-streaming handler (only reflection's, in this mesh) comes
    back as it is."""
    deserializer = request_deserializer or handler.request_deserializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            unary(handler.unary_unary),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            stream(handler.unary_stream),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler
