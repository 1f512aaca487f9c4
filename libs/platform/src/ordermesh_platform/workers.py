"""Background workers that run beside the gRPC server for the life of the service."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from ordermesh_platform.logs import get_logger

log = get_logger(__name__)
SLOW_STOP_S = 1.0


async def run_periodically(
    name: str, work: Callable[[], Awaitable[object]], interval_s: float
) -> None:
    """Call ``work`` every interval; a failure is logged and the loop goes on."""
    while True:
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("worker failed; retrying next interval", worker=name)
        await asyncio.sleep(interval_s)


@asynccontextmanager
async def background(*workers: tuple[str, Coroutine[Any, Any, None]]) -> AsyncIterator[None]:
    """Run the workers while the context is open; cancel them on the way out."""
    tasks = [asyncio.create_task(coro, name=name) for name, coro in workers]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            started = time.monotonic()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # A drain that hangs names its worker (a drain normally ends in milliseconds).
            if (took := time.monotonic() - started) > SLOW_STOP_S:
                log.warning("worker was slow to stop", worker=task.get_name(), took_s=took)
