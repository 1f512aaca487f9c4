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


Wrap = Callable[["grpc.RpcMethodHandler[Any, Any]", str], "grpc.RpcMethodHandler[Any, Any]"]


class WrappedOnce:
    """Each method's handler wrapped once, not once per call. gRPC asks a server
    interceptor for the handler on every call; building the wrapper again each time (a
    new handler, new closures) cost about a tenth of a bare call's CPU per interceptor.
    The wrapper must then depend on the method only: what differs by call (metadata, the
    peer) is read from the call's context inside it. A method's handler is the object
    its servicer registered, so a cached wrapper is found again by identity."""

    def __init__(self, wrap: Wrap) -> None:
        self._wrap = wrap
        # Keyed by the methods the server serves: a name it does not know has no
        # handler and never gets here.
        self._wrapped: dict[
            str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]
        ] = {}

    def __call__(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        found = self._wrapped.get(method)
        if found is not None and found[0] is handler:
            return found[1]
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped
