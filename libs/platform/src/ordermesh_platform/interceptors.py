"""Server interceptors shared by every service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog

from ordermesh_platform.errors import ServiceError
from ordermesh_platform.grpc_errors import internal_error, to_grpc_status
from ordermesh_platform.logs import get_logger

log = get_logger(__name__)

Continuation = Callable[
    [grpc.HandlerCallDetails], Awaitable["grpc.RpcMethodHandler[Any, Any] | None"]
]


class ErrorStatusInterceptor(grpc.aio.ServerInterceptor):
    """Turns a domain error into its status with google.rpc details, and any other
    exception into a bare INTERNAL, so no handler maps errors by hand."""

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


async def _abort_for(
    error: BaseException, context: grpc.aio.ServicerContext[Any, Any], method: str
) -> None:
    if isinstance(error, ServiceError):
        await context.abort_with_status(to_grpc_status(error))
    log.error("unhandled error", method=method, exc_info=error)
    await context.abort_with_status(internal_error())


def _wrap_unary(behavior: Any, method: str) -> Any:
    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        structlog.contextvars.bind_contextvars(rpc_method=method)
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _abort_for(error, context, method)
        finally:
            structlog.contextvars.unbind_contextvars("rpc_method")

    return unary


def _wrap_stream(behavior: Any, method: str) -> Any:
    async def stream(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        structlog.contextvars.bind_contextvars(rpc_method=method)
        try:
            async for response in behavior(request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _abort_for(error, context, method)
        finally:
            structlog.contextvars.unbind_contextvars("rpc_method")

    return stream
