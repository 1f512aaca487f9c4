"""The simulated provider's chargebacks: the labels of risk scoring, arriving late.

When the simulated provider authorizes a payment whose token starts with the fraud
prefix (``ORDERMESH_PSP_CHARGEBACK_TOKEN_PREFIX``), it schedules a chargeback of it,
``ORDERMESH_PSP_CHARGEBACK_DELAY_S`` later, in its own ledger; a void or a refund
before then cancels it (no money left the card). A worker reports each chargeback
that fell due as a ``ChargebackReported`` event on ``ordermesh.psp.chargebacks.v1``.

The ledger is a table, so a restart loses no chargeback: a scheduled one is reported
when it falls due, whichever process is running then. The provider lives in payment's
process, so its ledger lives in payment's database and it reports through payment's
outbox: marking a chargeback reported and writing its event are one transaction, and
the relay delivers the event at least once. Payment's consumer keeps one label per
order however often a chargeback is delivered or reported."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    MetaData,
    String,
    Table,
    delete,
    select,
    text,
    update,
)

from ordermesh.common.v1 import money_pb2
from ordermesh.events.v1 import events_pb2
from ordermesh_messaging.events import DomainEvent
from ordermesh_messaging.outbox import Outbox
from ordermesh_platform.db import Transactions, insert_rows

REASON = "fraudulent"


def simulated_chargeback_table(metadata: MetaData) -> Table:
    return Table(
        "simulated_psp_chargebacks",
        metadata,
        Column("order_id", String(128), primary_key=True),  # the provider's idempotency key
        Column("psp_reference", String(128), nullable=False),
        Column("amount_minor", BigInteger, nullable=False),
        Column("currency", String(3), nullable=False),
        Column("due_at", DateTime(timezone=True), nullable=False),
        Column("reported_at", DateTime(timezone=True), nullable=True),
        Index(
            "ix_simulated_psp_chargebacks_due",
            "due_at",
            postgresql_where=text("reported_at IS NULL"),
            sqlite_where=text("reported_at IS NULL"),
        ),
    )


@dataclass(frozen=True)
class ChargebackRule:
    """Which authorizations the simulated provider charges back, and how late."""

    token_prefix: str  # empty: none
    delay_s: float

    def charges_back(self, token: str) -> bool:
        return bool(self.token_prefix) and token.startswith(self.token_prefix)


def _timestamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at if at.tzinfo else at.replace(tzinfo=UTC))
    return stamp


class SimulatedChargebacks:
    def __init__(
        self, table: Table, outbox: Table, sessions: Transactions, rule: ChargebackRule
    ) -> None:
        self.table = table
        self.rule = rule
        self._outbox = Outbox(outbox)
        self._sessions = sessions

    async def schedule(
        self, order_id: str, psp_reference: str, amount_minor: int, currency: str
    ) -> None:
        """Charge the authorization back after the delay (once, however often asked)."""
        row = {
            "order_id": order_id,
            "psp_reference": psp_reference,
            "amount_minor": amount_minor,
            "currency": currency,
            "due_at": datetime.now(UTC) + timedelta(seconds=self.rule.delay_s),
            "reported_at": None,
        }
        async with self._sessions.begin() as conn:
            await insert_rows(conn, self.table, [row], conflict=("order_id",))

    async def cancel(self, order_id: str) -> None:
        """The money went back before the chargeback: there is none to report."""
        t = self.table
        async with self._sessions.begin() as conn:
            await conn.execute(delete(t).where(t.c.order_id == order_id, t.c.reported_at.is_(None)))

    async def report_due(self, limit: int = 500) -> int:
        """Report the chargebacks that fell due (up to ``limit``, oldest first) as events
        in the outbox, marked reported in the same transaction; how many."""
        t = self.table
        now = datetime.now(UTC)
        due_now = t.c.reported_at.is_(None) & (t.c.due_at <= now)
        # A read first: most polls find nothing, and take no write lock for it.
        async with self._sessions() as conn:
            if await conn.scalar(select(t.c.order_id).where(due_now).limit(1)) is None:
                return 0
        async with self._sessions.begin() as conn:
            query = select(t).where(due_now).order_by(t.c.due_at, t.c.order_id).limit(limit)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)  # several pods, no double
            due = (await conn.execute(query)).all()
            if not due:
                return 0
            await self._outbox.add(
                conn,
                [
                    DomainEvent(
                        "chargeback",
                        row.order_id,
                        events_pb2.ChargebackReported(
                            order_id=row.order_id,
                            psp_reference=row.psp_reference,
                            amount=money_pb2.Money(
                                amount_minor=row.amount_minor, currency=row.currency
                            ),
                            reason=REASON,
                            charged_back_at=_timestamp(row.due_at),
                        ),
                    )
                    for row in due
                ],
            )
            await conn.execute(
                update(t).where(t.c.order_id.in_([r.order_id for r in due])).values(reported_at=now)
            )
        return len(due)
