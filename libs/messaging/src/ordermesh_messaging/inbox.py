"""The inbox: which events a consumer has handled, written in the same transaction as
the handler's effect, so a redelivered event changes nothing."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ordermesh_platform.db import Transactions, delete_in_chunks, insert_rows


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("consumer", String(64), primary_key=True),
        Column("event_id", String(64), primary_key=True),
        Column("handled_at", DateTime(timezone=True), nullable=False),
        Index("ix_inbox_handled_at", "handled_at"),
    )


class Inbox:
    def __init__(self, table: Table, consumer: str) -> None:
        self.table = table
        self.consumer = consumer

    async def claim(self, session: AsyncConnection, event_ids: Iterable[str]) -> set[str]:
        """Record the events as handled, in one statement; the ids not handled before.
        On PostgreSQL a concurrent claim of the same event waits here until the first
        one finishes."""
        now = datetime.now(UTC)
        # Sorted: consumers claiming overlapping batches lock ids in one order (no deadlock).
        rows = [
            {"consumer": self.consumer, "event_id": event_id, "handled_at": now}
            for event_id in sorted(set(event_ids))
        ]
        claimed = await insert_rows(
            session, self.table, rows, conflict=("consumer", "event_id"), returning=("event_id",)
        )
        return {row.event_id for row in claimed}

    async def handled(self, session: AsyncConnection, event_id: str) -> bool:
        t = self.table
        found = await session.scalar(
            select(t.c.event_id).where(t.c.consumer == self.consumer, t.c.event_id == event_id)
        )
        return found is not None

    async def forget_older_than(self, transactions: Transactions, seconds: float) -> int:
        """Drop this consumer's rows handled more than ``seconds`` ago; how many went."""
        t = self.table
        cutoff = datetime.now(UTC) - timedelta(seconds=seconds)
        where = (t.c.consumer == self.consumer) & (t.c.handled_at < cutoff)
        return await delete_in_chunks(transactions, t, where)
