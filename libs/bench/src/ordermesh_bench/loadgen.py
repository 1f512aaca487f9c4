"""Closed-loop and open-loop load. In open loop, latency counts from the time a
request was *meant* to be sent, so queueing in front of a slow system is measured
instead of hidden (no coordinated omission)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from rich.progress import Progress

from ordermesh_bench.stats import Run

Call = Callable[[], Awaitable[str]]  # one request; returns its outcome ("OK", a code, a reason)


async def closed_loop(
    run: Run, call: Call, concurrency: int, duration_s: float, progress: Progress | None = None
) -> Run:
    """``concurrency`` callers, each sending its next request when the last returns."""
    deadline = time.perf_counter() + duration_s
    task = progress.add_task(run.name, total=duration_s) if progress else None

    async def caller() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            outcome = await call()
            run.record(time.perf_counter() - started, outcome)

    ticker = asyncio.create_task(_tick(progress, task, deadline, duration_s))
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    ticker.cancel()
    run.finish()
    return run


async def open_loop(
    run: Run,
    call: Call,
    rate_per_s: float,
    duration_s: float,
    max_in_flight: int = 10_000,
    progress: Progress | None = None,
) -> Run:
    """Requests sent at a fixed rate whatever the system does; each latency counts
    from its intended send time."""
    start = time.perf_counter()
    total = int(rate_per_s * duration_s)
    gate = asyncio.Semaphore(max_in_flight)
    task = progress.add_task(run.name, total=duration_s) if progress else None
    ticker = asyncio.create_task(_tick(progress, task, start + duration_s, duration_s))

    async def one(intended: float) -> None:
        async with gate:
            outcome = await call()
            run.record(time.perf_counter() - intended, outcome)

    tasks = []
    for i in range(total):
        intended = start + i / rate_per_s
        delay = intended - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(intended)))
    await asyncio.gather(*tasks)
    ticker.cancel()
    run.finish()
    return run


async def _tick(progress: Progress | None, task: object, deadline: float, total: float) -> None:
    if progress is None or task is None:
        return
    while True:
        left = max(0.0, deadline - time.perf_counter())
        progress.update(task, completed=total - left)  # type: ignore[arg-type]
        await asyncio.sleep(0.25)
