"""``ordermesh_db_statements_total`` counts what the driver sends: transaction control
only where the connection is in a transaction, not for autocommit reads and
one-statement units, which SQLAlchemy still opens and closes with its events."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ordermesh_platform.db import Transactions, count_statements, create_engine, ensure_database

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(pg_database: str) -> AsyncIterator[AsyncEngine]:
    await ensure_database(pg_database)
    engine = create_engine(pg_database, pool_size=1)
    count_statements(engine, "counted")
    try:
        yield engine
    finally:
        await engine.dispose()


def counted() -> float:
    return REGISTRY.get_sample_value("ordermesh_db_statements_total", {"service": "counted"}) or 0.0


async def test_a_transaction_counts_its_begin_and_commit(engine: AsyncEngine) -> None:
    before = counted()
    async with Transactions(engine).begin() as conn:
        await conn.execute(text("SELECT 1"))
    assert counted() - before == 3


async def test_a_read_and_a_single_statement_unit_count_their_statement_only(
    engine: AsyncEngine,
) -> None:
    transactions = Transactions(engine)
    before = counted()
    async with transactions() as conn:
        await conn.execute(text("SELECT 1"))
    async with transactions.single_statement() as conn:
        await conn.execute(text("SELECT 2"))
    assert counted() - before == 2


async def test_a_rolled_back_transaction_counts_its_rollback(engine: AsyncEngine) -> None:
    async def undone() -> None:
        async with Transactions(engine).begin() as conn:
            await conn.execute(text("SELECT 1"))
            raise RuntimeError("undone")

    before = counted()
    with pytest.raises(RuntimeError):
        await undone()
    assert counted() - before == 3
