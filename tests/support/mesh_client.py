"""Typed access to a running mesh, for end-to-end tests."""

from __future__ import annotations

import asyncio
import time
import uuid

from ordermesh.common.v1 import money_pb2
from ordermesh.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from ordermesh.order.v1 import order_pb2, order_pb2_grpc
from ordermesh.payment.v1 import payment_pb2, payment_pb2_grpc
from ordermesh_cli.health_client import check_health
from ordermesh_cli.invariants import InvariantReport, check_invariants, owed_work
from ordermesh_cli.mesh import LocalMesh


class MeshClient:
    """On a mesh with TLS its channels present the caller certificate; with
    authentication its helpers call as an administrator (the stubs send no token)."""

    def __init__(self, mesh: LocalMesh, saga_timeout_s: float) -> None:
        self.mesh = mesh
        self.saga_timeout_s = saga_timeout_s
        config = mesh.config
        self.access = config.access()
        self.admin = self.access.as_admin()
        self._channels = {
            name: self.access.channel(config.address(name))
            for name in ("order", "inventory", "payment")
        }
        self.orders = order_pb2_grpc.OrderServiceStub(self._channels["order"])
        self.inventory = inventory_pb2_grpc.InventoryServiceStub(self._channels["inventory"])
        self.payments = payment_pb2_grpc.PaymentServiceStub(self._channels["payment"])

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    async def add_product(self, price_minor: int, stock: int, currency: str = "EUR") -> str:
        sku = f"SKU-{uuid.uuid4().hex[:10].upper()}"
        await self.inventory.UpsertProduct(
            inventory_pb2.UpsertProductRequest(
                product=inventory_pb2.Product(
                    sku=sku,
                    name=sku.lower(),
                    unit_price=money_pb2.Money(amount_minor=price_minor, currency=currency),
                )
            ),
            timeout=5,
            metadata=self.admin,
        )
        if stock:
            await self.inventory.AdjustStock(
                inventory_pb2.AdjustStockRequest(adjustment_id=f"init-{sku}", sku=sku, delta=stock),
                timeout=5,
                metadata=self.admin,
            )
        return sku

    async def stock(self, sku: str) -> tuple[int, int, int]:
        reply = await self.inventory.GetStock(
            inventory_pb2.GetStockRequest(skus=[sku]), timeout=5, metadata=self.admin
        )
        level = reply.stock[0]
        return level.available, level.reserved, level.committed

    def place_request(
        self,
        items: dict[str, int],
        token: str = "tok_ok",
        wait: bool = True,
        key: str | None = None,
        customer: str = "alice",
    ) -> order_pb2.PlaceOrderRequest:
        return order_pb2.PlaceOrderRequest(
            customer_id=customer,
            idempotency_key=key or uuid.uuid4().hex,
            items=[order_pb2.OrderItem(sku=s, quantity=q) for s, q in items.items()],
            payment=order_pb2.PaymentMethod(token=token),
            currency="EUR",
            wait_for_outcome=wait,
        )

    async def place(
        self, items: dict[str, int], deadline_s: float = 15, **kw: object
    ) -> order_pb2.Order:
        request = self.place_request(items, **kw)  # type: ignore[arg-type]
        reply = await self.orders.PlaceOrder(
            request, timeout=deadline_s, metadata=self.access.as_customer(request.customer_id)
        )
        return reply.order

    async def get(self, order_id: str) -> order_pb2.Order:
        reply = await self.orders.GetOrder(
            order_pb2.GetOrderRequest(order_id=order_id), timeout=5, metadata=self.admin
        )
        return reply.order

    async def payment(self, order_id: str) -> payment_pb2.Payment:
        reply = await self.payments.GetPayment(
            payment_pb2.GetPaymentRequest(order_id=order_id), timeout=5, metadata=self.admin
        )
        return reply.payment

    async def wait_for(self, order_id: str, state: int, timeout_s: float) -> order_pb2.Order:
        deadline = time.monotonic() + timeout_s
        while True:
            order = await self.get(order_id)
            if order.state == state or time.monotonic() > deadline:
                return order
            await asyncio.sleep(0.1)

    async def settle(self, timeout_s: float = 30) -> None:
        """Wait until no order owes work (sagas, compensations, captures all done)."""
        deadline = time.monotonic() + timeout_s
        url = self.mesh.config.database_url("order")
        while await owed_work(url):
            assert time.monotonic() < deadline, "the mesh did not settle"
            await asyncio.sleep(0.2)

    async def invariants(self) -> InvariantReport:
        c = self.mesh.config
        return await check_invariants(
            c.database_url("order"),
            c.database_url("inventory"),
            c.database_url("payment"),
            self.saga_timeout_s,
        )

    async def restart(self, name: str, replica: int = 0, **env: str) -> None:
        self.mesh.stop_service(name, replica)
        self.mesh.start_service(name, replica, **env)
        await self.wait_serving(name, replica)

    async def wait_serving(self, name: str, replica: int = 0, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        child = self.mesh.child(name, replica)
        tls = self.mesh.config.caller_tls
        while await check_health(child.address, tls=tls) != "SERVING":
            assert child.proc.poll() is None, f"{child.label} exited"
            assert time.monotonic() < deadline, f"{child.label} never became SERVING"
            await asyncio.sleep(0.1)
