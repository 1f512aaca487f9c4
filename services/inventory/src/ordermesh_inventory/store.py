"""Inventory tables and the queries the domain needs."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from ordermesh.common.v1.errors_pb2 import ErrorReason
from ordermesh_inventory.domain import (
    Adjustment,
    Product,
    Reservation,
    ReservationLine,
    ReservationState,
    StockLevel,
)
from ordermesh_messaging.outbox import outbox_table
from ordermesh_platform.db import insert_new, insert_rows, one_of
from ordermesh_platform.errors import Conflict, NotFound
from ordermesh_platform.writes import Rows

metadata = MetaData()
outbox = outbox_table(metadata)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive UTC: a replay must equal the reservation first answered.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


products = Table(
    "products",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("unit_price_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("updated_at", DateTime(timezone=True), nullable=False, default=utcnow),
)

stock = Table(
    "stock",
    metadata,
    Column("sku", String(64), ForeignKey("products.sku"), primary_key=True),
    Column("available", BigInteger, nullable=False, default=0),
    Column("reserved", BigInteger, nullable=False, default=0),
    Column("committed", BigInteger, nullable=False, default=0),
    # The database itself refuses an oversell, whatever the code above it does.
    CheckConstraint("available >= 0", name="ck_stock_available_nonnegative"),
    CheckConstraint("reserved >= 0", name="ck_stock_reserved_nonnegative"),
    CheckConstraint("committed >= 0", name="ck_stock_committed_nonnegative"),
)

stock_adjustments = Table(
    "stock_adjustments",
    metadata,
    Column("adjustment_id", String(128), primary_key=True),
    Column("sku", String(64), ForeignKey("products.sku"), nullable=False),
    Column("delta", BigInteger, nullable=False),
    Column("note", String(256), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
)

reservations = Table(
    "reservations",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_reservations_state_expires", "state", "expires_at"),
)

reservation_lines = Table(
    "reservation_lines",
    metadata,
    Column("order_id", String(64), ForeignKey("reservations.order_id"), primary_key=True),
    Column("sku", String(64), ForeignKey("products.sku"), primary_key=True),
    Column("quantity", Integer, nullable=False),
    Column("unit_price_minor", BigInteger, nullable=False),
)

STOCK_COLUMNS = ("available", "reserved", "committed")
# Moves between the stock columns, by reservation transition.
RESERVE = ("available", "reserved")
COMMIT = ("reserved", "committed")
RELEASE_RESERVED = ("reserved", "available")
RELEASE_COMMITTED = ("committed", "available")


def _level(row: object) -> StockLevel:
    return StockLevel(row.sku, row.available, row.reserved, row.committed)  # type: ignore[attr-defined]


# Keys per look-up: below SQLite's 32,766 binds a statement (PostgreSQL takes one array).
MAX_KEYS_PER_STATEMENT = 10_000


# The hot statements are built once per dialect and run with bind values.
@functools.cache
def _reservations(postgres: bool, lock: bool) -> Select[Any]:
    query = (
        select(reservations)
        .where(one_of(reservations.c.order_id, "order_ids", postgres))
        .order_by(reservations.c.order_id)
    )
    return query.with_for_update() if lock else query


@functools.cache
def _reservation_lines(postgres: bool) -> Select[Any]:
    return (
        select(reservation_lines)
        .where(one_of(reservation_lines.c.order_id, "order_ids", postgres))
        .order_by(reservation_lines.c.order_id, reservation_lines.c.sku)
    )


@functools.cache
def _stock_locked(postgres: bool) -> Select[Any]:
    # ORDER BY with FOR UPDATE locks in that order: every writer takes SKUs in one order.
    return (
        select(stock)
        .where(one_of(stock.c.sku, "skus", postgres))
        .order_by(stock.c.sku)
        .with_for_update()
    )


@functools.cache
def _priced_stock_locked(postgres: bool) -> Select[Any]:
    # The stock rows locked in SKU order (as _stock_locked), each with its price.
    return (
        select(stock, products.c.name, products.c.unit_price_minor, products.c.currency)
        .join(products, products.c.sku == stock.c.sku)
        .where(one_of(stock.c.sku, "skus", postgres))
        .order_by(stock.c.sku)
        .with_for_update(of=stock)
    )


def _chunks(keys: Sequence[str]) -> list[Sequence[str]]:
    return [
        keys[start : start + MAX_KEYS_PER_STATEMENT]
        for start in range(0, len(keys), MAX_KEYS_PER_STATEMENT)
    ]


def _stock_deltas(
    moves: Iterable[tuple[tuple[ReservationLine, ...], tuple[str, str]]],
) -> list[dict[str, object]]:
    """One row per SKU, sorted, adding to each stock column what the moves shift."""
    deltas: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(STOCK_COLUMNS, 0))
    for lines, (source, target) in moves:
        for line in lines:
            deltas[line.sku][source] -= line.quantity
            deltas[line.sku][target] += line.quantity
    return [
        {"b_sku": sku, **{f"add_{column}": deltas[sku][column] for column in STOCK_COLUMNS}}
        for sku in sorted(deltas)
    ]


class InventoryStore:
    """Queries over one session; the caller owns the transaction."""

    def __init__(self, session: AsyncConnection) -> None:
        self.session = session
        self._postgres = session.dialect.name == "postgresql"

    async def upsert_product(self, product: Product) -> None:
        now = utcnow()
        row = {
            "sku": product.sku,
            "name": product.name,
            "unit_price_minor": product.unit_price_minor,
            "currency": product.currency,
            "created_at": now,
            "updated_at": now,
        }
        await insert_new(
            self.session,
            products,
            [row],
            conflict=("sku",),
            update=("name", "unit_price_minor", "currency", "updated_at"),
        )
        await insert_new(
            self.session,
            stock,
            [{"sku": product.sku, "available": 0, "reserved": 0, "committed": 0}],
            conflict=("sku",),
        )

    async def list_products(self, skus: list[str], limit: int) -> list[Product]:
        query = select(products).order_by(products.c.sku).limit(limit)
        if skus:
            query = query.where(products.c.sku.in_(skus))
        rows = (await self.session.execute(query)).all()
        return [Product(r.sku, r.name, r.unit_price_minor, r.currency) for r in rows]

    async def get_stock(self, skus: list[str]) -> list[StockLevel]:
        rows = (
            await self.session.execute(
                select(stock).where(stock.c.sku.in_(skus)).order_by(stock.c.sku)
            )
        ).all()
        return [_level(r) for r in rows]

    async def lock_stock(self, sku: str) -> StockLevel:
        row = (
            await self.session.execute(select(stock).where(stock.c.sku == sku).with_for_update())
        ).first()
        if row is None:
            raise NotFound("product", sku)
        return _level(row)

    async def save_stock(self, level: StockLevel) -> None:
        await self.session.execute(
            stock.update()
            .where(stock.c.sku == level.sku)
            .values(available=level.available, reserved=level.reserved, committed=level.committed)
        )

    async def record_adjustment(self, adjustment: Adjustment) -> bool:
        """Record the adjustment; False when the same one was applied before.

        The same id with other content is a conflict, never a silent merge.
        """
        existing = (
            await self.session.execute(
                select(stock_adjustments).where(
                    stock_adjustments.c.adjustment_id == adjustment.adjustment_id
                )
            )
        ).first()
        if existing is not None:
            if existing.sku != adjustment.sku or existing.delta != adjustment.delta:
                raise Conflict(
                    ErrorReason.IDEMPOTENCY_KEY_REUSED,
                    f"adjustment {adjustment.adjustment_id!r} was applied with other content",
                    {"adjustment_id": adjustment.adjustment_id},
                )
            return False
        await self.session.execute(
            stock_adjustments.insert().values(
                adjustment_id=adjustment.adjustment_id,
                sku=adjustment.sku,
                delta=adjustment.delta,
                note=adjustment.note,
                created_at=utcnow(),
            )
        )
        return True

    async def lock_priced_stock(
        self, skus: Sequence[str]
    ) -> tuple[dict[str, Product], dict[str, StockLevel]]:
        """The products among ``skus`` and their stock rows, locked in SKU order
        (``skus`` must be sorted): one statement for both."""
        catalogue, levels = {}, {}
        for chunk in _chunks(skus):
            for r in await self.session.execute(
                _priced_stock_locked(self._postgres), {"skus": list(chunk)}
            ):
                catalogue[r.sku] = Product(r.sku, r.name, r.unit_price_minor, r.currency)
                levels[r.sku] = _level(r)
        return catalogue, levels

    async def lock_stock_many(self, skus: Sequence[str]) -> dict[str, StockLevel]:
        """Lock the SKUs' stock rows, in SKU order (``skus`` must be sorted)."""
        levels = {}
        for chunk in _chunks(skus):
            for row in await self.session.execute(
                _stock_locked(self._postgres), {"skus": list(chunk)}
            ):
                levels[row.sku] = _level(row)
        return levels

    async def get_reservations(
        self, order_ids: Sequence[str], lock: bool = False
    ) -> dict[str, Reservation]:
        """The reservations of these orders, by order id; ``lock`` takes their rows in
        order id order."""
        if not order_ids:
            return {}
        query = _reservations(self._postgres, lock)
        heads = (await self.session.execute(query, {"order_ids": list(order_ids)})).all()
        if not heads:
            return {}
        lines: dict[str, list[ReservationLine]] = defaultdict(list)
        found = [r.order_id for r in heads]
        query = _reservation_lines(self._postgres)
        for x in await self.session.execute(query, {"order_ids": found}):
            lines[x.order_id].append(ReservationLine(x.sku, x.quantity, x.unit_price_minor))
        return {
            r.order_id: Reservation(
                r.order_id,
                ReservationState(r.state),
                tuple(lines[r.order_id]),
                r.currency,
                _aware(r.expires_at),
                _aware(r.created_at),
            )
            for r in heads
        }

    @staticmethod
    def reservation_writes(reserved: Sequence[Reservation]) -> tuple[Rows, Rows, Rows]:
        """New reservations as writes for one statement: their heads (each skipped
        where the order has one already; the order ids written come back), their lines,
        and their units moved from available to reserved."""
        ordered = sorted(reserved, key=lambda r: r.order_id)  # heads in order id order
        heads = Rows(
            reservations,
            [_head(r) for r in ordered],
            conflict=("order_id",),
            returning=("order_id",),
        )
        # A line of an order whose head was there already is skipped too: the caller
        # rolls back when any head was, so nothing of that order lands either way.
        lines = Rows(reservation_lines, _lines(ordered), conflict=("order_id", "sku"))
        return heads, lines, InventoryStore.move_writes((r.lines, RESERVE) for r in ordered)

    async def claim_reservations(self, claims: Iterable[Reservation]) -> set[str]:
        """Insert the reservation heads; returns the order ids written. One left out
        already had a head (on PostgreSQL a concurrent claimer waits here for the first
        to finish). Rows go in order id order, so two claimers never wait on each other."""
        rows = [_head(r) for r in sorted(claims, key=lambda r: r.order_id)]
        written = await insert_rows(
            self.session, reservations, rows, conflict=("order_id",), returning=("order_id",)
        )
        return {r.order_id for r in written}

    @staticmethod
    def move_writes(moves: Iterable[tuple[tuple[ReservationLine, ...], tuple[str, str]]]) -> Rows:
        """Units shifted between stock columns, as a write for one statement: each move
        is lines and (source, target)."""
        return Rows(stock, _stock_deltas(moves), update=True)

    @staticmethod
    def state_writes(order_ids: Iterable[str], state: ReservationState) -> Rows:
        """The reservations moved to ``state``, as a write for one statement."""
        now = utcnow()
        rows = [
            {"b_order_id": order_id, "state": state.value, "updated_at": now}
            for order_id in sorted(order_ids)
        ]
        return Rows(reservations, rows, update=True)

    async def expired(self, now: datetime, limit: int) -> list[str]:
        query = (
            select(reservations.c.order_id)
            .where(
                reservations.c.state == ReservationState.RESERVED.value,
                reservations.c.expires_at < now,
            )
            .order_by(reservations.c.expires_at)
            .limit(limit)
        )
        return list((await self.session.execute(query)).scalars())


def _head(r: Reservation) -> dict[str, object]:
    return {
        "order_id": r.order_id,
        "state": r.state.value,
        "currency": r.currency,
        "expires_at": r.expires_at,
        "created_at": r.created_at,
        "updated_at": r.created_at,
    }


def _lines(reserved: Iterable[Reservation]) -> list[dict[str, object]]:
    return [
        {
            "order_id": r.order_id,
            "sku": x.sku,
            "quantity": x.quantity,
            "unit_price_minor": x.unit_price_minor,
        }
        for r in reserved
        for x in r.lines
    ]
