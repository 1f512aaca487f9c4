"""Rebuilding a gRPC method handler around a new behaviour, once per method
(ordermesh_platform.grpc_handlers)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from ordermesh_platform.grpc_handlers import WrappedOnce, wrap_handler


async def _echo(request: Any, context: Any) -> Any:
    return request


async def _count(request: Any, context: Any) -> AsyncIterator[Any]:
    for i in range(request):
        yield i


def _tagging(tag: str) -> Callable[[Any], Any]:
    def wrap(behavior: Any) -> Any:
        async def unary(request: Any, context: Any) -> Any:
            return (tag, await behavior(request, context))

        return unary

    return wrap


def _doubling(behavior: Any) -> Any:
    async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
        async for response in behavior(request, context):
            yield response * 2

    return stream


def _unused(behavior: Any) -> Any:
    raise AssertionError("the other kind of behaviour was wrapped")


async def test_a_unary_handler_keeps_its_serializers_around_the_new_behaviour() -> None:
    handler: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(
        _echo, request_deserializer=bytes.decode, response_serializer=str.encode
    )
    wrapped = wrap_handler(handler, _tagging("seen"), _unused)
    unary: Any = wrapped.unary_unary  # typed as a sync behaviour; the mesh's are async
    assert await unary("req", None) == ("seen", "req")
    assert wrapped.request_deserializer is bytes.decode
    assert wrapped.response_serializer is str.encode


async def test_a_server_streaming_handler_wraps_its_stream() -> None:
    handler: grpc.RpcMethodHandler[Any, Any] = grpc.unary_stream_rpc_method_handler(_count)
    wrapped = wrap_handler(handler, _unused, _doubling)
    stream: Any = wrapped.unary_stream
    assert [x async for x in stream(3, None)] == [0, 2, 4]


def test_a_new_request_deserializer_replaces_the_handlers() -> None:
    handler: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(
        _echo, request_deserializer=bytes.decode
    )
    wrapped = wrap_handler(handler, _tagging("x"), _unused, request_deserializer=len)
    assert wrapped.request_deserializer is len


def test_a_client_streaming_handler_comes_back_as_it_is() -> None:
    handler: grpc.RpcMethodHandler[Any, Any] = grpc.stream_stream_rpc_method_handler(_count)
    assert wrap_handler(handler, _unused, _unused) is handler


async def test_a_methods_handler_is_wrapped_once_and_again_only_when_it_is_another() -> None:
    built: list[str] = []

    def wrap(handler: grpc.RpcMethodHandler[Any, Any], method: str) -> Any:
        built.append(method)
        return wrap_handler(handler, _tagging(method), _unused)

    once = WrappedOnce(wrap)
    echo: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(_echo)
    first = once(echo, "/s.S/A")
    assert once(echo, "/s.S/A") is first  # every later call of the method: no new wrapper
    unary: Any = once(echo, "/s.S/B").unary_unary
    assert await unary("req", None) == ("/s.S/B", "req")  # each method its own wrapper
    replaced: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(_echo)
    assert once(replaced, "/s.S/A") is not first  # a handler registered anew: wrapped anew
    assert built == ["/s.S/A", "/s.S/B", "/s.S/A"]
