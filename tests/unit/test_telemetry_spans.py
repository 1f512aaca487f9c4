"""Spans that nothing would record are not made; the tracer is made once per provider;
a served call continues its own caller's trace."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

from ordermesh_platform import telemetry


@pytest.fixture
def no_endpoint(otlp_endpoint: Callable[[str], None]) -> None:
    otlp_endpoint("")


@pytest.fixture
def sdk_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's tracer behind ``telemetry.tracer()``, as a service has after start-up
    (the tests' process keeps OpenTelemetry's global no-op provider)."""
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    monkeypatch.setattr(telemetry, "tracer", lambda: provider.get_tracer("test"))


def _request_span() -> trace.Span:
    """A non-recording span with real ids, as a request's span is with no endpoint."""
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    return provider.get_tracer("test").start_span("request")


@pytest.mark.usefixtures("no_endpoint")
def test_with_no_endpoint_a_step_carries_on_in_the_requests_span() -> None:
    request = _request_span()
    with trace.use_span(request), telemetry.child_span("saga step", {"k": "v"}) as step:
        assert step is request
        assert trace.get_current_span() is request
    assert request.get_span_context().is_valid


@pytest.mark.usefixtures("no_endpoint", "sdk_tracer")
def test_with_no_span_at_all_a_step_gets_its_own_ids() -> None:
    with telemetry.child_span("saga step", {}) as step:
        assert step is trace.get_current_span()
        assert step.get_span_context().is_valid


@pytest.mark.usefixtures("sdk_tracer")
def test_with_an_endpoint_every_step_gets_its_own_span(
    otlp_endpoint: Callable[[str], None],
) -> None:
    otlp_endpoint("http://127.0.0.1:4317")
    request = _request_span()
    with trace.use_span(request), telemetry.child_span("saga step", {}) as step:
        assert step is not request
        ids, parent = step.get_span_context(), request.get_span_context()
        assert ids.trace_id == parent.trace_id
        assert ids.span_id != parent.span_id


def test_the_tracer_is_made_once_per_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    first = telemetry.tracer()
    assert telemetry.tracer() is first
    other = TracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: other)
    swapped = telemetry.tracer()
    assert swapped is not first
    assert telemetry.tracer() is swapped


@pytest.mark.usefixtures("no_endpoint", "sdk_tracer")
async def test_each_call_continues_its_own_callers_trace() -> None:
    # The server's handlers are wrapped once per method: the caller's trace context must
    # still be read from each call's own metadata, never kept from the first call's.
    async def trace_id(request: bytes, context: object) -> bytes:
        return telemetry.current_ids()[0].encode()

    server = grpc.aio.server(interceptors=telemetry.server_interceptors())
    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        "Id": grpc.unary_unary_rpc_method_handler(trace_id)
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/t.T/Id")
            for trace in ("0af7651916cd43dd8448eb211c80319c", "4bf92f3577b34da6a3ce929d0e0e4736"):
                parent = (("traceparent", f"00-{trace}-b7ad6b7169203331-01"),)
                assert await call(b"", metadata=parent, timeout=10) == trace.encode()
    finally:
        await server.stop(None)
