"""The recovery worker's scan reads only the orders that owe work, however many are settled.

A long run found it reading the whole orders table once a second (0.2 s a pass at
140,000 orders): the cost per order then grew with every order ever placed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ordermesh_cli.registry import load_service
from ordermesh_order.domain import Order, PlaceOrder
from ordermesh_order.store import NewOrder, OrderRepository
from ordermesh_platform.db import create_engine
from ordermesh_platform.migrations import upgrade_to_head

pytestmark = pytest.mark.integration

SETTLED = 20_000
# Two owe work with an expired lease; one owes work under a live lease (not due).
OWING = {"owing-old": -120, "owing-new": -60, "leased": 3600}

_INSERT = """
INSERT INTO orders (order_id, customer_id, idempotency_key, request_hash, state, currency,
    payment_token, reason_detail, reason_metadata, payment_id, work, lease_owner,
    lease_until, version, created_at, updated_at)
SELECT CAST(:prefix AS text) || i, 'c', CAST(:prefix AS text) || i, 'h', :state, 'EUR', 't',
    '', '{}', '', :work, '', CAST(:lease_until AS timestamptz), 1,
    CAST(:created_at AS timestamptz) + i * interval '1 millisecond',
    CAST(:created_at AS timestamptz)
FROM generate_series(1, CAST(:n AS integer)) AS i
"""


async def _add_orders(
    conn: AsyncConnection,
    prefix: str,
    n: int,
    created_at: datetime,
    state: str = "PENDING",
    work: str = "FORWARD",
    lease_until: datetime | None = None,
) -> None:
    """``n`` orders ``<prefix>1`` to ``<prefix>n``, created a millisecond apart."""
    await conn.execute(
        text(_INSERT),
        {"prefix": prefix, "state": state, "work": work, "lease_until": lease_until,
         "created_at": created_at, "n": n},
    )  # fmt: skip


def _statements_sent(engine: AsyncEngine) -> list[str]:
    """The text of every statement the engine sends from now on, in order."""
    statements: list[str] = []
    event.listen(
        engine.sync_engine,
        "before_cursor_execute",
        lambda _c, _cur, statement, *_: statements.append(statement),
    )
    return statements


@pytest.fixture
async def engine(pg_database: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh order-service database at its latest schema."""
    spec = load_service("order")
    await upgrade_to_head(spec.migrations, pg_database, spec.name)
    engine = create_engine(pg_database)
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_the_scan_takes_the_index_of_owing_orders_and_finds_them_oldest_first(
    engine: AsyncEngine,
) -> None:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await _add_orders(
            conn, "done-", SETTLED, now - timedelta(days=1), state="CONFIRMED", work=""
        )
        for order_id, lease_s in OWING.items():
            leased = now + timedelta(seconds=lease_s)
            await _add_orders(conn, order_id, 1, leased, lease_until=leased)
        await conn.execute(text("ANALYZE orders"))

    sent: list[tuple[str, Any]] = []

    def record(_c: Connection, _cur: object, statement: str, params: Any, *_: object) -> None:
        if "lease_until" in statement and statement.lstrip().startswith("SELECT"):
            sent.append((statement, params))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    async with engine.connect() as conn:
        due = await OrderRepository(conn).with_work_due(now, limit=50)
        assert [d.order_id for d in due] == ["owing-old1", "owing-new1"]

        statement, params = sent[-1]
        plan = "\n".join(
            row[0] for row in (await conn.exec_driver_sql(f"EXPLAIN {statement}", params)).all()
        )
    assert "ix_orders_owing_work" in plan, plan
    assert "Seq Scan" not in plan, plan


async def test_the_recovered_orders_are_read_at_once_with_their_lines(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await _add_orders(conn, "owing-", 3, now)
        await conn.execute(
            text(
                "INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_minor)"
                " VALUES ('owing-1', 0, 'SKU-A', 2, 0), ('owing-1', 1, 'SKU-B', 1, 0),"
                " ('owing-3', 0, 'SKU-C', 5, 0)"
            )
        )
    statements = _statements_sent(engine)
    async with engine.connect() as conn:
        found = await OrderRepository(conn).get_many(["owing-1", "owing-3", "missing"])
    assert sorted(found) == ["owing-1", "owing-3"]
    assert [(x.sku, x.quantity) for x in found["owing-1"].lines] == [("SKU-A", 2), ("SKU-B", 1)]
    assert [(x.sku, x.quantity) for x in found["owing-3"].lines] == [("SKU-C", 5)]
    assert len(statements) == 2  # the orders, then every line of them


async def test_taking_leases_passes_over_an_order_another_transaction_writes(
    engine: AsyncEngine,
) -> None:
    # The saga's batch save and the lease heartbeat update the same orders: waiting on
    # each other's rows, PostgreSQL ended one of them with "deadlock detected".
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await _add_orders(conn, "o-", 2, now)
    until = now + timedelta(seconds=30)
    async with engine.connect() as writer:
        await writer.execute(text("UPDATE orders SET version = version WHERE order_id = 'o-1'"))
        async with engine.begin() as conn:
            taken = await asyncio.wait_for(
                OrderRepository(conn).take_leases(["o-1", "o-2"], "me", now, until), 10
            )
        assert taken == {"o-2"}  # at once: the row being written is left for the next beat
        await writer.rollback()
    async with engine.begin() as conn:
        assert await OrderRepository(conn).take_leases(["o-1", "o-2"], "me", now, until) == {
            "o-1",
            "o-2",
        }


async def test_the_lease_beat_and_the_recovery_read_send_one_text_for_any_count(
    engine: AsyncEngine,
) -> None:
    # The lease beat's count of orders changes every beat: one text per count meant a
    # statement prepared anew (with an IN list of hundreds) every 2.5 s.
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await _add_orders(conn, "n-", 5, now)
    statements = _statements_sent(engine)
    until = now + timedelta(seconds=30)
    for count in (1, 2, 5):
        ids = [f"n-{i}" for i in range(1, count + 1)]
        async with engine.begin() as conn:
            repository = OrderRepository(conn)
            assert await repository.take_leases(ids, "me", now, until) == set(ids)
            assert sorted(await repository.get_many(ids)) == sorted(ids)
    leases, orders, lines = (statements[i::3] for i in range(3))
    assert len(statements) == 9
    assert len(set(leases)) == len(set(orders)) == len(set(lines)) == 1


def _request(key: str) -> PlaceOrder:
    return PlaceOrder.validated("c", key, [("A", 1)], "EUR", "t")


async def test_replayed_keys_are_found_with_one_text_for_any_count(engine: AsyncEngine) -> None:
    # A retry storm replays a different number of (customer, key) pairs in each batch:
    # one text per count meant a statement prepared anew for nearly every batch.
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await _add_orders(conn, "k-", 5, now)
    statements = _statements_sent(engine)
    for count in (1, 2, 5):
        replays = [
            NewOrder(Order.place(f"new-{i}", _request(f"k-{i}")), "me", now, "", "")
            for i in range(1, count + 1)
        ]
        async with engine.connect() as conn:
            found = await OrderRepository(conn).existing(replays, written=set())
        # Each replay answered with the order its key names already, in replay order.
        assert [order.order_id if order else None for order in found] == [
            f"k-{i}" for i in range(1, count + 1)
        ]
    orders, lines = statements[0::2], statements[1::2]
    assert len(statements) == 6
    assert len(set(orders)) == len(set(lines)) == 1
