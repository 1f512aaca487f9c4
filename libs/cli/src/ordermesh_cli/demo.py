"""The demo catalogue `ordermesh up` seeds, and the demo orders it places."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import Counter
from dataclasses import dataclass

import grpc

from ordermesh.common.v1 import money_pb2
from ordermesh.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from ordermesh.order.v1 import order_pb2
from ordermesh_cli.access import Access
from ordermesh_client import OrderClient, OrdermeshError, decode


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


async def seed_catalogue(inventory_address: str, access: Access | None = None) -> int:
    """Upsert the demo products and top their stock up once (idempotent across restarts)."""
    access = access or Access()
    admin = access.as_admin()
    async with access.channel(inventory_address) as channel:
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
                metadata=admin,
            )
            await stub.AdjustStock(
                inventory_pb2.AdjustStockRequest(
                    adjustment_id=f"demo-seed-{item.sku}",
                    sku=item.sku,
                    delta=item.stock,
                    note="demo catalogue",
                ),
                timeout=5,
                metadata=admin,
            )
    return len(DEMO_CATALOGUE)


# Token mix of the demo: mostly good cards, and every failure path now and then.
DEMO_TOKENS: dict[str, float] = {
    "tok_ok": 70,
    "tok_decline": 10,
    "tok_insufficient_funds": 5,
    "tok_flaky": 10,
    "tok_timeout": 5,
}
RESTOCK_BELOW = 20
RESTOCK_UNITS = 200


class DemoTraffic:
    """Places a mix of orders through the mesh, so that a user sees every path:
    confirmed, declined, out of stock (the scarce teapot), flaky and slow payments."""

    def __init__(
        self,
        order_address: str,
        inventory_address: str,
        seed: int | None = None,
        access: Access | None = None,
    ):
        self._order_address = order_address
        self._inventory_address = inventory_address
        self._access = access or Access()
        self._rng = random.Random(seed)
        self.outcomes: Counter[str] = Counter()
        self.last: list[str] = []

    def _request(self, n: int) -> order_pb2.PlaceOrderRequest:
        plenty = [p for p in DEMO_CATALOGUE if p.stock >= RESTOCK_UNITS]
        products = self._rng.sample(plenty, k=self._rng.randint(1, 3))
        if self._rng.random() < 0.1:  # now and then, the scarce teapot
            products.append(DEMO_CATALOGUE[-1])
        return order_pb2.PlaceOrderRequest(
            customer_id=f"demo-customer-{self._rng.randint(1, 5)}",
            idempotency_key=f"demo-{uuid.uuid4().hex}",
            items=[
                order_pb2.OrderItem(sku=p.sku, quantity=self._rng.randint(1, 2)) for p in products
            ],
            payment=order_pb2.PaymentMethod(
                token=self._rng.choices(list(DEMO_TOKENS), list(DEMO_TOKENS.values()))[0]
            ),
            currency=DEMO_CURRENCY,
            wait_for_outcome=n % 2 == 0,
        )

    async def place_one(self, orders: OrderClient, n: int) -> str:
        """Place one order and count its outcome, named with how it was learnt:
        ``waited: ...`` when PlaceOrder answered with it (a rejection then comes as an
        error status and its ErrorInfo reason), ``background: ...`` when PlaceOrder
        answered PENDING and WatchOrder told the end (the order's state and reason)."""
        request = self._request(n)
        as_customer = self._access.as_customer(request.customer_id)
        try:
            reply = await orders.place_order(request, timeout_s=5, metadata=as_customer)
            order = reply.order
            if order.state == order_pb2.ORDER_STATE_PENDING:  # not waited for: watch it
                stream = orders.stub.WatchOrder(
                    order_pb2.WatchOrderRequest(order_id=order.order_id),
                    timeout=60,
                    metadata=as_customer,
                )
                async for change in stream:
                    order = change.order
            outcome = order_pb2.OrderState.Name(order.state).removeprefix("ORDER_STATE_")
            if order.reason:
                outcome += (
                    f" ({order_pb2.OrderReason.Name(order.reason).removeprefix('ORDER_REASON_')})"
                )
        except (grpc.aio.AioRpcError, OrdermeshError) as error:
            refused = decode(error)
            outcome = f"{refused.code.name} {refused.reason_name}".rstrip()
        mode = "waited" if request.wait_for_outcome else "background"
        outcome = f"{mode}: {outcome}"
        self.outcomes[outcome] += 1
        token = request.payment.token
        self.last = [
            f"{request.customer_id} {len(request.items)} line(s) {token}: {outcome}",
            *self.last,
        ][:5]
        return outcome

    async def restock(self, inventory: inventory_pb2_grpc.InventoryServiceAsyncStub) -> None:
        skus = [p.sku for p in DEMO_CATALOGUE if p.stock >= RESTOCK_UNITS]
        admin = self._access.as_admin()
        reply = await inventory.GetStock(
            inventory_pb2.GetStockRequest(skus=skus), timeout=5, metadata=admin
        )
        for level in reply.stock:
            if level.available < RESTOCK_BELOW:
                await inventory.AdjustStock(
                    inventory_pb2.AdjustStockRequest(
                        adjustment_id=f"demo-restock-{uuid.uuid4().hex}",
                        sku=level.sku,
                        delta=RESTOCK_UNITS,
                        note="demo restock",
                    ),
                    timeout=5,
                    metadata=admin,
                )

    async def run(self, stop: asyncio.Event, interval_s: float = 0.5) -> None:
        async with (
            self._access.channel(self._order_address) as order_channel,
            self._access.channel(self._inventory_address) as inventory_channel,
        ):
            orders = OrderClient(order_channel)
            inventory = inventory_pb2_grpc.InventoryServiceStub(inventory_channel)
            n = 0
            in_flight: set[asyncio.Task[str]] = set()
            while not stop.is_set():
                n += 1
                task = asyncio.create_task(self.place_one(orders, n))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                if n % 20 == 0:
                    await self.restock(inventory)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
