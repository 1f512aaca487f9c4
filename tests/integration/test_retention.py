"""Retention sweeps on PostgreSQL and SQLite: what is past its retention goes, in
bounded chunks, and nothing else does: a consumer's inbox keeps its young rows and
every other consumer's; notification keeps its young deliveries and every PENDING one,
and the running service sweeps by itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select

from ordermesh_cli.registry import load_service
from ordermesh_messaging.inbox import Inbox
from ordermesh_notification.domain import DeliveryState
from ordermesh_notification.store import deliveries, inbox
from ordermesh_notification.usecases import Notifications
from ordermesh_platform.db import Transactions, create_engine
from ordermesh_platform.migrations import upgrade_to_head
from tests.support.services import running_service

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)
RETENTION = 30 * DAY
# Delivery id: (days since it was created, its state). Past the retention: 400, 31 and
# 30.01 days; the PENDING ones stay whatever their age (a delivery still to be sent).
DELIVERIES = {
    "sent-400": (400, DeliveryState.SENT), "failed-31": (31, DeliveryState.FAILED),
    "sent-30.01": (30.01, DeliveryState.SENT), "pending-400": (400, DeliveryState.PENDING),
    "sent-29.9": (29.9, DeliveryState.SENT), "failed-2": (2, DeliveryState.FAILED),
    "pending-0": (0, DeliveryState.PENDING),
}  # fmt: skip
KEPT = {"pending-400", "sent-29.9", "failed-2", "pending-0"}


@pytest.fixture
async def sessions(any_database: str) -> AsyncIterator[Transactions]:
    spec = load_service("notification")
    await upgrade_to_head(spec.migrations, any_database, spec.name)
    engine = create_engine(any_database)
    now = datetime.now(UTC)
    rows = [
        {
            "notification_id": id_, "event_id": f"evt-{id_}", "event_type": "t",
            "customer_id": "c1", "order_id": f"ord-{id_}", "channel": "LOG",
            "state": state.value, "created_at": now - age * DAY,
            # Due tomorrow: the running service's worker leaves them alone.
            "next_attempt_at": now + DAY if state is DeliveryState.PENDING else None,
        }
        for id_, (age, state) in DELIVERIES.items()
    ]  # fmt: skip
    async with engine.begin() as conn:
        await conn.execute(insert(deliveries), rows)
    try:
        yield Transactions(engine)
    finally:
        await engine.dispose()


async def _deliveries_left(sessions: Transactions) -> set[str]:
    async with sessions() as conn:
        return set((await conn.scalars(select(deliveries.c.notification_id))).all())


async def test_finished_deliveries_past_the_retention_go_and_pending_ones_stay(
    sessions: Transactions,
) -> None:
    assert await Notifications(sessions).forget_finished(RETENTION) == 3
    assert await _deliveries_left(sessions) == KEPT
    assert await Notifications(sessions).forget_finished(RETENTION) == 0


async def test_the_inbox_forgets_its_own_old_rows_in_chunks(sessions: Transactions) -> None:
    now = datetime.now(UTC)
    ages = {"old-1": 9, "old-2": 8, "old-3": 7.01, "young-1": 6.9, "young-2": 0}
    rows = [
        {"consumer": consumer, "event_id": event_id, "handled_at": now - age * DAY}
        for consumer in ("notification", "other")
        for event_id, age in ages.items()
    ]
    async with sessions.begin() as conn:
        await conn.execute(insert(inbox), rows)
    mine = Inbox(inbox, "notification")

    assert await mine.forget_older_than(sessions, (7 * DAY).total_seconds()) == 3
    async with sessions() as conn:
        left = set((await conn.execute(select(inbox.c.consumer, inbox.c.event_id))).all())
    others = {("other", event_id) for event_id in ages}
    assert left == {("notification", "young-1"), ("notification", "young-2")} | others


async def test_the_running_service_sweeps_its_deliveries_by_itself(
    any_database: str, sessions: Transactions
) -> None:
    async with running_service(
        load_service("notification"),
        any_database,
        delivery_retention_days=RETENTION.days,
        delivery_sweep_interval_s=0.05,
    ):
        for _ in range(400):  # until the sweep's first pass is visible
            if await _deliveries_left(sessions) == KEPT:
                break
            await asyncio.sleep(0.05)
    assert await _deliveries_left(sessions) == KEPT
