"""The bench's relay runs: each starts from an outbox holding its own rows only."""

from __future__ import annotations

import asyncpg
import pytest

from ordermesh_bench.kafka_bench import fill_outbox, sample_events
from ordermesh_bench.rawsql import asyncpg_dsn
from ordermesh_cli.registry import load_service
from ordermesh_platform.migrations import upgrade_to_head

pytestmark = pytest.mark.integration


async def test_a_run_finds_only_its_own_rows_unpublished_and_nothing_earlier(
    pg_database: str,
) -> None:
    spec = load_service("order")
    await upgrade_to_head(spec.migrations, pg_database, spec.name)
    await fill_outbox(pg_database, sample_events(30))
    conn = await asyncpg.connect(asyncpg_dsn(pg_database))
    try:
        # As a relay run leaves it: every row published.
        await conn.execute("UPDATE outbox SET published_at = now()")
        second = sample_events(20)
        await fill_outbox(pg_database, second)
        rows = await conn.fetch("SELECT event_id, published_at FROM outbox")
    finally:
        await conn.close()
    assert sorted(str(r["event_id"]) for r in rows) == sorted(e for e, _, _ in second)
    assert all(r["published_at"] is None for r in rows)
