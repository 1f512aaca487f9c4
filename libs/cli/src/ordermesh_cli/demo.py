"""The demo catalogue `ordermesh up` seeds into inventory-service."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from ordermesh.common.v1 import money_pb2
from ordermesh.inventory.v1 import inventory_pb2, inventory_pb2_grpc


@dataclass(frozen=True)
class DemoProduct:
    sku: str
    name: str
    unit_price_minor: int
    stock: int


DEMO_CURRENCY = "EUR"
DEMO_CATALOGUE = (
    DemoProduct("TEA-EARL-GREY", "Earl Grey, 100 g", 650, 500),
    DemoProduct("TEA-SENCHA", "Sencha, 100 g", 890, 500),
    DemoProduct("MUG-STONEWARE", "Stoneware mug", 1450, 200),
    DemoProduct("KETTLE-GOOSENECK", "Gooseneck kettle", 5900, 40),
    # Scarce on purpose, so that the demo shows orders running out of stock.
    DemoProduct("TEAPOT-CAST-IRON", "Cast-iron teapot", 7900, 3),
)


async def seed_catalogue(inventory_address: str) -> int:
    """Upsert the demo products and top their stock up once (idempotent across restarts)."""
    async with grpc.aio.insecure_channel(inventory_address) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        for item in DEMO_CATALOGUE:
            await stub.UpsertProduct(
                inventory_pb2.UpsertProductRequest(
                    product=inventory_pb2.Product(
                        sku=item.sku,
                        name=item.name,
                        unit_price=money_pb2.Money(
                            amount_minor=item.unit_price_minor, currency=DEMO_CURRENCY
                        ),
                    )
                ),
                timeout=5,
            )
            await stub.AdjustStock(
                inventory_pb2.AdjustStockRequest(
                    adjustment_id=f"demo-seed-{item.sku}",
                    sku=item.sku,
                    delta=item.stock,
                    note="demo catalogue",
                ),
                timeout=5,
            )
    return len(DEMO_CATALOGUE)
