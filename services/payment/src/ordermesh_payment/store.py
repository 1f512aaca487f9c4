"""Payment tables and the queries the domain needs."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, Column, DateTime, MetaData, String, Table, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ordermesh_messaging.outbox import outbox_table
from ordermesh_payment.domain import Payment, PaymentState
from ordermesh_platform.db import insert_new

metadata = MetaData()
outbox = outbox_table(metadata)


def utcnow() -> datetime:
    return datetime.now(UTC)


payments = Table(
    "payments",
    metadata,
    # One payment per order: the order id is the idempotency key of every operation.
    Column("order_id", String(128), primary_key=True),
    Column("payment_id", String(36), nullable=False, unique=True),
    Column("customer_id", String(128), nullable=False),
    Column("state", String(16), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("decline_reason", String(128), nullable=False, default=""),
    Column("psp_reference", String(128), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


def _payment(row: object) -> Payment:
    r = row
    return Payment(
        r.payment_id,  # type: ignore[attr-defined]
        r.order_id,  # type: ignore[attr-defined]
        r.customer_id,  # type: ignore[attr-defined]
        PaymentState(r.state),  # type: ignore[attr-defined]
        r.amount_minor,  # type: ignore[attr-defined]
        r.currency,  # type: ignore[attr-defined]
        r.decline_reason,  # type: ignore[attr-defined]
        r.psp_reference,  # type: ignore[attr-defined]
        r.created_at,  # type: ignore[attr-defined]
        r.updated_at,  # type: ignore[attr-defined]
    )


# The hot statements are built once and run with bind values (see the order store).
_GET = select(payments).where(payments.c.order_id == bindparam("order_id"))
_GET_LOCKED = _GET.with_for_update()
_MOVE = payments.update().where(
    payments.c.order_id == bindparam("b_order_id"), payments.c.state == bindparam("b_state")
)


class PaymentStore:
    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def get(self, order_id: str, lock: bool = False) -> Payment | None:
        query = _GET_LOCKED if lock else _GET
        row = (await self.session.execute(query, {"order_id": order_id})).first()
        return None if row is None else _payment(row)

    async def claim(self, payment: Payment) -> bool:
        """Insert the payment; False when the order has one already."""
        row = {
            "order_id": payment.order_id,
            "payment_id": payment.payment_id,
            "customer_id": payment.customer_id,
            "state": payment.state.value,
            "amount_minor": payment.amount_minor,
            "currency": payment.currency,
            "decline_reason": payment.decline_reason,
            "psp_reference": payment.psp_reference,
            "created_at": payment.created_at,
            "updated_at": payment.updated_at,
        }
        return bool(await insert_new(self.session, payments, [row], conflict=("order_id",)))

    async def move(self, before: Payment, after: Payment) -> bool:
        """Conditional update from ``before.state``: False when another call moved the
        payment first (the caller re-reads and decides)."""
        result = await self.session.execute(
            _MOVE,
            {
                "b_order_id": before.order_id,
                "b_state": before.state.value,
                "state": after.state.value,
                "decline_reason": after.decline_reason,
                "psp_reference": after.psp_reference,
                "updated_at": utcnow(),
            },
        )
        return bool(result.rowcount)
