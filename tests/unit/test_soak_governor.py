"""The soak's governor: placing holds while the consumers are behind, and resumes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ordermesh_bench.soak import Governor


async def _until(condition: Callable[[], bool], steps: int = 200) -> None:
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


async def test_placing_holds_while_consumers_are_behind_and_resumes_when_they_catch_up() -> None:
    lag = [5000.0]
    governor = Governor(lambda: lag[0], max_lag=2000, interval_s=0.01)
    running = asyncio.create_task(governor.run())
    try:
        await _until(lambda: not governor.go.is_set())
        lag[0] = 10.0
        await _until(governor.go.is_set)
        assert governor.held_s > 0
    finally:
        running.cancel()


async def test_a_hold_ends_after_its_limit_even_if_the_lag_never_moves() -> None:
    governor = Governor(lambda: 5000.0, max_lag=2000, interval_s=0.01, max_hold_s=0.05)
    running = asyncio.create_task(governor.run())
    try:
        await _until(lambda: not governor.go.is_set())
        await _until(governor.go.is_set)
    finally:
        running.cancel()


async def test_no_limit_never_holds() -> None:
    governor = Governor(lambda: 10**9, max_lag=0, interval_s=0.01)
    await asyncio.wait_for(governor.run(), 1)
    assert governor.go.is_set()
    assert governor.held_s == 0
