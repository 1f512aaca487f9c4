"""Background workers that run beside the gRPC server for the life of the service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from ordermesh_platform.logs import get_logger

log = get_logger(__name__)
T = TypeVar("T")
SLOW_STOP_S = 1.0
# Past this a drain stops waiting for its workers (each Kafka client's own stop is bound
# tighter, ordermesh_messaging.clients.STOP_BOUND_S).
STOP_BOUND_S = 10.0


async def run_periodically(
    name: str,
    work: Callable[[], Awaitable[T]],
    interval_s: float,
    again: Callable[[T], bool] = lambda _: False,
) -> None:
    """Call ``work`` every interval; a failure is logged and the loop goes on. While
    ``again`` holds for what a call returned (it found more work than one call takes),
    the next call comes at once: a backlog is worked off back to back."""
    while True:
        try:
            if again(await work()):
                continue
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("worker failed; retrying next interval", worker=name)
        await asyncio.sleep(interval_s)


@asynccontextmanager
async def background(
    *workers: tuple[str, Coroutine[Any, Any, None]], stop_bound_s: float = STOP_BOUND_S
) -> AsyncIterator[None]:
    """Run the workers while the context is open; cancel them on the way out, and wait
    for them at most ``stop_bound_s``: a worker that is still stopping then is named and
    left behind, so a drain always ends (what a worker had not finished is owed work in
    its database or offsets not yet committed: a replica takes it up)."""
    tasks = [asyncio.create_task(coro, name=name) for name, coro in workers]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        started = time.monotonic()
        pending: set[asyncio.Task[None]] = set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=stop_bound_s)
        for task in tasks:
            if task in pending:
                log.error("worker did not stop; left behind", worker=task.get_name())
                continue
            if not task.cancelled() and (error := task.exception()) is not None:
                log.error("worker ended with an error", worker=task.get_name(), error=repr(error))
        # A drain that is slow names it (a drain normally ends in milliseconds).
        if (took := time.monotonic() - started) > SLOW_STOP_S:
            log.warning("workers were slow to stop", took_s=round(took, 3))
