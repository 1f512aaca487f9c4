"""The server interceptors shared by every service.

``RpcInterceptor`` (outer): sheds load past the in-flight bound, turns domain errors
into statuses, counts and times every call. ``AuthInterceptor`` (inner, only while
authentication is on): establishes the caller's ``Principal``, applies the service's
policy table, and logs every refusal (never a token).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError

from ordermesh_platform.auth import Authenticator, Principal, reset_principal, set_principal
from ordermesh_platform.db import is_connection_error
from ordermesh_platform.deadlines import call_deadline
from ordermesh_platform.errors import (
    FieldViolation,
    InvalidArgument,
    Overloaded,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from ordermesh_platform.grpc_errors import internal_error, to_grpc_status
from ordermesh_platform.grpc_handlers import WrappedOnce, wrap_handler
from ordermesh_platform.logs import get_logger
from ordermesh_platform.metrics import RPC_IN_FLIGHT, RPC_LATENCY, RPC_REQUESTS, RPC_SHED
from ordermesh_platform.policy import Policy

log = get_logger(__name__)

Continuation = Callable[
    [grpc.HandlerCallDetails], Awaitable["grpc.RpcMethodHandler[Any, Any] | None"]
]
Context = grpc.aio.ServicerContext[Any, Any]

# Never shed, never authenticated: probes and tooling must always get an answer.
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def is_open(method: str) -> bool:
    return method.startswith(OPEN_METHOD_PREFIXES)


class Undecodable:
    """Stands in for a request whose bytes are not a message of the method's type."""


def _tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def tolerant(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError:
            return Undecodable()

    return tolerant


def _refuse_undecodable(request: Any) -> None:
    if isinstance(request, Undecodable):
        raise InvalidArgument([FieldViolation("request", "is not a valid message of this method")])


class InFlightLimit:
    """A bound on the calls one process handles at once. Calls past it are refused at
    once: a queue would only add latency until every caller's deadline had passed.
    One event loop runs every call, so a plain counter is exact."""

    WARN_EVERY_S = 5.0

    def __init__(self, service: str, limit: int, retry_after_s: float) -> None:
        self.service = service
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.shed = 0
        self._warned = 0.0

    def enter(self, method: str) -> None:
        """Count the call in, or raise Overloaded."""
        if self.in_flight >= self.limit:
            self.shed += 1
            RPC_SHED.labels(self.service, method).inc()
            now = time.monotonic()
            if now - self._warned > self.WARN_EVERY_S:  # one line per interval, not per call
                self._warned = now
                log.warning("shedding load", in_flight=self.in_flight, limit=self.limit,
                            shed_total=self.shed)  # fmt: skip
            raise Overloaded(
                f"{self.service}-service is at its limit of {self.limit} calls in flight; "
                "retry after the advised delay",
                self.retry_after_s,
                {"service": self.service, "limit": str(self.limit)},
            )
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1


class RpcInterceptor(grpc.aio.ServerInterceptor):
    """Turns a domain error into its status with google.rpc details, and any other
    exception into a bare INTERNAL, so no handler maps errors by hand; counts and times
    every call by method and status code; sheds calls past the in-flight bound."""

    def __init__(self, service: str, limit: InFlightLimit | None = None) -> None:
        self.service = service
        self.limit = limit
        self._wrapped = WrappedOnce(self._wrap)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return self._wrapped(handler, handler_call_details.method)

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        limit = None if is_open(method) else self.limit
        # A request that does not decode reaches the behaviour as Undecodable, which it
        # refuses as INVALID_ARGUMENT, instead of failing inside gRPC (UNKNOWN).
        deserializer = handler.request_deserializer
        return wrap_handler(
            handler,
            lambda behavior: self._unary(behavior, method, limit),
            lambda behavior: self._stream(behavior, method, limit),
            _tolerant(deserializer) if deserializer is not None else None,
        )

    def _unary(self, behavior: Any, method: str, limit: InFlightLimit | None) -> Any:
        async def unary(request: Any, context: Context) -> Any:
            call = _Call(self.service, method)
            try:
                call.admit(limit)
                _refuse_undecodable(request)
                with call_deadline(context.time_remaining()):
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

    def _stream(self, behavior: Any, method: str, limit: InFlightLimit | None) -> Any:
        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            call = _Call(self.service, method)
            try:
                call.admit(limit)
                _refuse_undecodable(request)
                with call_deadline(context.time_remaining()):
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
    """One call's bookkeeping: log context, in-flight gauge and bound, outcome metrics."""

    def __init__(self, service: str, method: str) -> None:
        self.service, self.method = service, method
        self.code = "CANCELLED"  # unless it finishes or fails otherwise
        self.started = time.perf_counter()
        self.limit: InFlightLimit | None = None
        structlog.contextvars.bind_contextvars(rpc_method=method)
        RPC_IN_FLIGHT.labels(service).inc()

    def admit(self, limit: InFlightLimit | None) -> None:
        if limit is not None:
            limit.enter(self.method)
            self.limit = limit

    async def abort(self, error: Exception, context: Context) -> None:
        if isinstance(error, ServiceError):
            status = to_grpc_status(error)
        elif is_connection_error(error):
            # The database is away (restarting, failing over): a retry later may work.
            log.warning("database unavailable", method=self.method, error=repr(error))
            status = to_grpc_status(Unavailable("the service's database is unavailable"))
        else:
            log.error("unhandled error", method=self.method, exc_info=error)
            status = internal_error()
        self.code = status.code.name
        await context.abort_with_status(status)

    def done(self) -> None:
        if self.limit is not None:
            self.limit.leave()
        RPC_IN_FLIGHT.labels(self.service).dec()
        RPC_REQUESTS.labels(self.service, self.method, self.code).inc()
        RPC_LATENCY.labels(self.service, self.method).observe(time.perf_counter() - self.started)
        structlog.contextvars.unbind_contextvars("rpc_method", "order_id")


def peer_names(context: Context) -> list[str]:
    """The client certificate's common name and DNS names (empty without mTLS)."""
    auth = context.auth_context()
    names = [*auth.get("x509_common_name", ()), *auth.get("peer_dns", ())]
    return [n.decode(errors="replace") if isinstance(n, bytes) else str(n) for n in names]


def bearer(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode(errors="replace")
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call but health and reflection, puts the ``Principal`` in
    the request's context (``auth.current_principal()``), and authorizes it with the
    service's policy table. Refusals are logged with the caller's identity and the
    reason, never with a token."""

    def __init__(self, authenticator: Authenticator, policy: Policy | None) -> None:
        self._authenticator = authenticator
        self._policy = policy or Policy("", {})
        self._wrapped = WrappedOnce(
            lambda handler, method: wrap_handler(
                handler,
                lambda behavior: self._unary(behavior, method),
                lambda behavior: self._stream(behavior, method),
            )
        )

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or is_open(method):
            return handler
        return self._wrapped(handler, method)

    async def _admit(self, method: str, request: Any, context: Context) -> Principal:
        principal = Principal()
        try:
            principal = await self._authenticator.authenticate(bearer(context), peer_names(context))
            self._policy.authorize(method, principal, request)
        except (Unauthenticated, PermissionDenied) as error:
            self._log_refusal(method, error, principal, context)
            raise
        return principal

    @staticmethod
    def _log_refusal(
        method: str, error: Unauthenticated | PermissionDenied, who: Principal, context: Context
    ) -> None:
        event = "unauthenticated call" if isinstance(error, Unauthenticated) else "call refused"
        log.warning(event, method=method, reason=error.reason_name, peer=context.peer(),
                    **who.describe())  # fmt: skip

    def _unary(self, behavior: Any, method: str) -> Any:
        async def unary(request: Any, context: Context) -> Any:
            principal = await self._admit(method, request, context)
            token = set_principal(principal)
            try:
                return await behavior(request, context)
            except PermissionDenied as error:  # an ownership check of a use case
                self._log_refusal(method, error, principal, context)
                raise
            finally:
                reset_principal(token)

        return unary

    def _stream(self, behavior: Any, method: str) -> Any:
        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            principal = await self._admit(method, request, context)
            token = set_principal(principal)
            try:
                async for response in behavior(request, context):
                    yield response
            except PermissionDenied as error:
                self._log_refusal(method, error, principal, context)
                raise
            finally:
                with contextlib.suppress(ValueError):  # resumed in another context
                    reset_principal(token)

        return stream
