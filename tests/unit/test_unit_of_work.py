"""The unit of work that owns the outbox, on SQLite: recorded events become outbox rows
only when the unit commits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ordermesh.events.v1 import events_pb2
from ordermesh_messaging.events import DomainEvent
from ordermesh_messaging.unit_of_work import UnitsOfWork
from ordermesh_order.domain import Order, PlaceOrder
from ordermesh_order.store import NewOrder, OrderRepository, orders, outbox
from ordermesh_platform.db import Transactions, create_engine
from ordermesh_platform.migrations import upgrade_to_head


@pytest.fixture
async def units(tmp_path: Path) -> AsyncIterator[UnitsOfWork]:
    url = f"sqlite+aiosqlite:///{tmp_path}/order.db"
    await upgrade_to_head("ordermesh_order:migrations", url, "order")
    engine = create_engine(url)
    yield UnitsOfWork(Transactions(engine), outbox)
    await engine.dispose()


def _confirmed(order_id: str) -> DomainEvent:
    return DomainEvent("order", order_id, events_pb2.OrderConfirmed(order_id=order_id))


async def _outbox_ids(units: UnitsOfWork) -> list[str]:
    async with units.read() as conn:
        rows = await conn.execute(select(outbox.c.aggregate_id).order_by(outbox.c.seq))
        return list(rows.scalars())


async def test_events_recorded_in_a_unit_reach_the_outbox_when_it_commits(
    units: UnitsOfWork,
) -> None:
    async with units.begin() as work:
        work.record([_confirmed("o-1")])
        work.record(_confirmed(i) for i in ("o-2", "o-3"))
        # Not yet written: the unit writes them as its last step.
        assert await work.connection.scalar(select(func.count()).select_from(outbox)) == 0
    assert await _outbox_ids(units) == ["o-1", "o-2", "o-3"]


async def test_a_unit_that_fails_writes_neither_its_change_nor_its_events(
    units: UnitsOfWork,
) -> None:
    order = Order.place("o-9", PlaceOrder.validated("c", "k", [("A", 1)], "EUR", "t"))

    async def write_then_fail() -> None:
        async with units.begin() as work:
            await OrderRepository(work.connection).add(order, "me", order.created_at)
            work.record(order.pull_events())
            raise RuntimeError("injected failure before the commit")

    with pytest.raises(RuntimeError, match="injected"):
        await write_then_fail()
    assert await _outbox_ids(units) == []
    async with units.read() as conn:
        assert await conn.scalar(select(func.count()).select_from(orders)) == 0


async def test_a_unit_that_records_nothing_writes_no_outbox_row(units: UnitsOfWork) -> None:
    async with units.begin():
        pass
    assert await _outbox_ids(units) == []


def _new(order_id: str, key: str) -> NewOrder:
    order = Order.place(order_id, PlaceOrder.validated("c", key, [("A", 1)], "EUR", "t"))
    return NewOrder(order, "me", order.created_at, "", "")


async def test_a_single_statement_unit_writes_the_events_of_what_it_wrote(
    units: UnitsOfWork,
) -> None:
    async with units.single() as work:
        await work.write(*OrderRepository.insert_writes([_new("o-1", "k1")]))
    batch = [_new("o-2", "k1"), _new("o-3", "k3")]  # o-2 replays k1: it writes nothing
    async with units.single() as work:
        work.record(event for new in batch for event in new.order.pull_events())
        written = await work.write(*OrderRepository.insert_writes(batch), events_of_written=True)
    assert [row.order_id for row in written] == ["o-3"]
    assert await _outbox_ids(units) == ["o-3"]


async def test_a_single_statement_unit_refuses_a_second_write_or_a_late_event(
    units: UnitsOfWork,
) -> None:
    async def write_twice() -> None:
        async with units.single() as work:
            await work.write(*OrderRepository.insert_writes([_new("o-1", "k1")]))
            await work.write(*OrderRepository.insert_writes([_new("o-2", "k2")]))

    async def record_late() -> None:
        async with units.single() as work:
            await work.write(*OrderRepository.insert_writes([_new("o-3", "k3")]))
            work.record([_confirmed("o-3")])

    with pytest.raises(RuntimeError, match="writes once"):
        await write_twice()
    with pytest.raises(RuntimeError, match="after the unit's one write"):
        await record_late()
