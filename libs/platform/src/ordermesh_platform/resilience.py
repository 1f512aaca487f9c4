"""Timeouts, retries with backoff, and a circuit breaker for calls to things we do not own."""

from __future__ import annotations

import asyncio
import enum
import functools
import random
import time
from collections.abc import Awaitable, Callable
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
        backoff = random.uniform(0, min(max_backoff_s, base_backoff_s * 2**attempt))
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
            backoff = random.uniform(0, min(max_backoff_s, base_backoff_s * 2**attempt))
            if time.monotonic() + backoff >= deadline:
                raise
            attempt += 1
            await asyncio.sleep(backoff)


def exponential_backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """The wait after the ``attempt``-th failure (1-based): ``base_s``, doubled after
    each failure, at most ``max_s``. The exponent is bounded so a huge attempt count
    cannot overflow a float."""
    return min(max_s, base_s * 2.0 ** min(attempt - 1, 62))
