"""The invariants of the design, checked against the services' databases.

1. Stock is conserved per SKU: what was added = available + reserved + committed, and
   reserved/committed match the live reservations.
2. Every CONFIRMED order holds exactly one authorized or captured payment of its total
   (none when the total is zero: a free order) and its stock; no REJECTED or CANCELLED
   order holds stock or money.
4. No order stays PENDING past the saga timeout, and no owed work is left (settled).

Read straight from each database with SQL: the tables are the services' contract here,
and this module imports no service.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from ordermesh_platform.db import create_engine

HOLDING_RESERVATION = {"RESERVED", "COMMITTED"}
HOLDING_PAYMENT = {"AUTHORIZED", "CAPTURED", "AUTHORIZING"}


@dataclass
class InvariantReport:
    orders_by_state: Counter[str] = field(default_factory=Counter)
    owed_work: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


async def fetch_rows(url: str, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return [tuple(r) for r in (await conn.execute(text(sql))).all()]
    finally:
        await engine.dispose()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def owed_work(order_url: str) -> int:
    rows = await fetch_rows(order_url, "SELECT count(*) FROM orders WHERE work <> ''")
    return int(rows[0][0])


async def check_invariants(
    order_url: str, inventory_url: str, payment_url: str, saga_timeout_s: float
) -> InvariantReport:
    report = InvariantReport()
    bad = report.violations
    orders = await fetch_rows(
        order_url, "SELECT order_id, state, work, total_minor, created_at FROM orders"
    )
    reservations = dict(await fetch_rows(inventory_url, "SELECT order_id, state FROM reservations"))
    lines = await fetch_rows(
        inventory_url,
        "SELECT r.state, l.sku, l.quantity FROM reservation_lines l "
        "JOIN reservations r ON r.order_id = l.order_id",
    )
    stock = await fetch_rows(inventory_url, "SELECT sku, available, reserved, committed FROM stock")
    added = dict(
        await fetch_rows(
            inventory_url, "SELECT sku, SUM(delta) FROM stock_adjustments GROUP BY sku"
        )
    )
    payments = {
        r[0]: (r[1], r[2])
        for r in await fetch_rows(payment_url, "SELECT order_id, state, amount_minor FROM payments")
    }

    held: dict[tuple[str, str], int] = defaultdict(int)
    for state, sku, quantity in lines:
        held[(state, sku)] += quantity
    for sku, available, reserved, committed in stock:
        if available + reserved + committed != (added.get(sku) or 0):
            bad.append(
                f"stock of {sku} not conserved: {available}+{reserved}+{committed} "
                f"!= {added.get(sku) or 0} added"
            )
        if reserved != held[("RESERVED", sku)] or committed != held[("COMMITTED", sku)]:
            bad.append(f"stock of {sku} disagrees with its reservations")

    now = datetime.now(UTC)
    order_states = {}
    for order_id, state, work, total, created_at in orders:
        report.orders_by_state[state] += 1
        order_states[order_id] = state
        if work:
            report.owed_work += 1
        reservation = reservations.get(order_id)
        payment_state, amount = payments.get(order_id, (None, None))
        if state == "CONFIRMED":
            if total == 0:  # a free order is confirmed without a payment
                if payment_state is not None:
                    bad.append(f"free order {order_id} has payment {payment_state} {amount}")
            elif payment_state not in ("AUTHORIZED", "CAPTURED") or amount != total:
                bad.append(f"confirmed order {order_id} has payment {payment_state} {amount}")
            if reservation not in HOLDING_RESERVATION:
                bad.append(f"confirmed order {order_id} holds no stock ({reservation})")
        elif state in ("REJECTED", "CANCELLED") and not work:
            if reservation in HOLDING_RESERVATION:
                bad.append(f"{state.lower()} order {order_id} still holds stock")
            if payment_state in HOLDING_PAYMENT:
                bad.append(f"{state.lower()} order {order_id} still holds money")
        elif state == "PENDING" and _aware(created_at) < now - timedelta(
            seconds=saga_timeout_s + 5
        ):
            bad.append(f"order {order_id} PENDING past the saga timeout")
    for order_id, state in reservations.items():
        if state in HOLDING_RESERVATION and order_states.get(order_id) not in (
            "CONFIRMED",
            "PENDING",
        ):
            bad.append(
                f"reservation of order {order_id} ({order_states.get(order_id)}) holds stock"
            )
    for order_id, (state, _) in payments.items():
        if state in HOLDING_PAYMENT and order_states.get(order_id) not in ("CONFIRMED", "PENDING"):
            bad.append(f"payment of order {order_id} ({order_states.get(order_id)}) holds money")
    return report
