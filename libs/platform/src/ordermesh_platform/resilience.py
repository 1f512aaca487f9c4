"""Timeouts, retries with backoff, and a circuit breaker for calls to things we do not own."""

from __future__ import annotations

import asyncio
import enum
import functools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class Transient(Exception):
    """A failure worth retrying: the peer did not answer, or answered 'try later'."""


class CircuitOpen(Transient):
    """The breaker is open: the call was not made."""


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``threshold`` consecutive transient failures, stays open for
    ``open_s``, then lets one trial call through (half-open)."""

    def __init__(
        self, threshold: int, open_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.open_s = open_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.open_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        state = self.state
        if state is BreakerState.OPEN or (state is BreakerState.HALF_OPEN and self._trial_running):
            raise CircuitOpen("circuit open")
        self._trial_running = state is BreakerState.HALF_OPEN
        try:
            result = await fn()
        except Transient:
            self._record_failure()
            raise
        finally:
            self._trial_running = False
        self._failures = 0
        self._opened_at = None
        return result

    def _record_failure(self) -> None:
        self._failures += 1
        if self._opened_at is not None or self._failures >= self.threshold:
            self._opened_at = self._clock()


async def timeboxed(fn: Callable[[], Awaitable[T]], timeout_s: float) -> T:
    """``fn()``, or :class:`Transient` when it takes longer than ``timeout_s``."""
    if timeout_s <= 0:
        raise Transient("no time left")
    try:
        async with asyncio.timeout(timeout_s):
            return await fn()
    except TimeoutError as error:
        raise Transient(f"no answer within {timeout_s:.2f}s") from error


async def retry(
    fn: Callable[[], Awaitable[T]],
    attempts: int,
    base_backoff_s: float = 0.05,
    max_backoff_s: float = 1.0,
    deadline: float | None = None,
) -> T:
    """Call ``fn`` up to ``attempts`` times while it fails with :class:`Transient`,
    sleeping full-jitter exponential backoff in between and never past ``deadline``
    (a ``time.monotonic()`` instant). An open circuit is not retried."""
    for attempt in range(attempts):
        try:
            return await fn()
        except CircuitOpen:
            raise
        except Transient:
            if attempt == attempts - 1:
                raise
        backoff = Backoff(base_backoff_s, max_backoff_s, jitter=1.0).wait_s(attempt + 1)
        if deadline is not None and time.monotonic() + backoff >= deadline:
            raise Transient("deadline reached while retrying")
        await asyncio.sleep(backoff)
    raise AssertionError("unreachable")


async def retry_until(
    fn: Callable[[float], Awaitable[T]],
    deadline: float,
    attempt_timeout_s: float,
    base_backoff_s: float = 0.05,
    max_backoff_s: float = 1.0,
) -> T:
    """Call ``fn(timeout)`` until it succeeds or ``deadline`` (monotonic) passes,
    retrying :class:`Transient` failures with full-jitter exponential backoff. Each
    attempt gets at most ``attempt_timeout_s`` and never more than the time left."""
    attempt = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Transient("deadline reached")
        timeout = min(attempt_timeout_s, left)
        try:
            return await timeboxed(functools.partial(fn, timeout), timeout)
        except Transient:
            attempt += 1
            backoff = Backoff(base_backoff_s, max_backoff_s, jitter=1.0).wait_s(attempt)
            if time.monotonic() + backoff >= deadline:
                raise
            await asyncio.sleep(backoff)


# Jitter draws from its own generator: the global one belongs to whoever embeds the
# services (a property-based test seeds and watches it while it draws an example).
_JITTER = random.Random()


@dataclass(frozen=True)
class Backoff:
    """The one wait-between-tries policy of every retry loop (calls, the relay, the
    consumers, notification deliveries): ``base_s`` after the first failure, doubled
    after each failure, at most ``max_s``. The wait is drawn from the top ``jitter``
    share of that ceiling, so that many callers failing together do not retry together
    (1.0: full jitter, anywhere from 0 to the ceiling; 0: a fixed schedule)."""

    base_s: float
    max_s: float
    jitter: float = 0.5

    def ceiling_s(self, failures: int) -> float:
        """The longest wait after the ``failures``-th failure (1-based). The exponent is
        bounded so that a huge failure count cannot overflow a float."""
        return min(self.max_s, self.base_s * 2.0 ** min(max(failures, 1) - 1, 62))

    def wait_s(self, failures: int) -> float:
        return self.ceiling_s(failures) * (1.0 - self.jitter * _JITTER.random())

    async def sleep(self, failures: int) -> float:
        """Sleep the wait after the ``failures``-th failure; returns how long."""
        wait = self.wait_s(failures)
        await asyncio.sleep(wait)
        return wait
