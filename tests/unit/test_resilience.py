from __future__ import annotations

import random
import time

import pytest

from ordermesh_payment.psp import PspDeclined
from ordermesh_payment.simulated_psp import SimulatedProvider
from ordermesh_platform.resilience import (
    Backoff,
    BreakerState,
    CircuitBreaker,
    CircuitOpen,
    Transient,
    retry,
    retry_until,
    timeboxed,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _state(breaker: CircuitBreaker) -> BreakerState:
    return breaker.state  # read afresh: the clock moved


async def _fail() -> None:
    raise Transient("down")


async def _ok() -> str:
    return "ok"


async def test_the_breaker_opens_after_the_threshold_and_half_opens_later() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, open_s=10, clock=clock)
    for _ in range(3):
        with pytest.raises(Transient):
            await breaker.call(_fail)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen):
        await breaker.call(_ok)
    clock.now = 10
    assert _state(breaker) is BreakerState.HALF_OPEN
    assert await breaker.call(_ok) == "ok"
    assert _state(breaker) is BreakerState.CLOSED


async def test_a_failed_trial_opens_the_breaker_again() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, open_s=5, clock=clock)
    with pytest.raises(Transient):
        await breaker.call(_fail)
    clock.now = 5
    with pytest.raises(Transient):
        await breaker.call(_fail)
    assert breaker.state is BreakerState.OPEN


async def test_retry_stops_at_the_attempt_count() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise Transient("blip")
        return "ok"

    assert await retry(flaky, attempts=3, base_backoff_s=0) == "ok"
    calls = -10
    with pytest.raises(Transient):
        await retry(flaky, attempts=2, base_backoff_s=0)


async def test_retry_until_gives_up_at_the_deadline() -> None:
    started = time.monotonic()
    with pytest.raises(Transient):
        await retry_until(lambda timeout: _fail(), time.monotonic() + 0.3, 0.1)
    assert time.monotonic() - started < 1.0


async def test_a_call_that_never_answers_times_out_as_transient() -> None:
    provider = SimulatedProvider()
    with pytest.raises(Transient):
        await timeboxed(lambda: provider.authorize("k", 1, "EUR", "tok_timeout"), 0.05)


async def test_the_simulated_provider_follows_its_tokens() -> None:
    provider = SimulatedProvider()
    first = await provider.authorize("k1", 100, "EUR", "tok_ok")
    assert first == await provider.authorize("k1", 100, "EUR", "tok_ok")  # same key, same auth
    with pytest.raises(PspDeclined) as raised:
        await provider.authorize("k2", 100, "EUR", "tok_insufficient_funds")
    assert raised.value.reason == "insufficient_funds"
    with pytest.raises(Transient):
        await provider.authorize("k3", 100, "EUR", "tok_flaky")
    assert await provider.authorize("k3", 100, "EUR", "tok_flaky")


async def test_the_simulated_provider_keeps_no_memory_per_call() -> None:
    # It runs inside payment-service for as long as the service runs: anything it
    # kept per call would grow with every order (a soak found such a list).
    provider = SimulatedProvider()

    def sizes() -> dict[str, int]:
        return {k: len(v) for k, v in vars(provider).items() if hasattr(v, "__len__")}

    await provider.authorize("warm", 100, "EUR", "tok_ok")
    before = sizes()
    for i in range(500):
        await provider.authorize(f"k{i}", 100, "EUR", "tok_ok")
        await provider.capture(f"k{i}", "ref", 100)
    assert sizes() == before


def test_backoff_doubles_from_its_base_up_to_its_cap() -> None:
    policy = Backoff(0.1, 1.0, jitter=0.0)
    assert [policy.wait_s(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1, 1])
    assert policy.ceiling_s(10**9) == 1.0  # a huge failure count does not overflow


def test_backoff_jitter_draws_from_the_top_share_of_the_ceiling() -> None:
    half = [Backoff(1.0, 8.0).wait_s(3) for _ in range(2000)]  # ceiling 4 s
    assert min(half) >= 2.0
    assert max(half) <= 4.0
    assert max(half) - min(half) > 1.5  # spread out, not one value
    full = [Backoff(1.0, 8.0, jitter=1.0).wait_s(3) for _ in range(2000)]
    assert 0.0 <= min(full) < 0.5
    assert max(full) <= 4.0


def test_backoff_leaves_the_global_random_generator_alone() -> None:
    state = random.getstate()
    Backoff(0.1, 1.0).wait_s(2)
    assert random.getstate() == state
