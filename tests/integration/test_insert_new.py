"""``insert_new``: ON CONFLICT inserts on both databases, compiled once per shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, event, select
from sqlalchemy.engine import Connection
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.engine.interfaces import CacheStats
from sqlalchemy.ext.asyncio import AsyncEngine

from ordermesh_platform.db import insert_new
from tests.support.tables import engine_with

pytestmark = pytest.mark.integration

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
metadata = MetaData()
items = Table(
    "items",
    metadata,
    Column("sku", String(16), primary_key=True),
    Column("name", String(32), nullable=False),
    Column("quantity", Integer, nullable=False, default=7),
    Column("note", String(32), nullable=False, server_default="server"),
    Column("seen_at", DateTime(timezone=True), nullable=False, default=lambda: NOW),
)


@pytest.fixture
async def engine(any_database: str) -> AsyncIterator[AsyncEngine]:
    async with engine_with(any_database, metadata) as engine:
        yield engine


async def rows(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        result = await conn.execute(select(items).order_by(items.c.sku))
        # SQLite gives the stored UTC time back without its zone.
        return [(*r[:4], r[4].replace(tzinfo=UTC)) for r in result]


async def test_new_rows_are_written_and_existing_ones_skipped(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        first = [{"sku": "a", "name": "A"}, {"sku": "b", "name": "B"}]
        assert await insert_new(conn, items, first, conflict=("sku",)) == 2
        again = [{"sku": "b", "name": "changed"}, {"sku": "c", "name": "C"}]
        assert await insert_new(conn, items, again, conflict=("sku",)) == 1
        assert await insert_new(conn, items, [], conflict=("sku",)) == 0
    # Python-side defaults are filled in as a Core insert fills them; the server's
    # default applies to a column that has only that.
    assert await rows(engine) == [
        ("a", "A", 7, "server", NOW),
        ("b", "B", 7, "server", NOW),
        ("c", "C", 7, "server", NOW),
    ]


async def test_update_overwrites_only_the_named_columns(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await insert_new(conn, items, [{"sku": "a", "name": "A", "quantity": 1}], conflict=("sku",))
        changed = [{"sku": "a", "name": "renamed", "quantity": 2}]
        assert await insert_new(conn, items, changed, conflict=("sku",), update=("name",)) == 1
    assert await rows(engine) == [("a", "renamed", 1, "server", NOW)]


async def test_the_statement_is_compiled_once_and_then_cached(engine: AsyncEngine) -> None:
    # SQLAlchemy 2.0's dialect ON CONFLICT constructs have no cache key and were
    # compiled on every execution; insert_new's must hit the compiled cache.
    seen: list[object] = []

    def record(conn: Connection, cursor: object, statement: str, *args: object) -> None:
        context = args[-2]
        assert isinstance(context, DefaultExecutionContext)
        if statement.startswith("INSERT INTO items"):
            seen.append(context.cache_hit)

    event.listen(engine.sync_engine, "after_cursor_execute", record)
    async with engine.begin() as conn:
        for sku in ("a", "b", "c"):
            await insert_new(conn, items, [{"sku": sku, "name": sku}], conflict=("sku",))
    assert seen == [CacheStats.CACHE_MISS, CacheStats.CACHE_HIT, CacheStats.CACHE_HIT]
