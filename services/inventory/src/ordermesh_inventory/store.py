"""Inventory tables and the queries the domain needs."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Update

from ordermesh_inventory.domain import (
    Adjustment,
    Product,
    Reservation,
    ReservationLine,
    ReservationState,
    StockLevel,
)
from ordermesh_messaging.outbox import outbox_table
from ordermesh_platform.db import insert_new
from ordermesh_platform.errors import Conflict, NotFound

metadata = MetaData()
outbox = outbox_table(metadata)


def utcnow() -> datetime:
    return datetime.now(UTC)


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

# Moves between the stock columns, by reservation transition.
RESERVE = ("available", "reserved")
COMMIT = ("reserved", "committed")
RELEASE_RESERVED = ("reserved", "available")
RELEASE_COMMITTED = ("committed", "available")


def _level(row: object) -> StockLevel:
    return StockLevel(row.sku, row.available, row.reserved, row.committed)  # type: ignore[attr-defined]


# The hot statements are built once and run with bind values (see the order store).
_RESERVATION = select(reservations).where(reservations.c.order_id == bindparam("order_id"))
_RESERVATION_LOCKED = _RESERVATION.with_for_update()
_RESERVATION_LINES = (
    select(reservation_lines)
    .where(reservation_lines.c.order_id == bindparam("order_id"))
    .order_by(reservation_lines.c.sku)
)
_TAKE_AVAILABLE = (
    stock.update()
    .where(stock.c.sku == bindparam("b_sku"), stock.c.available >= bindparam("b_quantity"))
    .values(
        available=stock.c.available - bindparam("b_quantity"),
        reserved=stock.c.reserved + bindparam("b_quantity"),
    )
)
_SET_STATE = reservations.update().where(reservations.c.order_id == bindparam("b_order_id"))


@functools.cache
def _move(source: str, target: str) -> Update:
    return (
        stock.update()
        .where(stock.c.sku == bindparam("b_sku"))
        .values(
            {
                source: stock.c[source] - bindparam("b_quantity"),
                target: stock.c[target] + bindparam("b_quantity"),
            }
        )
    )


class InventoryStore:
    """Queries over one session; the caller owns the transaction."""

    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

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
                    "IDEMPOTENCY_KEY_REUSED",
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

    async def prices(self, skus: list[str]) -> dict[str, Product]:
        rows = (await self.session.execute(select(products).where(products.c.sku.in_(skus)))).all()
        return {r.sku: Product(r.sku, r.name, r.unit_price_minor, r.currency) for r in rows}

    async def get_reservation(self, order_id: str, lock: bool = False) -> Reservation | None:
        query = _RESERVATION_LOCKED if lock else _RESERVATION
        row = (await self.session.execute(query, {"order_id": order_id})).first()
        if row is None:
            return None
        lines = (await self.session.execute(_RESERVATION_LINES, {"order_id": order_id})).all()
        return Reservation(
            row.order_id,
            ReservationState(row.state),
            tuple(ReservationLine(x.sku, x.quantity, x.unit_price_minor) for x in lines),
            row.currency,
            row.expires_at,
            row.created_at,
        )

    async def claim_reservation(self, reservation: Reservation) -> bool:
        """Insert the reservation head; False when one exists already for the order
        (on PostgreSQL a concurrent claimer waits here for the first to finish)."""
        row = {
            "order_id": reservation.order_id,
            "state": reservation.state.value,
            "currency": reservation.currency,
            "expires_at": reservation.expires_at,
            "created_at": reservation.created_at,
            "updated_at": reservation.created_at,
        }
        return bool(await insert_new(self.session, reservations, [row], conflict=("order_id",)))

    async def add_lines(self, order_id: str, lines: tuple[ReservationLine, ...]) -> None:
        await self.session.execute(
            reservation_lines.insert(),
            [
                {
                    "order_id": order_id,
                    "sku": x.sku,
                    "quantity": x.quantity,
                    "unit_price_minor": x.unit_price_minor,
                }
                for x in lines
            ],
        )

    async def take_available(self, sku: str, quantity: int) -> bool:
        """Move units from available to reserved only if enough are available: the
        condition and the change are one statement, so no two orders take one unit."""
        result = await self.session.execute(_TAKE_AVAILABLE, {"b_sku": sku, "b_quantity": quantity})
        return bool(result.rowcount)

    async def move(self, lines: tuple[ReservationLine, ...], columns: tuple[str, str]) -> None:
        statement = _move(*columns)
        for line in lines:  # sorted by SKU: the one lock order
            await self.session.execute(statement, {"b_sku": line.sku, "b_quantity": line.quantity})

    async def set_state(self, order_id: str, state: ReservationState) -> None:
        await self.session.execute(
            _SET_STATE, {"b_order_id": order_id, "state": state.value, "updated_at": utcnow()}
        )

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
