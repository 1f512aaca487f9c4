"""Load shedding through the real interceptor chain and a real gRPC server: past the
in-flight bound a call is refused at once, health still answers, and the services'
channels retry a shed call after the server's pushback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ordermesh_platform.clients import open_channel
from ordermesh_platform.interceptors import InFlightLimit, RpcInterceptor
from ordermesh_platform.settings import ServiceSettings
from tests.support.rich_status import detail

pytestmark = pytest.mark.integration

METHOD = "/test.Slow/Wait"
Call = grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]


@dataclass
class Slow:
    """A server whose one method waits until the test lets it go."""

    limit: InFlightLimit
    port: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    started: int = 0

    async def wait(self, request: bytes, context: object) -> bytes:
        self.started += 1
        await self.release.wait()
        return request


@pytest.fixture
async def slow() -> AsyncIterator[Slow]:
    state = Slow(InFlightLimit("test", 1, 0.2))
    server = grpc.aio.server(interceptors=[RpcInterceptor("test", state.limit)])
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.Slow", {"Wait": grpc.unary_unary_rpc_method_handler(state.wait)}
            )
        ]
    )
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    state.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield state
    finally:
        state.release.set()
        await server.stop(None)


async def _until(condition: object) -> None:
    for _ in range(500):  # bounded: at most 500 turns of 10 ms
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never met")


async def test_past_the_bound_calls_are_shed_and_health_still_answers(slow: Slow) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{slow.port}") as channel:
        call: Call = channel.unary_unary(METHOD)
        holder = asyncio.ensure_future(call(b"first", timeout=30))
        await _until(lambda: slow.started == 1)

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(b"second", timeout=30)
        error = raised.value
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = detail(error, error_details_pb2.ErrorInfo)
        assert (info.reason, info.metadata["limit"]) == ("OVERLOADED", "1")
        assert detail(error, error_details_pb2.RetryInfo).retry_delay.ToMilliseconds() == 200
        assert slow.started == 1  # the handler never ran

        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(3):  # never shed
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)  # type: ignore[attr-defined]

        slow.release.set()
        assert await holder == b"first"
        assert await call(b"third", timeout=30) == b"third"
        assert slow.limit.in_flight == 0


async def test_service_channels_retry_a_shed_call_after_the_pushback(slow: Slow) -> None:
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{slow.port}") as plain,
        open_channel(f"127.0.0.1:{slow.port}", ServiceSettings()) as retrying,
    ):
        first: Call = plain.unary_unary(METHOD)
        again: Call = retrying.unary_unary(METHOD)
        holder = asyncio.ensure_future(first(b"first", timeout=30))
        await _until(lambda: slow.started == 1)
        call = asyncio.ensure_future(again(b"retried", timeout=30))
        await _until(lambda: slow.limit.shed >= 1)  # its first attempt was shed...
        slow.release.set()  # ... and the slot frees before the pushback ends
        assert await call == b"retried"
        assert await holder == b"first"
