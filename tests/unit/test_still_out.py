"""Calls a batch stopped waiting for (ordermesh_platform.still_out): each is out under
its key until it has answered and its answer is recorded."""

from __future__ import annotations

import asyncio
import contextlib

from ordermesh_platform.still_out import CallsStillOut, answered_within


async def test_a_call_is_out_until_its_answer_is_recorded() -> None:
    out: CallsStillOut[str] = CallsStillOut("test")
    answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    recorded: list[int] = []
    finish = asyncio.Event()

    async def record(value: int) -> None:
        await finish.wait()  # recording takes a while too
        recorded.append(value)

    out.record_when_answered("a", answer, record)
    assert "a" in out
    assert len(out) == 1
    answer.set_result(7)
    await asyncio.sleep(0.01)
    assert "a" in out  # answered, not yet recorded: still not to be asked again
    finish.set()
    await asyncio.wait_for(out.one_recorded(), 1)
    assert recorded == [7]
    assert "a" not in out
    assert len(out) == 0


async def test_a_failed_recording_frees_the_key_and_is_logged() -> None:
    out: CallsStillOut[str] = CallsStillOut("test")
    answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def record(value: int) -> None:
        raise RuntimeError("database away")

    out.record_when_answered("a", answer, record)
    answer.set_result(1)
    await asyncio.wait_for(out.one_recorded(), 1)
    assert "a" not in out  # asked again later, as after a crash


async def test_close_stops_the_calls_still_out_and_records_nothing() -> None:
    out: CallsStillOut[str] = CallsStillOut("test")
    call = asyncio.ensure_future(asyncio.sleep(60, result=1))
    recorded: list[int] = []

    async def record(value: int) -> None:
        recorded.append(value)

    out.record_when_answered("a", call, record)
    await asyncio.wait_for(out.close(), 1)
    assert call.cancelled()
    assert recorded == []
    assert len(out) == 0


async def test_waiting_for_one_recorded_returns_at_once_when_none_is_out() -> None:
    await asyncio.wait_for(CallsStillOut[str]("test").one_recorded(), 1)


async def test_calls_answered_within_the_wait_and_those_still_out() -> None:
    quick = asyncio.ensure_future(asyncio.sleep(0, result=1))
    slow = asyncio.ensure_future(asyncio.sleep(60, result=2))
    done, pending = await answered_within([quick, slow], 0.1)
    assert (done, pending) == ({quick}, {slow})
    assert not slow.cancelled()  # it goes on, for its caller to hand over
    slow.cancel()


async def test_a_wait_cancelled_cancels_every_call() -> None:
    calls = [asyncio.ensure_future(asyncio.sleep(60)) for _ in range(2)]
    waiting = asyncio.ensure_future(answered_within(calls, None))
    await asyncio.sleep(0)
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0)
    assert all(call.cancelled() for call in calls)
