"""``write_together``: a unit of work's writes as one statement on PostgreSQL, the same
result on SQLite, and later writes kept to what the first one wrote."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import BigInteger, Column, ForeignKey, Integer, MetaData, String, Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ordermesh_platform.writes import Rows, write_together
from tests.support.statements import statements
from tests.support.tables import engine_with

pytestmark = pytest.mark.integration

metadata = MetaData()
heads = Table(
    "heads",
    metadata,
    Column("head_id", String(16), primary_key=True),
    Column("key", String(16), nullable=False, unique=True),
)
lines = Table(
    "lines",
    metadata,
    Column("head_id", String(16), ForeignKey("heads.head_id"), primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("quantity", BigInteger, nullable=False),
)
totals = Table(
    "totals",
    metadata,
    Column("name", String(16), primary_key=True),
    Column("quantity", BigInteger, nullable=False),
    Column("version", Integer, nullable=False, default=1),
)


@pytest.fixture
async def engine(any_database: str) -> AsyncIterator[AsyncEngine]:
    async with engine_with(any_database, metadata) as engine:
        async with engine.begin() as conn:
            await conn.execute(totals.insert().values(name="all", quantity=0, version=1))
        yield engine


async def rows_of(engine: AsyncEngine, table: Table) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return sorted(tuple(r) for r in await conn.execute(select(table)))


def writes(*placed: tuple[str, str, list[int]]) -> tuple[Rows, Rows, Rows]:
    """Heads by (head_id, key) with their lines, and the total they add."""
    return (
        Rows(
            heads,
            [{"head_id": h, "key": k} for h, k, _ in placed],
            conflict=("key",),
            returning=("head_id",),
        ),
        Rows(
            lines,
            [
                {"head_id": h, "line_no": i, "quantity": q}
                for h, _, quantities in placed
                for i, q in enumerate(quantities)
            ],
            only_written="head_id",
        ),
        Rows(
            totals,
            [{"b_name": "all", "add_quantity": sum(q for *_, qs in placed for q in qs)}],
            update=True,
        ),
    )


async def test_the_writes_land_together_and_skip_what_a_conflict_left_out(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        written = await write_together(conn, *writes(("h1", "k1", [1, 2])))
    assert [r.head_id for r in written] == ["h1"]
    async with engine.begin() as conn:
        # h2 reuses k1 (skipped, and so are its lines); h3 is new; h3 again in the same
        # batch is skipped as a conflict with the row just written.
        written = await write_together(
            conn, *writes(("h2", "k1", [5]), ("h3", "k3", [7]), ("h4", "k3", [9]))
        )
    assert [r.head_id for r in written] == ["h3"]
    assert await rows_of(engine, heads) == [("h1", "k1"), ("h3", "k3")]
    assert await rows_of(engine, lines) == [("h1", 0, 1), ("h1", 1, 2), ("h3", 0, 7)]
    # The total's update is not tied to the first write: it adds what it was given.
    assert await rows_of(engine, totals) == [("all", 24, 1)]


async def test_on_postgresql_the_writes_are_one_statement(engine: AsyncEngine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs them one after another, by design")
    with statements(engine) as seen:
        async with engine.begin() as conn:
            await write_together(conn, *writes(("h1", "k1", [1, 2]), ("h2", "k2", [3])))
    assert len(seen) == 1, seen
    assert await rows_of(engine, lines) == [("h1", 0, 1), ("h1", 1, 2), ("h2", 0, 3)]


async def test_a_failing_write_leaves_none_of_the_others(engine: AsyncEngine) -> None:
    # A line of a head that does not exist fails its foreign key, and the statement
    # takes the head and the total's update down with it.
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite does not enforce foreign keys here")
    bad = Rows(lines, [{"head_id": "nobody", "line_no": 0, "quantity": 1}])
    first, _, total = writes(("h1", "k1", [1]))
    with pytest.raises(Exception, match="foreign key"):
        async with engine.begin() as conn:
            await write_together(conn, first, bad, total)
    assert await rows_of(engine, heads) == []
    assert await rows_of(engine, totals) == [("all", 0, 1)]


async def test_only_the_first_write_returns_rows(engine: AsyncEngine) -> None:
    first, _, total = writes(("h1", "k1", [1]))
    async with engine.begin() as conn:
        with pytest.raises(ValueError, match="only the first write"):
            await write_together(conn, first, total._replace(returning=("name",)))


async def test_with_nothing_first_the_writes_that_do_not_depend_on_it_still_land(
    engine: AsyncEngine,
) -> None:
    first, lines_of_first, total = writes(("h1", "k1", [4]))
    async with engine.begin() as conn:
        written = await write_together(conn, first._replace(rows=[]), lines_of_first, total)
    assert written == []
    assert await rows_of(engine, lines) == []
    assert await rows_of(engine, totals) == [("all", 4, 1)]
