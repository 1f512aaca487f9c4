"""The transactional outbox: events are rows written in the same transaction as the
state change they report, so an event exists if and only if its change committed.

The columns are a fixed contract (as in Debezium's outbox): routing (topic, key) and
headers follow from them, never from code per event type.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

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
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from ordermesh_messaging.events import DomainEvent
from ordermesh_platform.db import insert_rows

# Rows are spread over a fixed number of buckets by aggregate id. One relay at a time
# publishes a bucket (PostgreSQL advisory lock), in commit order: that keeps every
# aggregate's events in order however many relays run. Changing it re-maps live rows,
# so it is part of the contract, not a setting.
OUTBOX_BUCKETS = 16
NOTIFY_CHANNEL = "ordermesh_outbox"
# PostgreSQL: the outbox announces its own inserts, once per statement, to the relays
# that LISTEN. A NOTIFY is delivered when (and only if) its transaction commits. As a
# trigger it costs a writer no round trip of its own: a NOTIFY statement after every
# outbox insert was one more round trip in each of the five transactions an order's
# events are written in.
_NOTIFY_FUNCTION = "ordermesh_outbox_notify"
_NOTIFY_TRIGGER = "outbox_notify"


def bucket_of(aggregate_id: str) -> int:
    return zlib.crc32(aggregate_id.encode()) % OUTBOX_BUCKETS


def create_notify_trigger(bind: Connection) -> None:
    """In a migration: make the outbox announce its inserts (PostgreSQL; SQLite's one
    relay polls)."""
    if bind.dialect.name != "postgresql":
        return
    bind.execute(
        text(
            f"CREATE OR REPLACE FUNCTION {_NOTIFY_FUNCTION}() RETURNS trigger "
            f"LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('{NOTIFY_CHANNEL}', ''); "
            "RETURN NULL; END $$"
        )
    )
    bind.execute(
        text(
            f"CREATE TRIGGER {_NOTIFY_TRIGGER} AFTER INSERT ON outbox "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {_NOTIFY_FUNCTION}()"
        )
    )


def drop_notify_trigger(bind: Connection) -> None:
    """Undo :func:`create_notify_trigger` (a writer then has to NOTIFY itself)."""
    if bind.dialect.name != "postgresql":
        return
    bind.execute(text(f"DROP TRIGGER IF EXISTS {_NOTIFY_TRIGGER} ON outbox"))
    bind.execute(text(f"DROP FUNCTION IF EXISTS {_NOTIFY_FUNCTION}()"))


PUBLISHED_AT_INDEX = "ix_outbox_published_at"


def drop_published_at_index(bind: Connection) -> None:
    """In a migration: drop the index on ``published_at``. It served a retention sweep
    over rows marked published; the relay deletes what it published now, so every row
    it indexed was NULL, and each outbox insert paid for an entry nobody read."""
    bind.execute(text(f"DROP INDEX IF EXISTS {PUBLISHED_AT_INDEX}"))


def create_published_at_index(bind: Connection) -> None:
    """Undo :func:`drop_published_at_index`."""
    bind.execute(text(f"CREATE INDEX IF NOT EXISTS {PUBLISHED_AT_INDEX} ON outbox (published_at)"))


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
    )


class Outbox:
    """Writes events into one service's outbox table inside the caller's transaction."""

    def __init__(self, table: Table) -> None:
        self.table = table

    async def add(self, session: AsyncConnection, events: Sequence[DomainEvent]) -> None:
        """Write the events, however many, in one statement (on PostgreSQL its trigger
        wakes the relays once the transaction commits)."""
        if events:
            await insert_rows(session, self.table, self.rows_of(events))

    def rows_of(self, events: Sequence[DomainEvent]) -> list[dict[str, Any]]:
        """The events' outbox rows; each carries its own trace, which the relay and the
        consumers continue."""
        now = datetime.now(UTC)
        return [
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
        ]
