"""Calls a batch stopped waiting for: each goes on, and what it brings is recorded when
it answers.

A batch that waits for the slowest of its calls (a provider, a webhook) holds every
item in it, and every batch behind it, for that call's whole timeout. So a batch waits
for its calls a bounded time, answers or records those done, and hands the rest here:
each stays *out* under its key until it has answered and its outcome is recorded, so
that nobody asks the same thing again meanwhile. ``close`` stops them all (a stopping
process): what they would have recorded is then left as a crash leaves it, to be asked
again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Hashable
from typing import Any, Generic, TypeVar

from ordermesh_platform.logs import get_logger

log = get_logger(__name__)

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


async def answered_within(
    calls: Collection[asyncio.Future[T]], wait_s: float | None
) -> tuple[set[asyncio.Future[T]], set[asyncio.Future[T]]]:
    """The calls that answered within ``wait_s`` (None: all of them), and those still
    out. Cancelled meanwhile (its caller gone), it cancels every call."""
    try:
        return await asyncio.wait(calls, timeout=wait_s)
    except asyncio.CancelledError:
        for call in calls:
            call.cancel()
        raise


class CallsStillOut(Generic[K]):
    """The calls still out, by key, each with the task that records its answer."""

    def __init__(self, what: str) -> None:
        self._what = what  # named in the log when a recording fails
        self._calls: dict[K, asyncio.Future[Any]] = {}
        self._recording: set[asyncio.Task[None]] = set()

    def __contains__(self, key: K) -> bool:
        return key in self._calls

    def __len__(self) -> int:
        return len(self._calls)

    def record_when_answered(
        self, key: K, call: asyncio.Future[T], record: Callable[[T], Awaitable[None]]
    ) -> None:
        """``call`` is out under ``key`` until it answers and ``record`` has its answer."""
        self._calls[key] = call

        async def when_answered() -> None:
            try:
                await record(await call)
            except asyncio.CancelledError:
                raise
            except Exception:  # left as it was: asked again later
                log.exception("recording a late answer failed", what=self._what, key=str(key))
            finally:
                self._calls.pop(key, None)

        task = asyncio.create_task(when_answered())
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def one_recorded(self) -> None:
        """Wait until one of the calls out has answered and been recorded (at once if
        none is out)."""
        if self._recording:
            await asyncio.wait(list(self._recording), return_when=asyncio.FIRST_COMPLETED)

    async def close(self) -> None:
        """Stop every call still out, and its recording."""
        running = [*self._recording, *self._calls.values()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
