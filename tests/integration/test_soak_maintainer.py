"""The soak's stand-in for autovacuum, on the real PostgreSQL: it vacuums and analyses
only where the server would not do it itself."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from ordermesh_bench.soak import Maintainer
from ordermesh_platform.db import autovacuum_is_off, create_engine, ensure_database

pytestmark = pytest.mark.integration


async def test_the_soak_analyses_the_tables_exactly_when_the_server_never_does(
    pg_database: str,
) -> None:
    await ensure_database(pg_database)
    engine = create_engine(pg_database, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t AS SELECT generate_series(1, 1000) AS n"))
        server_never_vacuums = await autovacuum_is_off(engine)
        maintainer = Maintainer([pg_database], every_s=0.05)
        running = asyncio.create_task(maintainer.run())
        for _ in range(100):  # bounded: about 5 s
            if maintainer.passes or running.done():
                break
            await asyncio.sleep(0.05)
        running.cancel()
        async with engine.connect() as conn:
            analysed = await conn.scalar(
                text("SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 't'")
            )
    finally:
        await engine.dispose()
    assert bool(maintainer.passes) is server_never_vacuums
    assert analysed is server_never_vacuums


async def test_with_no_database_the_soak_maintains_nothing() -> None:
    maintainer = Maintainer([], every_s=0.01)
    await asyncio.wait_for(maintainer.run(), 1)
    assert maintainer.passes == 0
