"""Background workers stop with the service: cancelled, awaited, and never allowed to
hold a drain up."""

from __future__ import annotations

import asyncio

from ordermesh_platform.workers import background, run_periodically


async def test_workers_are_cancelled_and_awaited_on_the_way_out() -> None:
    cleaned: list[str] = []
    started = asyncio.Event()

    async def worker(name: str) -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.01)  # its own clean-up, awaited before the context ends
            cleaned.append(name)

    async with background(("a", worker("a")), ("b", worker("b"))):
        await started.wait()
    assert sorted(cleaned) == ["a", "b"]


async def test_a_worker_that_does_not_stop_is_left_behind_after_the_bound() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            await release.wait()  # a clean-up that never ends (a stop waiting on a broker)

    async def polite() -> None:
        await asyncio.Event().wait()

    async def serve() -> None:
        async with background(("stubborn", stubborn()), ("polite", polite()), stop_bound_s=0.2):
            await started.wait()

    await asyncio.wait_for(serve(), 5)
    release.set()  # let the stray task end before the loop closes


async def test_a_worker_that_failed_does_not_fail_the_drain() -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    async with background(("broken", broken())):
        await asyncio.sleep(0.01)


async def test_work_that_finds_more_than_one_call_takes_is_called_again_at_once() -> None:
    backlog = [10, 10, 3]  # what each call finds: two full calls, then less

    async def work() -> int:
        return backlog.pop(0) if backlog else 0

    loop = asyncio.create_task(run_periodically("t", work, 60, again=lambda found: found >= 10))
    try:
        for _ in range(100):
            if not backlog:
                break
            await asyncio.sleep(0.01)
        assert backlog == []  # not one call a minute: the full ones were followed at once
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
