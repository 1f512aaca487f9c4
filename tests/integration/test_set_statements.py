"""``insert_rows`` and ``update_rows``: one statement for a batch, on both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ordermesh_platform.db import (
    insert_rows,
    one_of,
    update_rows,
)
from tests.support.tables import engine_with

pytestmark = pytest.mark.integration

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
metadata = MetaData()
items = Table(
    "items",
    metadata,
    Column("sku", String(16), primary_key=True),
    Column("quantity", BigInteger, nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("seen_at", DateTime(timezone=True), nullable=False, default=lambda: NOW),
)


@pytest.fixture
async def engine(any_database: str) -> AsyncIterator[AsyncEngine]:
    async with engine_with(any_database, metadata) as engine:
        yield engine


async def table_rows(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        result = await conn.execute(select(items.c.sku, items.c.quantity, items.c.version))
        return sorted(tuple(r) for r in result)


async def test_insert_rows_skips_conflicts_within_and_across_batches(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        written = await insert_rows(
            conn,
            items,
            [{"sku": "a", "quantity": 1}, {"sku": "b", "quantity": 2}, {"sku": "a", "quantity": 9}],
            conflict=("sku",),
            returning=("sku",),
        )
        assert sorted(r.sku for r in written) == ["a", "b"]
    async with engine.begin() as conn:
        again = await insert_rows(
            conn,
            items,
            [{"sku": "b", "quantity": 5}, {"sku": "c", "quantity": 3}],
            conflict=("sku",),
            returning=("sku",),
        )
        assert [r.sku for r in again] == ["c"]
    assert await table_rows(engine) == [("a", 1, 1), ("b", 2, 1), ("c", 3, 1)]


async def test_insert_rows_with_update_upserts(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await insert_rows(conn, items, [{"sku": "a", "quantity": 1, "version": 1}])
    async with engine.begin() as conn:
        await insert_rows(
            conn,
            items,
            [{"sku": "a", "quantity": 7, "version": 3}, {"sku": "b", "quantity": 2, "version": 1}],
            conflict=("sku",),
            update=("quantity",),
        )
    # The existing row takes the updated column only; the new one is inserted whole.
    assert await table_rows(engine) == [("a", 7, 1), ("b", 2, 1)]


async def test_one_of_picks_the_rows_with_those_keys(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await insert_rows(conn, items, [{"sku": s, "quantity": 1} for s in "abcd"])
    postgres = engine.dialect.name == "postgresql"
    query = select(items.c.sku).where(one_of(items.c.sku, "skus", postgres))
    async with engine.connect() as conn:
        for keys in (["b", "d", "x"], ["a"], []):
            found = (await conn.execute(query, {"skus": keys})).scalars().all()
            assert sorted(found) == sorted(set(keys) & set("abcd"))


async def test_insert_rows_takes_more_rows_than_one_statement_has_binds(
    engine: AsyncEngine,
) -> None:
    rows = [{"sku": f"s{i:05d}", "quantity": i} for i in range(12_000)]
    async with engine.begin() as conn:
        await insert_rows(conn, items, rows)
    assert len(await table_rows(engine)) == 12_000


async def test_update_rows_matches_sets_and_adds(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await insert_rows(conn, items, [{"sku": s, "quantity": 10} for s in "abc"])
    async with engine.begin() as conn:
        changed = await update_rows(
            conn,
            items,
            [
                {"b_sku": "a", "b_version": 1, "version": 2, "add_quantity": -3},
                {"b_sku": "b", "b_version": 7, "version": 8, "add_quantity": -3},  # stale
                {"b_sku": "z", "b_version": 1, "version": 2, "add_quantity": 1},  # missing
                {"b_sku": "c", "b_version": 1, "version": 2, "add_quantity": 5},
            ],
            returning=("sku",),
        )
        assert sorted(r.sku for r in changed) == ["a", "c"]
    assert await table_rows(engine) == [("a", 7, 2), ("b", 10, 1), ("c", 15, 2)]
