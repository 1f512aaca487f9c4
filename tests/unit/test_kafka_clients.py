"""A Kafka client whose start fails or is cancelled is stopped, not left open."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from ordermesh_messaging.clients import start_or_stop, stop


class Client:
    def __init__(self, start: Any) -> None:
        self._start = start
        self.stopped = False

    async def start(self) -> None:
        await self._start()

    async def stop(self) -> None:
        self.stopped = True


async def test_a_started_client_is_left_running() -> None:
    async def ok() -> None:
        return None

    client = Client(ok)
    await start_or_stop(cast(Any, client))
    assert not client.stopped


async def test_a_failed_start_stops_the_client_and_raises() -> None:
    async def refused() -> None:
        raise ConnectionError("broker away")

    client = Client(refused)
    with pytest.raises(ConnectionError):
        await start_or_stop(cast(Any, client))
    assert client.stopped


async def test_a_start_cancelled_midway_stops_the_client() -> None:
    joining = asyncio.Event()

    async def join_forever() -> None:
        joining.set()
        await asyncio.Event().wait()

    client = Client(join_forever)
    task = asyncio.create_task(start_or_stop(cast(Any, client)))
    await joining.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert client.stopped


class Stuck:
    """A client whose stop never ends, as aiokafka's consumer's while a group join it
    waits for is held up by a rebalance."""

    def __init__(self) -> None:
        self.cancelled = False

    async def stop(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def test_a_stop_that_never_ends_is_given_up_after_its_bound() -> None:
    client = Stuck()
    await asyncio.wait_for(stop(cast(Any, client), bound_s=0.1), 5)
    assert client.cancelled


async def test_a_stop_that_fails_is_not_raised() -> None:
    class Failing:
        async def stop(self) -> None:
            raise ConnectionError("broker away")

    await stop(cast(Any, Failing()), bound_s=1)
