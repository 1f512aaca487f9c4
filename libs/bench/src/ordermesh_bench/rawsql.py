"""The database bound: the same per-order transactions the services run, written
straight through asyncpg, with no gRPC, no ORM layer and no Python domain code.

Statement for statement it mirrors a confirmed order's life: order written (with its
lines and outbox row), stock reserved, payment authorized (intent, then outcome),
order confirmed, payment captured, reservation committed, fulfilment recorded."""

from __future__ import annotations

import contextlib
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from ordermesh_messaging.outbox import bucket_of

NOTIFY = "NOTIFY ordermesh_outbox"
OUTBOX_INSERT = (
    "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, event_type, topic, payload, "
    "traceparent, tracestate, created_at, attempts, bucket) "
    "VALUES ($1, $2, $3, $4, $5, $6, '', '', $7, 0, $8)"
)
PAYLOAD = b"\x0a\x24" + b"p" * 120


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def checkpoint(conn: asyncpg.Connection) -> None:
    """A ``CHECKPOINT`` before a measured run, so that every run starts just after one
    (a timed checkpoint landing inside one short run and not another is a cost of the
    clock, not of what is measured). Skipped where the role may not (``pg_checkpoint``)."""
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await conn.execute("CHECKPOINT")


async def _outbox(conn: Any, aggregate: str, kind: str, event: str) -> None:
    topic = {"order": "ordermesh.orders.v1", "reservation": "ordermesh.reservations.v1"}.get(
        kind, "ordermesh.payments.v1"
    )
    await conn.execute(
        OUTBOX_INSERT, str(uuid.uuid4()), kind, aggregate, f"ordermesh.events.v1.{event}", topic,
        PAYLOAD, datetime.now(UTC), bucket_of(aggregate),
    )  # fmt: skip
    await conn.execute(NOTIFY)


class RawOrderPath:
    """One order's transactions, given a pool per service database."""

    def __init__(
        self, order: asyncpg.Pool, inventory: asyncpg.Pool, payment: asyncpg.Pool, skus: list[str]
    ) -> None:
        self.order, self.inventory, self.payment = order, inventory, payment
        self.skus = skus
        self._rng = random.Random(3)

    async def place(self) -> str:
        order_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        lines = sorted(set(self._rng.choices(self.skus, k=self._rng.randint(1, 3))))
        # 1. the order, its lines and OrderCreated
        async with self.order.acquire() as c, c.transaction():
            await c.execute(
                "INSERT INTO orders (order_id, customer_id, idempotency_key, request_hash, state, "
                "currency, payment_token, total_minor, reason, reason_detail, reason_metadata, "
                "payment_id, work, lease_owner, lease_until, version, created_at, updated_at, "
                "traceparent, tracestate) "
                "VALUES ($1, $2, $3, 'h', 'PENDING', 'EUR', 'tok_ok', NULL, NULL, '', '{}', '', "
                "'FORWARD', 'bench', $4, 1, $5, $5, '', '') "
                "ON CONFLICT (customer_id, idempotency_key) DO NOTHING",
                order_id, "raw", order_id, now + timedelta(seconds=5), now,
            )  # fmt: skip
            await c.executemany(
                "INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_minor) "
                "VALUES ($1, $2, $3, 1, NULL)",
                [(order_id, i, sku) for i, sku in enumerate(lines)],
            )
            await _outbox(c, order_id, "order", "OrderCreated")
        # the saga loads the order
        async with self.order.acquire() as c:
            await c.fetchrow("SELECT * FROM orders WHERE order_id = $1", order_id)
            await c.fetch("SELECT * FROM order_lines WHERE order_id = $1", order_id)
        # 2. reserve
        async with self.inventory.acquire() as c, c.transaction():
            await c.fetchrow("SELECT * FROM reservations WHERE order_id = $1", order_id)
            await c.fetch("SELECT * FROM products WHERE sku = ANY($1::text[])", lines)
            await c.execute(
                "INSERT INTO reservations (order_id, state, currency, expires_at, created_at, "
                "updated_at) VALUES ($1, 'RESERVED', 'EUR', $2, $3, $3) "
                "ON CONFLICT (order_id) DO NOTHING",
                order_id, now + timedelta(minutes=15), now,
            )  # fmt: skip
            for sku in lines:
                await c.execute(
                    "UPDATE stock SET available = available - 1, reserved = reserved + 1 "
                    "WHERE sku = $1 AND available >= 1",
                    sku,
                )
            await c.executemany(
                "INSERT INTO reservation_lines (order_id, sku, quantity, unit_price_minor) "
                "VALUES ($1, $2, 1, 100)",
                [(order_id, sku) for sku in lines],
            )
            await _outbox(c, order_id, "reservation", "StockReserved")
        # 3. authorize: the intent, then the outcome
        async with self.payment.acquire() as c:
            async with c.transaction():
                await c.execute(
                    "INSERT INTO payments (order_id, payment_id, customer_id, state, amount_minor, "
                    "currency, decline_reason, psp_reference, created_at, updated_at) "
                    "VALUES ($1, $2, 'raw', 'AUTHORIZING', 100, 'EUR', '', '', $3, $3) "
                    "ON CONFLICT (order_id) DO NOTHING",
                    order_id, str(uuid.uuid4()), now,
                )  # fmt: skip
            async with c.transaction():
                await c.execute(
                    "UPDATE payments SET state = 'AUTHORIZED', psp_reference = 'ref', "
                    "updated_at = $2 WHERE order_id = $1 AND state = 'AUTHORIZING'",
                    order_id, now,
                )  # fmt: skip
                await _outbox(c, order_id, "payment", "PaymentAuthorized")
        # 4. confirm
        async with self.order.acquire() as c, c.transaction():
            await c.execute(
                "UPDATE orders SET state = 'CONFIRMED', total_minor = 100, work = 'FULFIL', "
                "version = version + 1, updated_at = $2 WHERE order_id = $1 AND version = 1",
                order_id, now,
            )  # fmt: skip
            for i in range(len(lines)):
                await c.execute(
                    "UPDATE order_lines SET unit_price_minor = 100 "
                    "WHERE order_id = $1 AND line_no = $2",
                    order_id, i,
                )  # fmt: skip
            await _outbox(c, order_id, "order", "OrderConfirmed")
        # 5. capture, commit, fulfilled
        async with self.payment.acquire() as c:
            await c.fetchrow("SELECT * FROM payments WHERE order_id = $1", order_id)
            async with c.transaction():
                await c.execute(
                    "UPDATE payments SET state = 'CAPTURED', updated_at = $2 "
                    "WHERE order_id = $1 AND state = 'AUTHORIZED'",
                    order_id, now,
                )  # fmt: skip
                await _outbox(c, order_id, "payment", "PaymentCaptured")
        async with self.inventory.acquire() as c, c.transaction():
            await c.fetchrow("SELECT * FROM reservations WHERE order_id = $1 FOR UPDATE", order_id)
            await c.fetch("SELECT * FROM reservation_lines WHERE order_id = $1", order_id)
            for sku in lines:
                await c.execute(
                    "UPDATE stock SET reserved = reserved - 1, committed = committed + 1 "
                    "WHERE sku = $1",
                    sku,
                )
            await c.execute(
                "UPDATE reservations SET state = 'COMMITTED', updated_at = $2 WHERE order_id = $1",
                order_id, now,
            )  # fmt: skip
            await _outbox(c, order_id, "reservation", "StockCommitted")
        async with self.order.acquire() as c, c.transaction():
            await c.execute(
                "UPDATE orders SET work = '', version = version + 1 "
                "WHERE order_id = $1 AND version = 2",
                order_id,
            )
        return "OK"


async def seed_catalogue(pool: asyncpg.Pool, skus: list[str], units: int) -> None:
    now = datetime.now(UTC)
    async with pool.acquire() as c, c.transaction():
        await c.executemany(
            "INSERT INTO products (sku, name, unit_price_minor, currency, created_at, updated_at) "
            "VALUES ($1, $1, 100, 'EUR', $2, $2) ON CONFLICT DO NOTHING",
            [(sku, now) for sku in skus],
        )
        await c.executemany(
            "INSERT INTO stock (sku, available, reserved, committed) VALUES ($1, $2, 0, 0) "
            "ON CONFLICT DO NOTHING",
            [(sku, units) for sku in skus],
        )


__all__ = ["RawOrderPath", "asyncpg_dsn", "seed_catalogue"]
