"""The run's connection report counts connections as they are opened."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.support.connections import APPLICATION_NAME, ConnectionWatch
from tests.support.postgres import SERVER_URL

# The watch counts every client connection on the server, which another test process
# opens and closes as it goes: a rise of exactly those held here shows only when no
# other test runs (`make test` runs these alone).
pytestmark = pytest.mark.serial


@pytest.fixture
async def watch() -> AsyncIterator[ConnectionWatch]:
    watch = ConnectionWatch(SERVER_URL, interval_s=0.05)
    await asyncio.to_thread(watch.start)
    try:
        yield watch
    finally:
        await asyncio.to_thread(watch.stop)


async def _hold_until_seen(watch: ConnectionWatch, count: int) -> int:
    """Open ``count`` connections and hold them until the watch's peak has risen by
    as many (bounded: 5 s, which covers the watch's 1 s wait before connecting
    again); the peak it started from."""
    before = watch.peak
    held = [await asyncpg.connect(f"{SERVER_URL}/postgres") for _ in range(count)]
    try:
        for _ in range(100):
            if watch.peak >= before + count:
                break
            await asyncio.sleep(0.05)
    finally:
        for conn in held:
            await conn.close()
    return before


async def test_the_watch_sees_connections_opened_after_it_started(
    watch: ConnectionWatch,
) -> None:
    assert watch.baseline is not None
    assert watch.limit > 0
    before = await _hold_until_seen(watch, 3)
    assert watch.peak - before >= 3, watch.summary()
    assert f"of {watch.limit}" in watch.summary()


async def test_the_watch_carries_on_when_the_server_drops_its_connection(
    watch: ConnectionWatch,
) -> None:
    """As when a test restarts PostgreSQL: the watch connects again, no thread dies."""
    admin = await asyncpg.connect(f"{SERVER_URL}/postgres")
    try:
        dropped = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1",
            APPLICATION_NAME,
        )
    finally:
        await admin.close()
    assert dropped >= 1
    assert watch.baseline is not None
    before = await _hold_until_seen(watch, 4)
    assert watch.peak >= before + 4, watch.summary()
