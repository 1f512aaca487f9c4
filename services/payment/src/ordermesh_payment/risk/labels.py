"""The labels: the chargebacks the provider reported, kept in payment's database.

A chargeback arrives weeks after its payment; until then an authorized payment is
presumed genuine. Training and ``ordermesh risk report`` count a payment as fraud when
its chargeback arrived by their cut-off, and judge only payments old enough for it to
have arrived (the maturity)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import BigInteger, Column, DateTime, MetaData, String, Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ordermesh_payment.risk.events import Chargeback
from ordermesh_platform.db import insert_rows


def risk_chargeback_table(metadata: MetaData) -> Table:
    return Table(
        "risk_chargebacks",
        metadata,
        Column("order_id", String(128), primary_key=True),  # one label per payment
        Column("charged_back_at", DateTime(timezone=True), nullable=False),
        Column("amount_minor", BigInteger, nullable=False),
        Column("currency", String(3), nullable=False),
        Column("reason", String(64), nullable=False),
        Column("received_at", DateTime(timezone=True), nullable=False),
    )


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ms(at: datetime) -> int:
    """Whole milliseconds since the epoch, in integers (a float would round some
    times one millisecond down)."""
    if at.tzinfo is None:  # SQLite hands back naive UTC
        at = at.replace(tzinfo=UTC)
    return (at - EPOCH) // timedelta(milliseconds=1)


class ChargebackLabels:
    def __init__(self, table: Table) -> None:
        self.table = table

    async def add(
        self, conn: AsyncConnection, chargebacks: Sequence[tuple[Chargeback, str, str]]
    ) -> set[str]:
        """Keep (chargeback, currency, reason) rows, one statement; the order ids that
        had no label before (a second report of a chargeback changes nothing)."""
        now = datetime.now(UTC)
        rows = [
            {
                "order_id": c.order_id,
                "charged_back_at": _at(c.at_ms),
                "amount_minor": c.amount_minor,
                "currency": currency,
                "reason": reason,
                "received_at": now,
            }
            for c, currency, reason in chargebacks
        ]
        added = await insert_rows(
            conn, self.table, rows, conflict=("order_id",), returning=("order_id",)
        )
        return {row.order_id for row in added}

    async def chargebacks(self, conn: AsyncConnection) -> list[Chargeback]:
        """Every label, oldest first, as the training set's events."""
        t = self.table
        rows = await conn.execute(
            select(t.c.order_id, t.c.charged_back_at, t.c.amount_minor).order_by(
                t.c.charged_back_at, t.c.order_id
            )
        )
        return [Chargeback(r.order_id, _ms(r.charged_back_at), r.amount_minor) for r in rows]
