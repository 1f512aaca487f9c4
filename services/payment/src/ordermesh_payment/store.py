"""Payment tables and the queries the domain needs."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    MetaData,
    String,
    Table,
    bindparam,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from ordermesh_messaging.inbox import inbox_table
from ordermesh_messaging.outbox import outbox_table
from ordermesh_payment.domain import Payment, PaymentState, RiskAssessment, RiskVerdict
from ordermesh_payment.risk.decision_log import risk_decision_table
from ordermesh_payment.risk.feature_store import risk_feature_table
from ordermesh_payment.risk.labels import risk_chargeback_table
from ordermesh_payment.risk.registry import risk_model_table
from ordermesh_payment.simulated_chargebacks import simulated_chargeback_table
from ordermesh_platform.db import insert_rows, one_of
from ordermesh_platform.writes import Rows

metadata = MetaData()
outbox = outbox_table(metadata)
risk_features = risk_feature_table(metadata)
risk_models = risk_model_table(metadata)
risk_decisions = risk_decision_table(metadata)
risk_chargebacks = risk_chargeback_table(metadata)
inbox = inbox_table(metadata)  # the events payment consumed (the provider's chargebacks)
# The simulated provider's own ledger: it runs in payment's process (simulated_psp.py).
simulated_psp_chargebacks = simulated_chargeback_table(metadata)


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
    # Risk scoring's outcome; all NULL when the payment was not scored (risk off).
    Column("risk_score", Float, nullable=True),
    Column("risk_decision", String(16), nullable=True),
    Column("risk_model_version", String(128), nullable=True),
    Column("risk_variant", String(16), nullable=True),
)


def _risk(row: object) -> RiskAssessment | None:
    r = row
    if r.risk_decision is None:  # type: ignore[attr-defined]
        return None
    return RiskAssessment(
        r.risk_score,  # type: ignore[attr-defined]
        RiskVerdict(r.risk_decision),  # type: ignore[attr-defined]
        r.risk_model_version,  # type: ignore[attr-defined]
        r.risk_variant,  # type: ignore[attr-defined]
    )


def _risk_columns(risk: RiskAssessment | None) -> dict[str, object]:
    if risk is None:
        return dict.fromkeys(("risk_score", "risk_decision", "risk_model_version", "risk_variant"))
    return {
        "risk_score": risk.score,
        "risk_decision": risk.verdict.value,
        "risk_model_version": risk.model_version,
        "risk_variant": risk.variant,
    }


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
        _risk(r),
    )


# The hot statements are built once and run with bind values (see the order store).
_GET = select(payments).where(payments.c.order_id == bindparam("order_id"))
_GET_LOCKED = _GET.with_for_update()
_GET_MANY = select(payments).where(one_of(payments.c.order_id, "order_ids", postgres=False))
_GET_MANY_PG = select(payments).where(one_of(payments.c.order_id, "order_ids", postgres=True))


def _row(payment: Payment) -> dict[str, object]:
    return {
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
        **_risk_columns(payment.risk),
    }


def _move_row(before: Payment, after: Payment) -> dict[str, object]:
    return {
        "b_order_id": before.order_id,
        "b_state": before.state.value,
        "state": after.state.value,
        "decline_reason": after.decline_reason,
        "psp_reference": after.psp_reference,
        "updated_at": after.updated_at,
        **_risk_columns(after.risk),
    }


class PaymentStore:
    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    async def get(self, order_id: str, lock: bool = False) -> Payment | None:
        query = _GET_LOCKED if lock else _GET
        row = (await self.session.execute(query, {"order_id": order_id})).first()
        return None if row is None else _payment(row)

    async def get_many(self, order_ids: Collection[str]) -> dict[str, Payment]:
        """The payments of those orders that have one, by order id (one SELECT)."""
        if not order_ids:
            return {}
        query = _GET_MANY_PG if self.session.dialect.name == "postgresql" else _GET_MANY
        rows = await self.session.execute(query, {"order_ids": sorted(order_ids)})
        return {p.order_id: p for p in map(_payment, rows)}

    async def claim_many(self, new: Sequence[Payment]) -> set[str]:
        """Insert the payments in one statement; returns the order ids written (an order
        with a payment already keeps it)."""
        # Sorted: two batches sharing orders then wait for each other, never deadlock.
        rows = [_row(p) for p in sorted(new, key=lambda p: p.order_id)]
        written = await insert_rows(
            self.session, payments, rows, conflict=("order_id",), returning=("order_id",)
        )
        return {r.order_id for r in written}

    @staticmethod
    def move_writes(moves: Sequence[tuple[Payment, Payment]]) -> Rows:
        """Each payment moved from its ``before`` state to ``after``, as a write for one
        statement; the order ids moved come back. One left out was moved by another
        call first (the caller re-reads and decides)."""
        ordered = sorted(moves, key=lambda move: move[0].order_id)
        rows = [_move_row(before, after) for before, after in ordered]
        return Rows(payments, rows, update=True, returning=("order_id",))
