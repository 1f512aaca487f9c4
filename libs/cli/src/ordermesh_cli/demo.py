"""The demo catalogue `ordermesh up` seeds, and the demo orders it places: drawn from
payment's risk simulator (its customers, tokens, signals, items and fraud patterns),
with the demo's own failure paths mixed in."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from ordermesh.common.v1 import money_pb2
from ordermesh.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from ordermesh.order.v1 import order_pb2
from ordermesh_cli.access import Access
from ordermesh_cli.simulated_orders import SimulatedOrders, simulate_orders
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


# The simulated orders the demo draws from: a month of them, a twentieth fraud, so that
# risk scoring (ORDERMESH_RISK_ENABLED=true) has something to decline now and then.
SIMULATED_ORDERS = 2000
SIMULATED_DAYS = 30
SIMULATED_FRAUD_SHARE = 0.05
SIMULATED_SEED = 7


def demo_orders(state_dir: Path) -> SimulatedOrders:
    """The simulator's orders for the demo, written under the mesh's state directory."""
    return simulate_orders(
        state_dir / "demo-orders", SIMULATED_ORDERS, SIMULATED_SEED, SIMULATED_DAYS,
        SIMULATED_FRAUD_SHARE,
    )  # fmt: skip


def demo_catalogue(orders: SimulatedOrders) -> tuple[DemoProduct, ...]:
    """The demo's products and those the simulated orders name (at the simulator's
    prices, with plenty of stock); a SKU of both keeps the demo's product."""
    ours = {p.sku for p in DEMO_CATALOGUE}
    simulated = tuple(
        DemoProduct(sku, sku.replace("-", " ").capitalize(), price, SIMULATED_STOCK)
        for sku, price in sorted(orders.products().items())
        if sku not in ours
    )
    return DEMO_CATALOGUE + simulated


async def seed_catalogue(
    inventory_address: str,
    access: Access | None = None,
    catalogue: Sequence[DemoProduct] = DEMO_CATALOGUE,
) -> int:
    """Upsert the products and top their stock up once (idempotent across restarts)."""
    access = access or Access()
    admin = access.as_admin()
    async with access.channel(inventory_address) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        for item in catalogue:
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
    return len(catalogue)


# The provider's testing tokens the demo pays with now and then instead of the simulated
# customer's card, so that every failure path shows (declines come from the simulator).
DEMO_FAILURE_TOKENS: dict[str, float] = {
    "tok_insufficient_funds": 0.03,
    "tok_flaky": 0.10,
    "tok_timeout": 0.05,
}
RESTOCK_BELOW = 20
RESTOCK_UNITS = 200
SIMULATED_STOCK = 500


class DemoTraffic:
    """Places the simulator's orders through the mesh, in the log's order, so that a
    user sees every path: confirmed, declined by the provider or by risk scoring, out
    of stock (the scarce teapot, added now and then), flaky and slow payments."""

    def __init__(
        self,
        order_address: str,
        inventory_address: str,
        orders: SimulatedOrders,
        seed: int | None = None,
        access: Access | None = None,
        catalogue: Sequence[DemoProduct] = DEMO_CATALOGUE,
    ):
        self._order_address = order_address
        self._inventory_address = inventory_address
        self._orders = orders
        self._access = access or Access()
        self._rng = random.Random(seed)
        self._restocked = [p.sku for p in catalogue if p.stock >= RESTOCK_UNITS]
        self.outcomes: Counter[str] = Counter()
        self.last: list[str] = []

    def _request(self, n: int) -> tuple[order_pb2.PlaceOrderRequest, str]:
        """The next simulated order as PlaceOrder takes it, and its fraud pattern."""
        drawn = self._orders.draw()
        # Fraud on the fraudster's own card is charged back later (a label for training).
        token = None if drawn.declined else drawn.charged_back_token
        roll = self._rng.random()
        for testing, share in DEMO_FAILURE_TOKENS.items():
            if roll < share:
                token = testing
                break
            roll -= share
        request = drawn.place_request(wait_for_outcome=n % 2 == 0, token=token)
        request.idempotency_key = f"demo-{request.idempotency_key}"
        scarce = DEMO_CATALOGUE[-1].sku
        if self._rng.random() < 0.1 and scarce not in {i.sku for i in request.items}:
            request.items.add(sku=scarce, quantity=1)  # now and then, the scarce teapot
        return request, drawn.pattern

    async def place_one(self, orders: OrderClient, n: int) -> str:
        """Place one order and count its outcome, named with how it was learnt:
        ``waited: ...`` when PlaceOrder answered with it (a rejection then comes as an
        error status and its ErrorInfo reason), ``background: ...`` when PlaceOrder
        answered PENDING and WatchOrder told the end (the order's state and reason)."""
        request, pattern = self._request(n)
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
        fraud = f" [{pattern}]" if pattern else ""
        self.last = [
            f"{request.customer_id} {len(request.items)} line(s) {token}{fraud}: {outcome}",
            *self.last,
        ][:5]
        return outcome

    async def restock(self, inventory: inventory_pb2_grpc.InventoryServiceAsyncStub) -> None:
        admin = self._access.as_admin()
        reply = await inventory.GetStock(
            inventory_pb2.GetStockRequest(skus=self._restocked), timeout=5, metadata=admin
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
