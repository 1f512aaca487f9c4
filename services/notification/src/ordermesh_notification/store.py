"""Notification tables and the queries the domain needs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from ordermesh_messaging.inbox import inbox_table
from ordermesh_notification.domain import (
    Channel,
    Delivery,
    DeliveryState,
    GiveUp,
    Money,
    Outgoing,
    Preferences,
    Retry,
    Sent,
)
from ordermesh_platform.db import (
    Transactions,
    delete_in_chunks,
    insert_new,
    insert_rows,
    one_of,
    update_rows,
)
from ordermesh_platform.paging import Cursor, newest_first

metadata = MetaData()


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; we only ever store UTC.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


preferences = Table(
    "preferences",
    metadata,
    Column("customer_id", String(128), primary_key=True),
    Column("channels", String(64), nullable=False),  # comma-separated Channel names
    Column("email", String(254), nullable=False, default=""),
    Column("webhook_url", Text, nullable=False, default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False, default=utcnow),
)

# Which events this service has handled (the consumer's dedup, one transaction with
# the deliveries the event creates).
inbox = inbox_table(metadata)

deliveries = Table(
    "deliveries",
    metadata,
    Column("notification_id", String(36), primary_key=True),
    Column("event_id", String(64), nullable=False),
    Column("event_type", String(128), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("subject", Text, nullable=False, default=""),
    Column("last_error", Text, nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    # What is sent, fixed when the event is handled, so every retry sends the same thing.
    Column("recipient", Text, nullable=False, default="", server_default=""),
    Column("body", Text, nullable=False, default="", server_default=""),
    Column("occurred_at", DateTime(timezone=True), nullable=True),
    Column("amount_minor", BigInteger, nullable=True),
    Column("currency", String(3), nullable=False, default="", server_default=""),
    # Retries: a PENDING row is due once next_attempt_at has passed.
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    # The worker that is sending it, until when; an expired claim may be taken over.
    Column("claimed_by", String(36), nullable=False, default="", server_default=""),
    Column("claimed_until", DateTime(timezone=True), nullable=True),
    Column("traceparent", String(64), nullable=False, default="", server_default=""),
    # Exactly one delivery record per (event, channel), however often the event arrives.
    UniqueConstraint("event_id", "channel", name="uq_deliveries_event_channel"),
    Index("ix_deliveries_customer_created", "customer_id", "created_at", "notification_id"),
    Index("ix_deliveries_due", "state", "next_attempt_at"),
    # The retention sweep's: the oldest deliveries first.
    Index("ix_deliveries_created_at", "created_at"),
)


FINISHED = (DeliveryState.SENT.value, DeliveryState.FAILED.value)


async def delete_finished_before(
    transactions: Transactions, before: datetime, chunk: int = 5_000
) -> int:
    """Delete the deliveries created before ``before`` that are SENT or FAILED, in
    chunks (``delete_in_chunks``); a PENDING one stays whatever its age. How many went.

    Forgetting a delivery cannot send it twice: its event's inbox row stops a
    redelivery for the inbox retention, and after it the (event, channel) key does
    while the delivery is kept; only an event redelivered once both are gone would be
    sent again (docs/notifications.md)."""
    c = deliveries.c
    where = and_(c.state.in_(FINISHED), c.created_at < before)
    return await delete_in_chunks(transactions, deliveries, where, chunk)


def _delivery(r: Row[Any]) -> Delivery:
    return Delivery(
        r.notification_id,
        r.event_id,
        r.event_type,
        r.customer_id,
        r.order_id,
        Channel(r.channel),
        DeliveryState(r.state),
        r.attempts,
        r.subject,
        r.last_error,
        r.created_at,
        r.delivered_at,
    )


def _preferences(r: Row[Any]) -> Preferences:
    channels = tuple(Channel(c) for c in r.channels.split(",") if c)
    return Preferences(r.customer_id, channels, r.email, r.webhook_url)


def _outgoing(r: Row[Any]) -> Outgoing:
    amount = None if r.amount_minor is None else Money(r.amount_minor, r.currency)
    return Outgoing(
        r.notification_id,
        r.event_id,
        r.event_type,
        r.customer_id,
        r.order_id,
        Channel(r.channel),
        r.recipient,
        r.subject,
        r.body,
        _aware(r.occurred_at),
        amount,
        r.attempts,
        r.traceparent,
    )


class NotificationStore:
    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def get_preferences(self, customer_id: str) -> Preferences | None:
        return (await self.preferences_of([customer_id])).get(customer_id)

    async def preferences_of(self, customer_ids: Collection[str]) -> dict[str, Preferences]:
        """The saved preferences of these customers, in one statement; a customer who
        saved none is missing."""
        c = preferences.c
        postgres = self.session.dialect.name == "postgresql"
        chosen = one_of(c.customer_id, "ids", postgres, list(customer_ids))
        rows = (await self.session.execute(select(preferences).where(chosen))).all()
        return {row.customer_id: _preferences(row) for row in rows}

    async def save_preferences(self, prefs: Preferences) -> None:
        values = {
            "channels": ",".join(c.value for c in prefs.channels),
            "email": prefs.email,
            "webhook_url": prefs.webhook_url,
            "updated_at": utcnow(),
        }
        await insert_new(
            self.session,
            preferences,
            [{"customer_id": prefs.customer_id, **values}],
            conflict=("customer_id",),
            update=tuple(values),
        )

    async def list_deliveries(
        self, customer_id: str, order_id: str, after: Cursor | None, limit: int
    ) -> list[Delivery]:
        c = deliveries.c
        query = newest_first(
            select(deliveries).where(c.customer_id == customer_id),
            c.created_at,
            c.notification_id,
            after,
        ).limit(limit)
        if order_id:
            query = query.where(c.order_id == order_id)
        return [_delivery(r) for r in (await self.session.execute(query)).all()]

    async def add_pending(self, rows: Sequence[dict[str, object]]) -> Counter[str]:
        """Record PENDING deliveries in one statement; a (event, channel) already
        recorded is left as it is. Returns how many were new, per event id."""
        written = await insert_rows(
            self.session,
            deliveries,
            rows,
            conflict=("event_id", "channel"),
            returning=("event_id",),
        )
        return Counter(row.event_id for row in written)

    async def due(self, now: datetime) -> tuple[int, float]:
        """Deliveries due and not yet sent, and how long the first of them has been due
        (seconds; 0 when none is): one read of the due index."""
        c = deliveries.c
        count, first = (
            await self.session.execute(
                select(func.count(), func.min(c.next_attempt_at)).where(
                    c.state == DeliveryState.PENDING.value, c.next_attempt_at <= now
                )
            )
        ).one()
        if first is None:
            return int(count), 0.0
        if first.tzinfo is None:  # SQLite gives naive UTC back
            first = first.replace(tzinfo=UTC)
        return int(count), max(0.0, (now - first).total_seconds())

    async def claim_due(
        self, claim: str, now: datetime, until: datetime, limit: int
    ) -> list[Outgoing]:
        """Claim up to ``limit`` PENDING deliveries that are due and that no live claim
        holds, for ``claim`` until ``until``."""
        c = deliveries.c
        claimable = and_(
            c.state == DeliveryState.PENDING.value,
            c.next_attempt_at <= now,
            or_(c.claimed_until.is_(None), c.claimed_until < now),
        )
        # PostgreSQL: replicas skip each other's locked rows instead of queueing on them.
        # SQLite has no row locks (the clause is dropped); its transactions run one at a time.
        ids = list(
            (
                await self.session.execute(
                    select(c.notification_id)
                    .where(claimable)
                    .order_by(c.next_attempt_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).scalars()
        )
        if not ids:
            return []
        # Conditional, so a row another worker claimed since our read is not taken twice.
        await self.session.execute(
            update(deliveries)
            .where(c.notification_id.in_(ids), claimable)
            .values(claimed_by=claim, claimed_until=until)
        )
        rows = await self.session.execute(
            select(deliveries)
            .where(c.notification_id.in_(ids), c.claimed_by == claim)
            .order_by(c.next_attempt_at)
        )
        return [_outgoing(r) for r in rows.all()]

    async def record_outcomes(
        self, claim: str, outcomes: Mapping[str, tuple[Sent | Retry | GiveUp, str]]
    ) -> set[str]:
        """Record each delivery's outcome (by notification id, with the error of a failed
        try), if ``claim`` still holds it: SENT, PENDING again until its next attempt, or
        FAILED for good. One statement per kind of outcome, however many deliveries.
        Returns the ids recorded; another worker took the others over."""
        kinds: dict[type, list[dict[str, Any]]] = {}
        for notification_id, (outcome, error) in sorted(outcomes.items()):
            row: dict[str, Any] = {
                "b_notification_id": notification_id,
                "b_claimed_by": claim,
                "b_state": DeliveryState.PENDING.value,
                "claimed_by": "",
                "claimed_until": None,
                "attempts": outcome.attempts,
            }
            match outcome:
                case Sent():
                    row |= {"state": DeliveryState.SENT.value, "delivered_at": outcome.at}
                case Retry():
                    row |= {"last_error": error, "next_attempt_at": outcome.next_attempt_at}
                case GiveUp():
                    row |= {"state": DeliveryState.FAILED.value, "last_error": error}
            kinds.setdefault(type(outcome), []).append(row)
        recorded: set[str] = set()
        for rows in kinds.values():
            changed = await update_rows(self.session, deliveries, rows, ("notification_id",))
            recorded.update(r.notification_id for r in changed)
        return recorded
