"""Inventory use cases: each one transaction over the store, rules from the domain."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ordermesh_inventory.domain import (
    MAX_SKUS_PER_CALL,
    Adjustment,
    Product,
    StockLevel,
    validate_adjustment,
    validate_product,
    validate_sku_list,
)
from ordermesh_inventory.store import InventoryStore


class Inventory:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def upsert_product(self, product: Product) -> Product:
        validate_product(product)
        async with self._sessions.begin() as session:
            await InventoryStore(session).upsert_product(product)
        return product

    async def list_products(self, skus: list[str]) -> list[Product]:
        validate_sku_list(skus, "skus", required=False)
        async with self._sessions() as session:
            return await InventoryStore(session).list_products(skus, MAX_SKUS_PER_CALL)

    async def get_stock(self, skus: list[str]) -> list[StockLevel]:
        validate_sku_list(skus, "skus", required=True)
        async with self._sessions() as session:
            return await InventoryStore(session).get_stock(skus)

    async def adjust_stock(self, adjustment: Adjustment) -> StockLevel:
        validate_adjustment(adjustment)
        async with self._sessions.begin() as session:
            store = InventoryStore(session)
            # Lock the SKU first: concurrent adjustments of one SKU queue here.
            level = await store.lock_stock(adjustment.sku)
            if not await store.record_adjustment(adjustment):
                return level
            level = level.adjusted(adjustment.delta)
            await store.save_stock(level)
            return level
