"""OpenTelemetry, set up once for every service from the standard environment variables
(OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_SERVICE_NAME,
OTEL_TRACES_SAMPLER, OTEL_RESOURCE_ATTRIBUTES, OTEL_SDK_DISABLED, ...).

With no endpoint, spans are not recorded at all (the root sampler is ALWAYS_OFF): the
cost is an id per span, and trace context still flows through gRPC, the outbox and
Kafka, so the logs' trace ids and the events' traceparent stay meaningful.
"""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import grpc
from opentelemetry import context, propagate, trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context
from opentelemetry.instrumentation.grpc import (
    aio_client_interceptors,
    aio_server_interceptor,
    filters,
)
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from sqlalchemy.ext.asyncio import AsyncEngine

from ordermesh_platform.grpc_handlers import WrappedOnce, wrap_handler

TRACER_NAME = "ordermesh"
_instrumented_engines: set[int] = set()


@functools.cache
def otlp_endpoint() -> str:
    """Where spans go; empty: nowhere. Read once: a process's exporter is chosen at its
    start, and every saga step and relay pass asks (``otlp_endpoint.cache_clear()`` after
    changing the variables in-process)."""
    return os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT", ""
    )


@functools.cache
def service_version() -> str:
    try:
        return version("ordermesh-platform")
    except PackageNotFoundError:
        return "0.0.0"


def configure_tracing(service: str) -> TracerProvider | None:
    """Install the tracer provider for this process; None when the SDK is disabled."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    resource = Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME", f"{service}-service"),
            "service.namespace": "ordermesh",
            "service.version": service_version(),
            "service.instance.id": str(uuid.uuid4()),
        }
    )
    endpoint = otlp_endpoint()
    if endpoint:
        provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER
        provider.add_span_processor(BatchSpanProcessor(_exporter()))
    else:
        provider = TracerProvider(resource=resource, sampler=ParentBased(ALWAYS_OFF))
    trace.set_tracer_provider(provider)
    return provider


def _exporter() -> Any:
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    )
    if protocol.startswith("http"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcSpanExporter,
    )

    return GrpcSpanExporter()


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()  # flushes what the batch processor holds


_tracer_of: tuple[trace.TracerProvider, trace.Tracer] | None = None


def tracer() -> trace.Tracer:
    """The tracer of the current provider, made once per provider: the SDK builds a new
    tracer on every ``get_tracer`` (a scope and a deprecation-warning filter each time),
    and spans are started several times per order. Tests that swap the provider get
    a new one."""
    global _tracer_of
    provider = trace.get_tracer_provider()
    if _tracer_of is None or _tracer_of[0] is not provider:
        _tracer_of = (provider, trace.get_tracer(TRACER_NAME, service_version()))
    return _tracer_of[1]


def child_span(name: str, attributes: dict[str, Any]) -> AbstractContextManager[Span]:
    """A span under the current one. With no endpoint nothing is recorded, and an
    unrecorded child only costs its ids (a few per order, at every step): the current
    span stands in for it, so logs, calls and events carry the same trace."""
    current = trace.get_current_span()
    if not otlp_endpoint() and current.get_span_context().is_valid:
        return contextlib.nullcontext(current)
    return tracer().start_as_current_span(
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    )


# Probes and tooling would drown the traces worth reading.
_NOT_TRACED = filters.negate(
    filters.any_of(filters.service_prefix("grpc.health"), filters.service_prefix("grpc.reflection"))
)


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """Full gRPC instrumentation when spans are exported; otherwise only the caller's
    trace context is continued (ids for logs, events and downstream calls), without
    the per-call attribute work of spans nobody records."""
    if otlp_endpoint():
        return [aio_server_interceptor(filter_=_NOT_TRACED)]  # type: ignore[no-untyped-call]
    return [_ContextServerInterceptor()]


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    if otlp_endpoint():
        return list(aio_client_interceptors())  # type: ignore[no-untyped-call]
    return [_ContextUnaryClientInterceptor(), _ContextStreamClientInterceptor()]


class _ContextServerInterceptor(grpc.aio.ServerInterceptor):
    """Continues the caller's W3C trace context in a (non-recording) server span."""

    def __init__(self) -> None:
        self._wrapped = WrappedOnce(_continuing_trace)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(("/grpc.health.", "/grpc.reflection.")):
            return handler
        return self._wrapped(handler, method)


def _continuing_trace(
    handler: grpc.RpcMethodHandler[Any, Any], method: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """The handler with each call run in a server span whose parent is the caller's
    trace context, read from the call's own metadata."""

    def span(context: Any) -> AbstractContextManager[Any]:
        carrier = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        parent = propagate.extract(carrier)
        return tracer().start_as_current_span(method, context=parent, kind=SpanKind.SERVER)

    def unary(behavior: Any) -> Any:
        async def traced(request: Any, context: Any) -> Any:
            with span(context):
                return await behavior(request, context)

        return traced

    def stream(behavior: Any) -> Any:
        async def traced(request: Any, context: Any) -> AsyncIterator[Any]:
            with span(context):
                async for response in behavior(request, context):
                    yield response

        return traced

    return wrap_handler(handler, unary, stream)


def _with_trace_context(details: Any) -> Any:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if not carrier:
        return details
    metadata = [*(details.metadata or ()), *carrier.items()]
    return details._replace(metadata=metadata)


class _ContextUnaryClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Sends the current trace context with every call."""

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_trace_context(details), request)


class _ContextStreamClientInterceptor(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_trace_context(details), request)


def instrument_engine(engine: AsyncEngine) -> None:
    """SQL spans for every statement of this engine, when traces are exported: with no
    endpoint the instrumentation would cost CPU on every statement for spans nobody
    records (trace context needs no SQL spans to flow)."""
    if not otlp_endpoint() or id(engine.sync_engine) in _instrumented_engines:
        return
    _instrumented_engines.add(id(engine.sync_engine))
    SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, enable_commenter=False)


def record_error(span: Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, str(error)[:200]))


def current_ids() -> tuple[str, str]:
    """(trace_id, span_id) of the active span, as hex; empty strings when none."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return "", ""
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def context_from_traceparent(traceparent: str, tracestate: str = "") -> Context:
    """The remote parent carried by a W3C traceparent (an outbox row, a Kafka header)."""
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    return propagate.extract(carrier)


def traceparent_of_current() -> tuple[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", ""), carrier.get("tracestate", "")


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """Background chores (probes, polls, claims) make no SQL or gRPC spans of their own:
    a trace per poll would drown the traces worth reading. Spans started explicitly
    with a parent (the relay's publish spans) are still made."""
    token = context.attach(context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        yield
    finally:
        context.detach(token)
