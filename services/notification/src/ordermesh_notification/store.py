"""Notification tables and the queries the domain needs."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
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
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from ordermesh_notification.domain import Channel, Delivery, DeliveryState, Preferences
from ordermesh_platform.db import dialect_insert
from ordermesh_platform.paging import Cursor

metadata = MetaData()


def utcnow() -> datetime:
    return datetime.now(UTC)


preferences = Table(
    "preferences",
    metadata,
    Column("customer_id", String(128), primary_key=True),
    Column("channels", String(64), nullable=False),  # comma-separated Channel names
    Column("email", String(254), nullable=False, default=""),
    Column("webhook_url", Text, nullable=False, default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False, default=utcnow),
)

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
    # Exactly one delivery record per (event, channel), however often the event arrives.
    UniqueConstraint("event_id", "channel", name="uq_deliveries_event_channel"),
    Index("ix_deliveries_customer_created", "customer_id", "created_at", "notification_id"),
)


class NotificationStore:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_preferences(self, customer_id: str) -> Preferences | None:
        row = (
            await self.session.execute(
                select(preferences).where(preferences.c.customer_id == customer_id)
            )
        ).first()
        if row is None:
            return None
        channels = tuple(Channel(c) for c in row.channels.split(",") if c)
        return Preferences(row.customer_id, channels, row.email, row.webhook_url)

    async def save_preferences(self, prefs: Preferences) -> None:
        insert = dialect_insert(self.session.get_bind().dialect.name)
        values = {
            "channels": ",".join(c.value for c in prefs.channels),
            "email": prefs.email,
            "webhook_url": prefs.webhook_url,
            "updated_at": utcnow(),
        }
        await self.session.execute(
            insert(preferences)
            .values(customer_id=prefs.customer_id, **values)
            .on_conflict_do_update(index_elements=["customer_id"], set_=values)
        )

    async def list_deliveries(
        self, customer_id: str, order_id: str, after: Cursor | None, limit: int
    ) -> list[Delivery]:
        c = deliveries.c
        query = (
            select(deliveries)
            .where(c.customer_id == customer_id)
            .order_by(c.created_at.desc(), c.notification_id.desc())
            .limit(limit)
        )
        if order_id:
            query = query.where(c.order_id == order_id)
        if after is not None:
            query = query.where(
                or_(
                    c.created_at < after.created_at,
                    and_(c.created_at == after.created_at, c.notification_id < after.id),
                )
            )
        rows = (await self.session.execute(query)).all()
        return [
            Delivery(
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
            for r in rows
        ]
