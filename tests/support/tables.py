"""An engine on a test database with a test's own tables created."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

from ordermesh_platform.db import create_engine, ensure_database


@asynccontextmanager
async def engine_with(url: str, metadata: MetaData) -> AsyncIterator[AsyncEngine]:
    """The database at ``url`` (created when missing) with ``metadata``'s tables."""
    await ensure_database(url)
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        yield engine
    finally:
        await engine.dispose()
