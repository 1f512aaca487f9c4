"""The live batcher: calls that arrive while a batch is in flight form the next batch.

There is no timer. A lone call at low load starts its batch at once (it only waits for
the calls made in the same turn of the event loop); under load the batch in flight is
what gathers the next one, so batches grow with the load and the cost of a pass (a
transaction, an RPC, a commit) is shared by every item in it. This is group commit,
and TigerBeetle's and TigerFans' batching: pay once per batch, never once per item.

Work nobody waits for (an order's capture and commit, after its answer) may ask for
``min_interval_s``: a batch then starts no sooner than that after the one before it
started. A lone item still starts at once; only batches in quick succession wait, so
under a moderate load they gather several times more items, and the per-batch cost they
would otherwise pay again and again is left to the work a caller is waiting for. A full
batch (``max_size`` items queued) starts at once: waiting would gather it nothing more,
and a spaced batcher must never fall behind the load by its spacing alone.

A batch that runs far longer than usual (``stall_s``: a peer slow for reasons of its
own, a row lock held by another transaction) stops holding its place: what queued
behind it starts as the next batch, and the stalled one goes on for its own items.
Without it, one stuck batch held every item queued behind it until its longest
deadline ran out, whatever those items asked for. At most ``max_stalled`` batches are
left running so, which bounds what a peer that answers nothing is sent at once.

What a batch never shares: each item has its own result or exception (the batch
function answers one per item), and its own caller. A caller that gives up (its
deadline, a cancellation) drops its item if the batch has not started, and only stops
waiting otherwise; the batch goes on for the others.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from opentelemetry import trace

from ordermesh_platform.deadlines import detached
from ordermesh_platform.logs import get_logger
from ordermesh_platform.metrics import (
    BATCH_DURATION,
    BATCH_QUEUE_WAIT,
    BATCH_SIZE,
    BATCH_STALLS,
)
from ordermesh_platform.telemetry import otlp_endpoint, tracer

log = get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# One answer per item, in item order: its result, or the exception its caller gets.
BatchFn = Callable[[Sequence[T]], Awaitable[Sequence["R | BaseException"]]]


@dataclass
class _Waiting(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    queued_at: float = field(default_factory=time.perf_counter)
    # The caller's context (its trace): a batch runs in its first item's.
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    # The caller's span, linked from the batch's span while spans are exported.
    span: trace.SpanContext | None = None


@dataclass
class _Pass:
    """One batch while it runs: whether it has given up its place (stalled)."""

    size: int
    stalled: bool = False
    timer: asyncio.TimerHandle | None = None


class LiveBatcher(Generic[T, R]):
    """``await batcher.submit(item)`` runs ``run`` over a batch holding ``item``.

    ``max_size`` bounds a batch; ``in_flight`` is how many batches may run at once
    (1: the strict form, largest batches; 2 lets one batch's I/O overlap the next
    one's CPU); ``min_interval_s``, the least time between two batches' starts (0: none),
    which a full batch does not wait for; ``stall_s``, how long a batch runs before it
    gives up its place to the next (by default never), with at most ``max_stalled``
    batches running so at once.
    If ``run`` raises, every item of that batch gets the exception.
    """

    def __init__(
        self,
        name: str,
        run: BatchFn[T, R],
        max_size: int = 256,
        in_flight: int = 1,
        min_interval_s: float = 0.0,
        stall_s: float = math.inf,
        max_stalled: int = 4,
    ) -> None:
        if max_size < 1 or in_flight < 1 or max_stalled < 0:
            raise ValueError("max_size and in_flight must be at least 1, max_stalled 0 or more")
        if min_interval_s < 0 or stall_s <= 0:
            raise ValueError("min_interval_s must not be negative, stall_s must be positive")
        self.name = name
        self._run = run
        self.max_size = max_size
        self.in_flight = in_flight
        self.min_interval_s = min_interval_s
        self.stall_s = stall_s
        self.max_stalled = max_stalled
        self._stalled = 0  # batches still running that gave up their place
        self._last_start = -math.inf
        self._queue: deque[_Waiting[T, R]] = deque()
        self._running = 0
        self._scheduled = False
        # The delayed start of a batch spaced out by min_interval_s, while it waits.
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak refs
        self._size = BATCH_SIZE.labels(name)
        self._wait = BATCH_QUEUE_WAIT.labels(name)
        self._duration = BATCH_DURATION.labels(name)
        self._stalls = BATCH_STALLS.labels(name)
        self._traced = bool(otlp_endpoint())

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        span = trace.get_current_span().get_span_context() if self._traced else None
        self._queue.append(_Waiting(item, future, span=span))
        self._schedule()
        try:
            return await future
        finally:
            # Gave up before its batch started: the batch skips a done future.
            if not future.done():
                future.cancel()

    async def submit_many(self, items: Sequence[T]) -> list[R | BaseException]:
        """Every item's answer, results and exceptions alike (none is raised)."""
        answers = await asyncio.gather(*(self.submit(x) for x in items), return_exceptions=True)
        return list(answers)

    def _schedule(self) -> None:
        # The batch is taken on the loop's next turn, not now: whatever is submitted in
        # this turn of the event loop joins it, at no cost in latency.
        full = len(self._queue) >= self.max_size
        if self._scheduled:
            if full and self._timer is not None:  # waiting would gather it nothing more
                self._timer.cancel()
                self._timer = None
                asyncio.get_running_loop().call_soon(self._start)
            return
        if self._running >= self.in_flight:
            return
        self._scheduled = True
        self._running += 1
        loop = asyncio.get_running_loop()
        early_s = self._last_start + self.min_interval_s - loop.time()
        if early_s > 0 and not full:
            self._timer = loop.call_later(early_s, self._start)
        else:
            loop.call_soon(self._start)

    def _start(self) -> None:
        self._timer = None
        self._scheduled = False
        batch = self._take()
        if not batch:
            self._running -= 1
            return
        self._last_start = asyncio.get_running_loop().time()
        task = asyncio.get_running_loop().create_task(
            self._pass(batch), name=f"batch-{self.name}", context=batch[0].context
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[_Waiting[T, R]]:
        batch: list[_Waiting[T, R]] = []
        now = time.perf_counter()
        while self._queue and len(batch) < self.max_size:
            waiting = self._queue.popleft()
            if waiting.future.done():  # its caller gave up
                continue
            self._wait.observe(now - waiting.queued_at)
            batch.append(waiting)
        return batch

    async def _pass(self, batch: list[_Waiting[T, R]]) -> None:
        # The batch runs in its first caller's context (its trace), but not under that
        # caller's deadline: one caller's deadline must never cut the batch of the others
        # (each caller stops waiting at its own; the database work keeps the service's
        # own time limit).
        with detached():
            await self._pass_detached(batch)

    def _watch(self, running: _Pass) -> None:
        if math.isfinite(self.stall_s):
            loop = asyncio.get_running_loop()
            running.timer = loop.call_later(self.stall_s, self._on_stall, running)

    def _on_stall(self, running: _Pass) -> None:
        running.timer = None
        if self._stalled >= self.max_stalled:
            self._watch(running)  # at the bound: looked at again after another stall_s
            return
        running.stalled = True
        self._stalled += 1
        self._running -= 1
        self._stalls.inc()
        # Logged in the batch's context: the trace and order of its first item.
        log.warning("batch stalled: the next one starts", batcher=self.name, items=running.size,
                    stall_s=self.stall_s, queued=len(self._queue))  # fmt: skip
        if self._queue:
            self._schedule()

    async def _pass_detached(self, batch: list[_Waiting[T, R]]) -> None:
        started = time.perf_counter()
        running = _Pass(len(batch))
        self._watch(running)
        try:
            self._size.observe(len(batch))
            if not self._traced:
                await self._answer(batch)
                return
            # The batch runs in its first caller's trace; every caller's span is linked,
            # so each order's trace leads to the batch that carried it.
            links = [trace.Link(w.span) for w in batch if w.span is not None]
            attributes = {"ordermesh.batch.size": len(batch)}
            with tracer().start_as_current_span(
                f"batch {self.name}", links=links, attributes=attributes
            ):
                await self._answer(batch)
        finally:
            for waiting in batch:  # whatever went wrong above, nobody waits forever
                if not waiting.future.done():
                    waiting.future.set_exception(RuntimeError(f"batch {self.name} failed"))
            self._duration.observe(time.perf_counter() - started)
            if running.timer is not None:
                running.timer.cancel()
            if running.stalled:
                self._stalled -= 1
            else:
                self._running -= 1
            if self._queue:
                self._schedule()

    async def _answer(self, batch: list[_Waiting[T, R]]) -> None:
        try:
            answers = await self._run([w.item for w in batch])
            if len(answers) != len(batch):
                raise RuntimeError(
                    f"batcher {self.name}: {len(answers)} answers for {len(batch)} items"
                )
        except asyncio.CancelledError:
            for waiting in batch:
                waiting.future.cancel()
            raise
        except Exception as error:  # every waiting caller gets it
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(error)
            return
        for waiting, answer in zip(batch, answers, strict=True):
            if waiting.future.done():
                continue
            if isinstance(answer, BaseException):
                waiting.future.set_exception(answer)
            else:
                waiting.future.set_result(answer)
