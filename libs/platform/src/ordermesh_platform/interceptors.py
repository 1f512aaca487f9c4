"""The server interceptor shared by every service: errors to statuses, metrics, log context."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog

from ordermesh_platform.errors import ServiceError
from ordermesh_platform.grpc_errors import internal_error, to_grpc_status
from ordermesh_platform.logs import get_logger
from ordermesh_platform.metrics import RPC_IN_FLIGHT, RPC_LATENCY, RPC_REQUESTS

log = get_logger(__name__)

Continuation = Callable[
    [grpc.HandlerCallDetails], Awaitable["grpc.RpcMethodHandler[Any, Any] | None"]
]
Context = grpc.aio.ServicerContext[Any, Any]


class RpcInterceptor(grpc.aio.ServerInterceptor):
    """Turns a domain error into its status with google.rpc details, and any other
    exception into a bare INTERNAL, so no handler maps errors by hand; counts and times
    every call by method and status code."""

    def __init__(self, service: str) -> None:
        self.service = service

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _unary(self, behavior: Any, method: str) -> Any:
        async def unary(request: Any, context: Context) -> Any:
            call = _Call(self.service, method)
            try:
                response = await behavior(request, context)
                call.code = "OK"
                return response
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                await call.abort(error, context)
            finally:
                call.done()

        return unary

    def _stream(self, behavior: Any, method: str) -> Any:
        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            call = _Call(self.service, method)
            try:
                async for response in behavior(request, context):
                    yield response
                call.code = "OK"
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                await call.abort(error, context)
            finally:
                call.done()

        return stream


class _Call:
    """One call's bookkeeping: log context, in-flight gauge, outcome metrics."""

    def __init__(self, service: str, method: str) -> None:
        self.service, self.method = service, method
        self.code = "CANCELLED"  # unless it finishes or fails otherwise
        self.started = time.perf_counter()
        structlog.contextvars.bind_contextvars(rpc_method=method)
        RPC_IN_FLIGHT.labels(service).inc()

    async def abort(self, error: Exception, context: Context) -> None:
        if isinstance(error, ServiceError):
            status = to_grpc_status(error)
        else:
            log.error("unhandled error", method=self.method, exc_info=error)
            status = internal_error()
        self.code = status.code.name
        await context.abort_with_status(status)

    def done(self) -> None:
        RPC_IN_FLIGHT.labels(self.service).dec()
        RPC_REQUESTS.labels(self.service, self.method, self.code).inc()
        RPC_LATENCY.labels(self.service, self.method).observe(time.perf_counter() - self.started)
        structlog.contextvars.unbind_contextvars("rpc_method", "order_id")
