"""The run's connection report counts connections as they are opened."""

from __future__ import annotations

import asyncio

import asyncpg

from tests.support.connections import APPLICATION_NAME, ConnectionWatch
from tests.support.postgres import SERVER_URL


async def test_the_watch_sees_connections_opened_after_it_started() -> None:
    watch = ConnectionWatch(SERVER_URL, interval_s=0.05)
    await asyncio.to_thread(watch.start)
    try:
        assert watch.baseline is not None
        assert watch.limit > 0
        held = [await asyncpg.connect(f"{SERVER_URL}/postgres") for _ in range(3)]
        try:
            for _ in range(100):  # bounded: 5 s
                if watch.peak >= watch.baseline + 3:
                    break
                await asyncio.sleep(0.05)
        finally:
            for conn in held:
                await conn.close()
    finally:
        await asyncio.to_thread(watch.stop)
    assert watch.peak - watch.baseline >= 3, watch.summary()
    assert f"of {watch.limit}" in watch.summary()


async def test_the_watch_carries_on_when_the_server_drops_its_connection() -> None:
    """As when a test restarts PostgreSQL: the watch connects again, no thread dies."""
    watch = ConnectionWatch(SERVER_URL, interval_s=0.05)
    await asyncio.to_thread(watch.start)
    admin = await asyncpg.connect(f"{SERVER_URL}/postgres")
    try:
        dropped = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1",
            APPLICATION_NAME,
        )
        assert dropped >= 1
        assert watch.baseline is not None
        before = watch.peak
        held = [await asyncpg.connect(f"{SERVER_URL}/postgres") for _ in range(4)]
        try:
            for _ in range(100):  # bounded: 5 s (the watch waits 1 s before connecting again)
                if watch.peak >= before + 4:
                    break
                await asyncio.sleep(0.05)
        finally:
            for conn in held:
                await conn.close()
    finally:
        await admin.close()
        await asyncio.to_thread(watch.stop)
    assert watch.peak >= before + 4, watch.summary()
