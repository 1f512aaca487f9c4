"""Inventory tables and the queries the domain needs."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    MetaData,
    String,
    Table,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from ordermesh_inventory.domain import Adjustment, Product, StockLevel
from ordermesh_platform.db import dialect_insert
from ordermesh_platform.errors import Conflict, NotFound

metadata = MetaData()


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


def _level(row: object) -> StockLevel:
    return StockLevel(row.sku, row.available, row.reserved, row.committed)  # type: ignore[attr-defined]


class InventoryStore:
    """Queries over one session; the caller owns the transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def upsert_product(self, product: Product) -> None:
        insert = dialect_insert(self.session.get_bind().dialect.name)
        now = utcnow()
        values = {
            "sku": product.sku,
            "name": product.name,
            "unit_price_minor": product.unit_price_minor,
            "currency": product.currency,
        }
        await self.session.execute(
            insert(products)
            .values(**values, created_at=now, updated_at=now)
            .on_conflict_do_update(index_elements=["sku"], set_={**values, "updated_at": now})
        )
        await self.session.execute(
            insert(stock)
            .values(sku=product.sku, available=0, reserved=0, committed=0)
            .on_conflict_do_nothing(index_elements=["sku"])
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
