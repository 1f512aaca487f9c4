"""Order tables, and the repository that saves an order together with its events."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select, Update

from ordermesh_messaging.outbox import outbox_table
from ordermesh_order.domain import Order, OrderLine, OrderState, Reason, Work
from ordermesh_platform.db import one_of
from ordermesh_platform.paging import Cursor, newest_first
from ordermesh_platform.telemetry import traceparent_of_current
from ordermesh_platform.writes import Rows, write_together

metadata = MetaData()
outbox = outbox_table(metadata)

orders = Table(
    "orders",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("customer_id", String(128), nullable=False),
    Column("idempotency_key", String(128), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("payment_token", String(256), nullable=False),
    Column("total_minor", BigInteger, nullable=True),
    Column("reason", String(32), nullable=True),
    Column("reason_detail", Text, nullable=False, default=""),
    Column("reason_metadata", Text, nullable=False, default="{}"),
    Column("payment_id", String(36), nullable=False, default=""),
    Column("work", String(16), nullable=False, default=""),
    # Who drives the order's saga until when; the recovery worker takes expired leases.
    Column("lease_owner", String(64), nullable=False, default=""),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    # The trace of the PlaceOrder call, so that an order the recovery worker finishes
    # after a crash goes on in the trace it started in.
    Column("traceparent", String(64), nullable=False, server_default=""),
    Column("tracestate", Text, nullable=False, server_default=""),
    # The caller's risk signals (JSON), forwarded to payment with the authorization.
    Column("risk_signals", Text, nullable=False, server_default=""),
    # Payment's risk assessment of the authorization (JSON); "" when it sent none.
    Column("risk_assessment", Text, nullable=False, server_default=""),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Idempotency: one order per (customer, key), enforced by the database itself.
    UniqueConstraint("customer_id", "idempotency_key", name="uq_orders_customer_key"),
    Index("ix_orders_customer_created", "customer_id", "created_at", "order_id"),
    Index("ix_orders_work_lease", "work", "lease_until"),
    # The recovery worker's scan (owed work, oldest first) reads this index, which holds
    # only orders that still owe work: a settled order leaves it, so the scan costs the
    # same at a million orders as at ten. Without it, each pass read the whole table.
    Index(
        "ix_orders_owing_work",
        "created_at",
        postgresql_where=text("work <> ''"),
        sqlite_where=text("work <> ''"),
    ),
)

order_lines = Table(
    "order_lines",
    metadata,
    Column("order_id", String(36), ForeignKey("orders.order_id"), primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("sku", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price_minor", BigInteger, nullable=True),
)


# The hot statements are built once and run with bind values: a statement object
# reused skips SQLAlchemy's construction and cache-key work, about half of its CPU
# per statement (docs/performance.md). An UPDATE without .values() sets the columns
# named in the parameters.
_GET = select(orders).where(orders.c.order_id == bindparam("order_id"))
# Those looking up many orders are built once per dialect: on PostgreSQL the ids go as
# one array (one statement text, prepared once, for any count: the lease beat's count
# changes every beat), on SQLite as one bind each (``one_of``).


@functools.cache
def _get_many(postgres: bool) -> Select[Any]:
    return select(orders).where(one_of(orders.c.order_id, "ids", postgres))


@functools.cache
def _take_leases(postgres: bool) -> Update:
    # A lease is taken only on a row no other transaction holds (SKIP LOCKED): the
    # saga's batch save updates the same orders in the order of its join, this in the
    # order of its scan, and PostgreSQL answered the two waiting on each other with
    # "deadlock detected", which failed the save's whole batch. A row skipped now is
    # renewed on the next beat.
    leasable = (
        select(orders.c.order_id)
        .where(
            one_of(orders.c.order_id, "b_ids", postgres),
            or_(
                orders.c.lease_until.is_(None),
                orders.c.lease_until < bindparam("b_now"),
                orders.c.lease_owner == bindparam("b_owner"),
            ),
        )
        .with_for_update(skip_locked=True)
    )
    return orders.update().where(orders.c.order_id.in_(leasable)).returning(orders.c.order_id)


@functools.cache
def _by_keys(postgres: bool) -> Select[Any]:
    """The orders of (customer, key) pairs bound as ``customers`` and ``keys``: on
    PostgreSQL two arrays read as rows, one statement text for any count (a retry storm
    replays a different number of keys in every batch); SQLite, one bind per value."""
    pair = tuple_(orders.c.customer_id, orders.c.idempotency_key)
    if not postgres:
        return select(orders).where(pair.in_(bindparam("pairs", expanding=True)))
    given = (
        func.unnest(
            bindparam("customers", type_=ARRAY(orders.c.customer_id.type)),
            bindparam("keys", type_=ARRAY(orders.c.idempotency_key.type)),
        )
        .table_valued("customer_id", "idempotency_key")
        .render_derived(name="given")
    )
    return select(orders).where(pair.in_(select(given.c.customer_id, given.c.idempotency_key)))


@functools.cache
def _lines_of(postgres: bool) -> Select[Any]:
    return (
        select(order_lines)
        .where(one_of(order_lines.c.order_id, "ids", postgres))
        .order_by(order_lines.c.order_id, order_lines.c.line_no)
    )


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class NewOrder(NamedTuple):
    """An order to insert, with its runner's lease and the trace of its PlaceOrder."""

    order: Order
    lease_owner: str
    lease_until: datetime
    traceparent: str
    tracestate: str


class DueOrder(NamedTuple):
    """An order the recovery worker may take up, and the trace it was placed in."""

    order_id: str
    traceparent: str
    tracestate: str


class StaleOrder(Exception):
    """Another writer changed the order since it was read (optimistic concurrency)."""


class OrderRepository:
    """Loads and saves orders. The events an order recorded stay on it: the writer takes
    them (``Order.pull_events``) onto its unit of work, which puts them in the outbox."""

    def __init__(self, session: AsyncConnection) -> None:
        self.session = session
        self._postgres = session.dialect.name == "postgresql"

    async def add(self, order: Order, lease_owner: str, lease_until: datetime) -> bool:
        """Insert one new order, in the current trace; False when (customer, key) has
        an order already."""
        new = NewOrder(order, lease_owner, lease_until, *traceparent_of_current())
        return (await self.add_many([new]))[0] is None

    async def save(self, order: Order, priced: bool = False) -> None:
        """Write one order if nobody changed it since it was read, else StaleOrder."""
        if not (await self.save_many([(order, priced)]))[0]:
            raise StaleOrder(order.order_id)

    async def add_many(self, new: Sequence[NewOrder]) -> list[Order | None]:
        """Insert new orders with their lines. Per order: None when inserted, else the
        order that (customer, key) names already (placed before, or earlier in the
        same batch)."""
        written = await write_together(self.session, *self.insert_writes(new))
        return await self.existing(new, {r.order_id for r in written})

    @staticmethod
    def insert_writes(new: Sequence[NewOrder]) -> tuple[Rows, Rows]:
        """The new orders and their lines, as writes for one statement: an order whose
        (customer, key) names one already is skipped, and so are its lines; the order
        ids written come back."""
        rows = [
            {
                **OrderRepository._row(n.order),
                "version": n.order.version,
                "customer_id": n.order.customer_id,
                "idempotency_key": n.order.idempotency_key,
                "request_hash": n.order.request_hash,
                "currency": n.order.currency,
                "payment_token": n.order.payment_token,
                "risk_signals": n.order.risk_signals,
                "created_at": n.order.created_at,
                "lease_owner": n.lease_owner,
                "lease_until": n.lease_until,
                "traceparent": n.traceparent,
                "tracestate": n.tracestate,
            }
            for n in new
        ]
        lines = [
            {
                "order_id": n.order.order_id,
                "line_no": i,
                "sku": x.sku,
                "quantity": x.quantity,
                "unit_price_minor": x.unit_price_minor,
            }
            for n in new
            for i, x in enumerate(n.order.lines)
        ]
        return (
            Rows(
                orders, rows, conflict=("customer_id", "idempotency_key"), returning=("order_id",)
            ),
            Rows(order_lines, lines, only_written="order_id"),
        )

    async def existing(self, new: Sequence[NewOrder], written: set[str]) -> list[Order | None]:
        """Per new order: None when ``written``, else the order its (customer, key)
        names already."""
        found = await self._by_keys(
            [
                (n.order.customer_id, n.order.idempotency_key)
                for n in new
                if n.order.order_id not in written
            ]
        )
        return [
            None
            if n.order.order_id in written
            else found[(n.order.customer_id, n.order.idempotency_key)]
            for n in new
        ]

    async def _by_keys(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Order]:
        if not keys:
            return {}
        if self._postgres:
            params: dict[str, Any] = {
                "customers": [customer for customer, _ in keys],
                "keys": [key for _, key in keys],
            }
        else:
            params = {"pairs": keys}
        rows = (await self.session.execute(_by_keys(self._postgres), params)).all()
        found = await self._hydrate(rows)
        return {(o.customer_id, o.idempotency_key): o for o in found}

    async def save_many(self, batch: Sequence[tuple[Order, bool]]) -> list[bool]:
        """Write each (order, priced) if nobody changed it since it was read: True when
        written (its version moves on), False when stale."""
        written = await write_together(self.session, *self.save_writes(batch))
        return self.saved(batch, {r.order_id for r in written})

    @staticmethod
    def save_writes(batch: Sequence[tuple[Order, bool]]) -> tuple[Rows, Rows]:
        """Each (order, priced) as writes for one statement: the order where its version
        is still the one read (the order ids written come back), and a priced order's
        lines' prices, of the orders written only."""
        rows = []
        for order, _ in batch:
            row = OrderRepository._row(order)
            row["b_order_id"] = row.pop("order_id")
            rows.append({**row, "b_version": order.version, "version": order.version + 1})
        prices = [
            {"b_order_id": order.order_id, "b_line_no": i, "unit_price_minor": x.unit_price_minor}
            for order, priced in batch
            if priced
            for i, x in enumerate(order.lines)
        ]
        return (
            Rows(orders, rows, update=True, returning=("order_id",)),
            Rows(order_lines, prices, update=True, only_written="b_order_id"),
        )

    @staticmethod
    def saved(batch: Sequence[tuple[Order, bool]], written: set[str]) -> list[bool]:
        """Per (order, priced): whether it was ``written``; a written order's version
        moves on."""
        saved = []
        for order, _ in batch:
            if ok := order.order_id in written:
                order.version += 1
            saved.append(ok)
        return saved

    @staticmethod
    def _row(order: Order) -> dict[str, object]:
        return {
            "order_id": order.order_id,
            "state": order.state.value,
            "total_minor": order.total_minor,
            "reason": order.reason.value if order.reason else None,
            "reason_detail": order.reason_detail,
            "reason_metadata": json.dumps(order.reason_metadata),
            "payment_id": order.payment_id,
            "risk_assessment": order.risk_assessment,
            "work": order.work.value,
            "updated_at": order.updated_at,
        }

    async def get(self, order_id: str) -> Order | None:
        row = (await self.session.execute(_GET, {"order_id": order_id})).first()
        if row is None:
            return None
        return (await self._hydrate([row]))[0]

    async def get_many(self, order_ids: Sequence[str]) -> dict[str, Order]:
        """The orders that exist among ``order_ids``, with their lines: two statements
        however many."""
        if not order_ids:
            return {}
        query = _get_many(self._postgres)
        rows = (await self.session.execute(query, {"ids": list(order_ids)})).all()
        return {order.order_id: order for order in await self._hydrate(rows)}

    async def list_for_customer(
        self, customer_id: str, state: OrderState | None, after: Cursor | None, limit: int
    ) -> list[Order]:
        c = orders.c
        query = newest_first(
            select(orders).where(c.customer_id == customer_id), c.created_at, c.order_id, after
        ).limit(limit)
        if state is not None:
            query = query.where(c.state == state.value)
        return await self._hydrate((await self.session.execute(query)).all())

    async def take_leases(
        self, order_ids: Sequence[str], owner: str, now: datetime, until: datetime
    ) -> set[str]:
        """Take the leases that are free or expired (or ours already) of the orders no
        other transaction is writing; the ids taken."""
        if not order_ids:
            return set()
        result = await self.session.execute(
            _take_leases(self._postgres),
            {
                "b_ids": list(order_ids),
                "b_now": now,
                "b_owner": owner,
                "lease_owner": owner,
                "lease_until": until,
            },
        )
        return {row.order_id for row in result}

    async def with_work_due(self, now: datetime, limit: int) -> list[DueOrder]:
        """Orders that still owe work and that nobody holds a live lease on."""
        query = (
            select(orders.c.order_id, orders.c.traceparent, orders.c.tracestate)
            .where(
                # Inline, not a bind value: the planner can match a partial index only
                # to a predicate it can read in the statement itself.
                orders.c.work != literal_column("''"),
                or_(orders.c.lease_until.is_(None), orders.c.lease_until < now),
            )
            .order_by(orders.c.created_at)
            .limit(limit)
        )
        return [DueOrder(*row) for row in (await self.session.execute(query)).all()]

    async def _hydrate(self, rows: Sequence[Row[Any]]) -> list[Order]:
        if not rows:
            return []
        ids = [r.order_id for r in rows]
        lines: dict[str, list[OrderLine]] = {i: [] for i in ids}
        for x in (await self.session.execute(_lines_of(self._postgres), {"ids": ids})).all():
            lines[x.order_id].append(OrderLine(x.sku, x.quantity, x.unit_price_minor))
        return [
            Order(
                order_id=r.order_id,
                customer_id=r.customer_id,
                idempotency_key=r.idempotency_key,
                request_hash=r.request_hash,
                state=OrderState(r.state),
                lines=tuple(lines[r.order_id]),
                currency=r.currency,
                payment_token=r.payment_token,
                risk_signals=r.risk_signals,
                created_at=_aware(r.created_at),
                updated_at=_aware(r.updated_at),
                total_minor=r.total_minor,
                reason=Reason(r.reason) if r.reason else None,
                reason_detail=r.reason_detail,
                reason_metadata=json.loads(r.reason_metadata),
                payment_id=r.payment_id,
                risk_assessment=r.risk_assessment,
                work=Work(r.work),
                version=r.version,
            )
            for r in rows
        ]
