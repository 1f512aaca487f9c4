"""The InventoryService servicer: protobuf in and out, nothing else."""

from __future__ import annotations

import grpc

from ordermesh.common.v1 import money_pb2
from ordermesh.inventory.v1 import inventory_pb2 as pb
from ordermesh.inventory.v1 import inventory_pb2_grpc
from ordermesh_inventory.domain import (
    Adjustment,
    Product,
    Reservation,
    ReservationLine,
    ReservationState,
    StockLevel,
)
from ordermesh_inventory.usecases import Inventory
from ordermesh_platform.convert import to_timestamp
from ordermesh_platform.policy import Admin, AnyCaller, Policy, ServiceOrAdmin

Context = grpc.aio.ServicerContext[object, object]

# Who may call what, while ORDERMESH_AUTH_ENABLED is on (docs/security.md).
ORDER_SERVICE = ServiceOrAdmin(("order",))
POLICY = Policy(
    pb.DESCRIPTOR.services_by_name["InventoryService"].full_name,
    {
        "ListProducts": AnyCaller(),
        "GetStock": AnyCaller(),
        "UpsertProduct": Admin(),
        "AdjustStock": Admin(),
        "ReserveStock": ORDER_SERVICE,
        "CommitReservation": ORDER_SERVICE,
        "ReleaseReservation": ORDER_SERVICE,
    },
)


def product_to_pb(product: Product) -> pb.Product:
    return pb.Product(
        sku=product.sku,
        name=product.name,
        unit_price=money_pb2.Money(
            amount_minor=product.unit_price_minor, currency=product.currency
        ),
    )


def stock_to_pb(level: StockLevel) -> pb.StockLevel:
    return pb.StockLevel(
        sku=level.sku,
        available=level.available,
        reserved=level.reserved,
        committed=level.committed,
    )


STATE_TO_PB = {
    ReservationState.RESERVED: pb.RESERVATION_STATE_RESERVED,
    ReservationState.COMMITTED: pb.RESERVATION_STATE_COMMITTED,
    ReservationState.RELEASED: pb.RESERVATION_STATE_RELEASED,
}


def reservation_to_pb(r: Reservation) -> pb.Reservation:
    return pb.Reservation(
        order_id=r.order_id,
        state=STATE_TO_PB[r.state],
        lines=[
            pb.ReservationLine(
                sku=x.sku,
                quantity=x.quantity,
                unit_price=money_pb2.Money(amount_minor=x.unit_price_minor, currency=r.currency),
            )
            for x in r.lines
        ],
        expire_time=to_timestamp(r.expires_at),
        create_time=to_timestamp(r.created_at),
    )


class InventoryApi(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self, inventory: Inventory) -> None:
        self._inventory = inventory

    async def UpsertProduct(
        self, request: pb.UpsertProductRequest, context: Context
    ) -> pb.UpsertProductResponse:
        p = request.product
        product = await self._inventory.upsert_product(
            Product(p.sku, p.name, p.unit_price.amount_minor, p.unit_price.currency)
        )
        return pb.UpsertProductResponse(product=product_to_pb(product))

    async def ListProducts(
        self, request: pb.ListProductsRequest, context: Context
    ) -> pb.ListProductsResponse:
        products = await self._inventory.list_products(list(request.skus))
        return pb.ListProductsResponse(products=[product_to_pb(p) for p in products])

    async def AdjustStock(
        self, request: pb.AdjustStockRequest, context: Context
    ) -> pb.AdjustStockResponse:
        level = await self._inventory.adjust_stock(
            Adjustment(request.adjustment_id, request.sku, request.delta, request.note)
        )
        return pb.AdjustStockResponse(stock=stock_to_pb(level))

    async def GetStock(self, request: pb.GetStockRequest, context: Context) -> pb.GetStockResponse:
        levels = await self._inventory.get_stock(list(request.skus))
        return pb.GetStockResponse(stock=[stock_to_pb(s) for s in levels])

    async def ReserveStock(
        self, request: pb.ReserveStockRequest, context: Context
    ) -> pb.ReserveStockResponse:
        reservation = await self._inventory.reserve(
            request.order_id,
            [ReservationLine(x.sku, x.quantity) for x in request.lines],
            request.currency,
            # Not ToTimedelta(): an int64 of seconds overflows a timedelta (INTERNAL).
            request.ttl.seconds + request.ttl.nanos / 1e9,
        )
        return pb.ReserveStockResponse(reservation=reservation_to_pb(reservation))

    async def CommitReservation(
        self, request: pb.CommitReservationRequest, context: Context
    ) -> pb.CommitReservationResponse:
        reservation = await self._inventory.commit(request.order_id)
        return pb.CommitReservationResponse(reservation=reservation_to_pb(reservation))

    async def ReleaseReservation(
        self, request: pb.ReleaseReservationRequest, context: Context
    ) -> pb.ReleaseReservationResponse:
        reservation = await self._inventory.release(request.order_id)
        assert reservation is not None  # only the sweeper's expired_only release skips
        return pb.ReleaseReservationResponse(reservation=reservation_to_pb(reservation))
