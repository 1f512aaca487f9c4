"""Waiting for a service's relay to have published everything its outbox held."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ordermesh_platform.db import create_engine


async def outbox_rows(engine: AsyncEngine) -> int:
    """Rows still in the outbox: the relay deletes each once the broker acknowledged it."""
    async with engine.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM outbox")) or 0)


async def until_outbox_empty(database: AsyncEngine | str, timeout_s: float = 30.0) -> None:
    """Until every event the outbox held is on its topic (bounded)."""
    engine = create_engine(database) if isinstance(database, str) else database
    try:
        deadline = time.monotonic() + timeout_s
        while (left := await outbox_rows(engine)) > 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"{left} outbox rows were never published")
            await asyncio.sleep(0.1)
    finally:
        if engine is not database:
            await engine.dispose()
