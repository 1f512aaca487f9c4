"""The payment-provider (PSP) port, and the resilient client the use cases call."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ordermesh_platform.resilience import CircuitBreaker, CircuitOpen, retry, timeboxed

T = TypeVar("T")


class PspDeclined(Exception):
    """The provider refused the authorization (a final answer, never retried)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PspRefused(Exception):
    """The provider refused an operation on an existing authorization (for example a
    void of a captured payment)."""


@dataclass(frozen=True)
class Authorization:
    reference: str


class PaymentProvider(Protocol):
    """What ordermesh needs of a PSP. Every call carries an idempotency key (the order
    id): the provider applies one key once, however often it is sent."""

    async def authorize(
        self, key: str, amount_minor: int, currency: str, token: str
    ) -> Authorization: ...

    async def capture(self, key: str, reference: str, amount_minor: int) -> None: ...

    async def void(self, key: str, reference: str) -> None: ...

    async def refund(self, key: str, reference: str, amount_minor: int) -> None: ...


class ResilientProvider:
    """A provider behind a per-call timeout, retries with backoff and a circuit breaker.
    Transient failures surface as ``ordermesh_platform.resilience.Transient``."""

    def __init__(
        self,
        provider: PaymentProvider,
        breaker: CircuitBreaker,
        timeout_s: float,
        attempts: int,
        observe: Callable[[str, float, str], None] = lambda op, seconds, outcome: None,
    ) -> None:
        self.provider = provider
        self.breaker = breaker
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._observe = observe

    async def _call(self, op: str, fn: Callable[[], Awaitable[T]], deadline: float | None) -> T:
        async def attempt() -> T:
            timeout = self._timeout_s
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
            started = time.monotonic()
            outcome = "error"
            try:
                result = await self.breaker.call(lambda: timeboxed(fn, timeout))
                outcome = "ok"
                return result
            except PspDeclined:
                outcome = "declined"  # an answer, not a failure of the provider
                raise
            except CircuitOpen:
                outcome = "circuit_open"  # not a call: no latency to speak of
                raise
            finally:
                self._observe(op, time.monotonic() - started, outcome)

        return await retry(attempt, self._attempts, deadline=deadline)

    async def authorize(
        self, key: str, amount_minor: int, currency: str, token: str, deadline: float | None
    ) -> Authorization:
        return await self._call(
            "authorize",
            lambda: self.provider.authorize(key, amount_minor, currency, token),
            deadline,
        )

    async def capture(self, key: str, reference: str, amount: int, deadline: float | None) -> None:
        await self._call("capture", lambda: self.provider.capture(key, reference, amount), deadline)

    async def void(self, key: str, reference: str, deadline: float | None) -> None:
        await self._call("void", lambda: self.provider.void(key, reference), deadline)

    async def refund(self, key: str, reference: str, amount: int, deadline: float | None) -> None:
        await self._call("refund", lambda: self.provider.refund(key, reference, amount), deadline)
