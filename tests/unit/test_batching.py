"""The live batcher: what queues while a batch is in flight forms the next batch, and
every item keeps its own result, exception and caller."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence

import pytest

from ordermesh_platform.batching import LiveBatcher
from ordermesh_platform.deadlines import call_deadline, remaining_s

CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")


async def turns(n: int = 4) -> None:
    """Let the event loop run the scheduled steps (submit, start, the batch)."""
    for _ in range(n):
        await asyncio.sleep(0)


class Recorder:
    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.contexts: list[str] = []
        self.gate = gate

    async def run(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        self.contexts.append(CALLER.get())
        if self.gate is not None:
            await self.gate.wait()
        return [ValueError(f"bad {x}") if x < 0 else x * 10 for x in items]


async def test_a_lone_item_goes_at_once_in_a_batch_of_one() -> None:
    recorder = Recorder()
    batcher = LiveBatcher("t", recorder.run)
    assert await batcher.submit(3) == 30
    assert recorder.batches == [[3]]


async def test_items_queued_while_a_batch_is_in_flight_form_the_next_batch() -> None:
    gate = asyncio.Event()
    recorder = Recorder(gate)
    batcher = LiveBatcher("t", recorder.run)
    first = asyncio.create_task(batcher.submit(1))
    await turns()
    rest = [asyncio.create_task(batcher.submit(i)) for i in range(2, 7)]
    await asyncio.sleep(0)
    assert recorder.batches == [[1]]  # the rest wait for the batch in flight
    gate.set()
    assert await first == 10
    assert [await t for t in rest] == [20, 30, 40, 50, 60]
    assert recorder.batches == [[1], [2, 3, 4, 5, 6]]


async def test_batches_are_bounded_in_size() -> None:
    recorder = Recorder()
    batcher = LiveBatcher("t", recorder.run, max_size=4)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(10))) == [
        i * 10 for i in range(10)
    ]
    assert [len(b) for b in recorder.batches] == [4, 4, 2]


async def test_one_items_exception_reaches_only_its_caller() -> None:
    batcher = LiveBatcher("t", Recorder().run)
    answers = await batcher.submit_many([1, -2, 3])
    assert (answers[0], answers[2]) == (10, 30)
    assert isinstance(answers[1], ValueError)


async def test_a_failed_batch_fails_each_of_its_items_and_the_next_batch_still_runs() -> None:
    calls = 0

    async def flaky(items: Sequence[int]) -> list[int | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("down")
        return list(items)

    batcher: LiveBatcher[int, int] = LiveBatcher("t", flaky)
    answers = await batcher.submit_many([1, 2])
    assert all(isinstance(a, ConnectionError) for a in answers)
    assert await batcher.submit(5) == 5


async def test_a_caller_that_gives_up_drops_its_item_not_the_batch() -> None:
    gate = asyncio.Event()
    recorder = Recorder(gate)
    batcher = LiveBatcher("t", recorder.run)
    first = asyncio.create_task(batcher.submit(1))
    await turns()
    impatient = asyncio.create_task(batcher.submit(2))
    patient = asyncio.create_task(batcher.submit(3))
    await asyncio.sleep(0)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    gate.set()
    assert await first == 10
    assert await patient == 30
    assert recorder.batches == [[1], [3]]  # 2 never went


async def test_a_caller_that_gives_up_mid_batch_leaves_the_batch_to_finish() -> None:
    gate = asyncio.Event()
    recorder = Recorder(gate)
    batcher = LiveBatcher("t", recorder.run)
    leaving = asyncio.create_task(batcher.submit(1))
    staying = asyncio.create_task(batcher.submit(2))
    await turns()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(leaving), 0.01)
    leaving.cancel()
    gate.set()
    assert await staying == 20
    assert recorder.batches == [[1, 2]]


async def test_a_batch_runs_in_the_context_of_its_first_caller() -> None:
    gate = asyncio.Event()
    recorder = Recorder(gate)
    batcher = LiveBatcher("t", recorder.run)

    async def as_caller(name: str, item: int) -> int:
        CALLER.set(name)
        return await batcher.submit(item)

    first = asyncio.create_task(as_caller("a", 1))
    await turns()
    second = asyncio.create_task(as_caller("b", 2))
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(first, second)
    assert recorder.contexts == ["a", "b"]


async def test_in_flight_lets_that_many_batches_run_at_once() -> None:
    gate = asyncio.Event()
    recorder = Recorder(gate)
    batcher = LiveBatcher("t", recorder.run, in_flight=2)
    tasks = [asyncio.create_task(batcher.submit(1))]
    await turns()
    tasks.append(asyncio.create_task(batcher.submit(2)))
    await turns()
    assert recorder.batches == [[1], [2]]
    gate.set()
    assert [await t for t in tasks] == [10, 20]


async def test_a_batch_is_not_bound_by_its_first_callers_deadline() -> None:
    seen: list[float | None] = []

    async def run(items: Sequence[int]) -> list[int]:
        seen.append(remaining_s())
        return list(items)

    batcher: LiveBatcher[int, int] = LiveBatcher("deadline", run)
    with call_deadline(0.2):  # a caller in a hurry: its neighbours are not
        assert await batcher.submit(1) == 1
        assert remaining_s() is not None
    assert seen == [None]


async def test_batches_in_quick_succession_are_spaced_out_and_a_lone_item_is_not() -> None:
    starts: list[float] = []
    batches: list[list[int]] = []

    async def run(items: Sequence[int]) -> list[int]:
        starts.append(asyncio.get_running_loop().time())
        batches.append(list(items))
        return list(items)

    batcher: LiveBatcher[int, int] = LiveBatcher("spaced", run, min_interval_s=0.2)
    assert await batcher.submit(1) == 1  # the first goes at once
    second = asyncio.create_task(batcher.submit(2))
    await turns()
    assert batches == [[1]]  # too soon after the first: it waits, and gathers company
    third = asyncio.create_task(batcher.submit(3))
    assert [await second, await third] == [2, 3]
    assert batches == [[1], [2, 3]]
    assert starts[1] - starts[0] >= 0.2
    await asyncio.sleep(0.25)  # quiet for longer than the interval
    fourth = asyncio.create_task(batcher.submit(4))
    await turns()
    assert batches[-1] == [4]  # a lone item after a quiet spell is not held back
    assert await fourth == 4


async def test_a_full_batch_is_not_held_back_by_the_spacing() -> None:
    """Spacing lets a batch gather company; one already full gathers nothing more by
    waiting. Held back, a batcher of two items every 10 s would do 0.2 items a second
    whatever the load (one item per batch and 50 ms had capped the work after the
    answers at 20 orders a second)."""
    batches: list[list[int]] = []

    async def run(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        return list(items)

    batcher: LiveBatcher[int, int] = LiveBatcher("full", run, max_size=2, min_interval_s=10)
    assert await batcher.submit(1) == 1
    second = asyncio.create_task(batcher.submit(2))
    await turns()
    assert batches == [[1]]  # alone and too soon: it waits for company
    third = asyncio.create_task(batcher.submit(3))  # now a full batch: it goes
    assert list(await asyncio.wait_for(asyncio.gather(second, third), 1)) == [2, 3]
    many = [asyncio.create_task(batcher.submit(i)) for i in range(4, 9)]
    # Two full batches go at once; the fifth item waits out the spacing.
    _, pending = await asyncio.wait(many, timeout=1)
    assert batches == [[1], [2, 3], [4, 5], [6, 7]]
    assert [await t for t in many[:4]] == [4, 5, 6, 7]
    assert pending == {many[4]}
    many[4].cancel()


class Stuck:
    """A peer that holds any batch holding a negative item until ``release`` is set
    (a lock wait, say), and answers the others at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.batches: list[list[int]] = []

    async def run(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        if any(x < 0 for x in items):
            await self.release.wait()
        return list(items)


async def test_a_stalled_batch_lets_what_queued_behind_it_go() -> None:
    from prometheus_client import REGISTRY

    def stalls() -> float:
        return REGISTRY.get_sample_value("ordermesh_batch_stalls_total", {"batcher": "stall"}) or 0

    before = stalls()
    peer = Stuck()
    batcher: LiveBatcher[int, int] = LiveBatcher("stall", peer.run, stall_s=0.05)
    stuck = asyncio.create_task(batcher.submit(-1))
    await turns()
    behind = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
    await turns()
    assert peer.batches == [[-1]]  # a batch in flight, not stalled yet: the rest wait
    assert list(await asyncio.wait_for(asyncio.gather(*behind), 1)) == [1, 2]
    assert peer.batches == [[-1], [1, 2]]
    assert stalls() - before == 1
    assert not stuck.done()  # the stalled batch goes on for its own item
    peer.release.set()
    assert await stuck == -1
    # Its place is back: a batch in flight holds the next one again.
    peer.release.clear()
    held = asyncio.create_task(batcher.submit(-2))
    await turns()
    after = asyncio.create_task(batcher.submit(3))
    await turns()
    assert peer.batches[-1] == [-2]
    peer.release.set()
    assert [await held, await after] == [-2, 3]
    assert peer.batches[-2:] == [[-2], [3]]


async def test_a_batch_quicker_than_the_stall_time_holds_the_next_as_before() -> None:
    gate = asyncio.Event()
    recorder = Recorder(gate)
    batcher = LiveBatcher("t", recorder.run, stall_s=10)
    first = asyncio.create_task(batcher.submit(1))
    await turns()
    second = asyncio.create_task(batcher.submit(2))
    await asyncio.sleep(0.05)
    assert recorder.batches == [[1]]
    gate.set()
    assert [await first, await second] == [10, 20]
    assert recorder.batches == [[1], [2]]


async def test_no_more_than_max_stalled_batches_are_left_running() -> None:
    """A peer that answers nothing is sent ``max_stalled`` + ``in_flight`` batches at
    most; the queue waits for one of them to end."""
    peer = Stuck()
    batcher: LiveBatcher[int, int] = LiveBatcher("t", peer.run, stall_s=0.02, max_stalled=2)
    stuck = []
    for i in (1, 2, 3, 4):
        stuck.append(asyncio.create_task(batcher.submit(-i)))
        await asyncio.sleep(0.05)  # each batch stalls in turn, up to the bound
    assert peer.batches == [[-1], [-2], [-3]]  # two stalled and one in flight
    waiting = asyncio.create_task(batcher.submit(5))
    await asyncio.sleep(0.1)
    assert peer.batches == [[-1], [-2], [-3]]
    peer.release.set()
    assert list(await asyncio.wait_for(asyncio.gather(*stuck, waiting), 1)) == [-1, -2, -3, -4, 5]
    assert peer.batches[3:] == [[-4, 5]]


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="min_interval_s"):
        LiveBatcher("t", Recorder().run, min_interval_s=-1)


def test_a_stall_time_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="stall_s"):
        LiveBatcher("t", Recorder().run, stall_s=0)


async def test_each_batch_s_run_time_and_each_item_s_wait_are_on_metrics() -> None:
    """A batch's run time (start to answers) and an item's wait for its batch, each a
    histogram labelled by batcher: with the two, an item's time in a batcher is known."""
    from prometheus_client import REGISTRY

    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"batcher": "timed"}) or 0.0

    runs, waits = (
        sample("ordermesh_batch_duration_seconds_count"),
        sample("ordermesh_batch_queue_wait_seconds_count"),
    )
    ran_s = sample("ordermesh_batch_duration_seconds_sum")

    async def slow(items: Sequence[int]) -> list[int]:
        await asyncio.sleep(0.05)
        return list(items)

    batcher = LiveBatcher("timed", slow)
    first = asyncio.create_task(batcher.submit(1))
    await turns()
    assert list(await asyncio.gather(first, batcher.submit(2), batcher.submit(3))) == [1, 2, 3]
    assert sample("ordermesh_batch_duration_seconds_count") - runs == 2  # [1], then [2, 3]
    assert sample("ordermesh_batch_duration_seconds_sum") - ran_s >= 0.1
    assert sample("ordermesh_batch_queue_wait_seconds_count") - waits == 3
