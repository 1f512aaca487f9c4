"""The transactional outbox: events are rows written in the same transaction as the
state change they report, so an event exists if and only if its change committed.

The columns are a fixed contract (as in Debezium's outbox): routing (topic, key) and
headers follow from them, never from code per event type.
"""

from __future__ import annotations

import zlib
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
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from ordermesh_messaging.events import DomainEvent
from ordermesh_platform.db import insert_rows

# Rows are spread over a fixed number of buckets by aggregate id. One relay at a time
# publishes a bucket (PostgreSQL advisory lock), in commit order: that keeps every
# aggregate's events in order however many relays run. Changing it re-maps live rows,
# so it is part of the contract, not a setting.
OUTBOX_BUCKETS = 16
NOTIFY_CHANNEL = "ordermesh_outbox"


def bucket_of(aggregate_id: str) -> int:
    return zlib.crc32(aggregate_id.encode()) % OUTBOX_BUCKETS


def outbox_table(metadata: MetaData) -> Table:
    """The outbox, added to a service's own metadata (and so to its migrations)."""
    return Table(
        "outbox",
        metadata,
        # Commit order per aggregate: every writer changes the aggregate's own row
        # before it adds the event, so a later event of one aggregate gets a larger seq.
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
        Column("bucket", Integer, nullable=False, server_default="0"),
        # Only unpublished rows are indexed for the claim: it stays fast with a million
        # published rows behind it.
        Index(
            "ix_outbox_unpublished_bucket",
            "bucket",
            "seq",
            postgresql_where=text("published_at IS NULL"),
            sqlite_where=text("published_at IS NULL"),
        ),
        Index("ix_outbox_published_at", "published_at"),
    )


class Outbox:
    """Writes events into one service's outbox table inside the caller's transaction."""

    def __init__(self, table: Table, notify: bool = True) -> None:
        self.table = table
        self.notify = notify

    async def add(self, session: AsyncConnection, events: Sequence[DomainEvent]) -> None:
        """Write the events, however many, in one statement."""
        if not events:
            return
        now = datetime.now(UTC)
        # Each event's own trace: the relay and the consumers continue it.
        await insert_rows(
            session,
            self.table,
            [
                {
                    "event_id": e.event_id,
                    "aggregate_type": e.aggregate_type,
                    "aggregate_id": e.aggregate_id,
                    "event_type": e.event_type,
                    "topic": e.topic,
                    "payload": e.payload.SerializeToString(),
                    "traceparent": e.trace[0],
                    "tracestate": e.trace[1],
                    "created_at": now,
                    "attempts": 0,
                    "bucket": bucket_of(e.aggregate_id),
                }
                for e in events
            ],
        )
        if self.notify and session.dialect.name == "postgresql":
            # Delivered when (and only if) the transaction commits: wakes the relay.
            await session.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
