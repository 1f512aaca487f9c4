"""The transactional outbox: events are rows written in the same transaction as the
state change they report, so an event exists if and only if its change committed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from ordermesh_messaging.events import DomainEvent


def outbox_table(metadata: MetaData) -> Table:
    """The fixed outbox contract, added to a service's own metadata (and migrations)."""
    return Table(
        "outbox",
        metadata,
        # Commit order within one database: the relay publishes in this order.
        Column(
            "seq",
            BigInteger().with_variant(Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        Column("event_id", String(36), nullable=False, unique=True),
        Column("aggregate_type", String(32), nullable=False),
        Column("aggregate_id", String(64), nullable=False),
        Column("event_type", String(128), nullable=False),
        Column("topic", String(128), nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("traceparent", String(64), nullable=False, default=""),
        Column("tracestate", Text, nullable=False, default=""),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("published_at", DateTime(timezone=True), nullable=True),
        Column("attempts", Integer, nullable=False, default=0),
        Index("ix_outbox_unpublished", "published_at", "seq"),
    )


class Outbox:
    """Writes events into one service's outbox table inside the caller's transaction."""

    def __init__(self, table: Table) -> None:
        self.table = table

    async def add(self, session: AsyncSession, events: Sequence[DomainEvent]) -> None:
        if not events:
            return
        now = datetime.now(UTC)
        await session.execute(
            self.table.insert(),
            [
                {
                    "event_id": e.event_id,
                    "aggregate_type": e.aggregate_type,
                    "aggregate_id": e.aggregate_id,
                    "event_type": e.event_type,
                    "topic": e.topic,
                    "payload": e.payload.SerializeToString(),
                    "traceparent": "",
                    "tracestate": "",
                    "created_at": now,
                    "attempts": 0,
                }
                for e in events
            ],
        )
