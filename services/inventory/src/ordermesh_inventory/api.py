"""The InventoryService servicer: protobuf in and out, nothing else."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from ordermesh.common.v1 import money_pb2
from ordermesh.inventory.v1 import inventory_pb2 as pb
from ordermesh.inventory.v1 import inventory_pb2_grpc
from ordermesh_inventory.domain import (
    MAX_BATCH,
    Adjustment,
    Product,
    Reservation,
    ReservationLine,
    ReservationRequest,
    ReservationState,
    StockLevel,
)
from ordermesh_inventory.usecases import Inventory
from ordermesh_platform.convert import to_timestamp
from ordermesh_platform.errors import ServiceError, Validator
from ordermesh_platform.grpc_errors import OK_STATUS, to_status_pb
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
        "ReserveStockBatch": ORDER_SERVICE,
        "CommitReservationBatch": ORDER_SERVICE,
        "ReleaseReservationBatch": ORDER_SERVICE,
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


def reservation_request(request: pb.ReserveStockRequest) -> ReservationRequest:
    return ReservationRequest(
        request.order_id,
        tuple(ReservationLine(x.sku, x.quantity) for x in request.lines),
        request.currency,
        # Not ToTimedelta(): an int64 of seconds overflows a timedelta (INTERNAL).
        request.ttl.seconds + request.ttl.nanos / 1e9,
    )


def results_to_pb(answers: Sequence[Reservation | ServiceError]) -> list[pb.ReservationResult]:
    return [
        pb.ReservationResult(status=to_status_pb(a))
        if isinstance(a, ServiceError)
        else pb.ReservationResult(status=OK_STATUS, reservation=reservation_to_pb(a))
        for a in answers
    ]


def validate_batch_size(count: int) -> None:
    v = Validator()
    v.check(0 < count <= MAX_BATCH, "requests", f"must hold 1-{MAX_BATCH} requests")
    v.raise_if_invalid()


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
        asked = reservation_request(request)
        reservation = await self._inventory.reserve(
            asked.order_id, list(asked.lines), asked.currency, asked.ttl_s
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

    async def ReserveStockBatch(
        self, request: pb.ReserveStockBatchRequest, context: Context
    ) -> pb.ReserveStockBatchResponse:
        validate_batch_size(len(request.requests))
        answers = await self._inventory.reserve_many(
            [reservation_request(x) for x in request.requests]
        )
        return pb.ReserveStockBatchResponse(results=results_to_pb(answers))

    async def CommitReservationBatch(
        self, request: pb.CommitReservationBatchRequest, context: Context
    ) -> pb.CommitReservationBatchResponse:
        validate_batch_size(len(request.requests))
        answers = await self._inventory.commit_many([x.order_id for x in request.requests])
        return pb.CommitReservationBatchResponse(results=results_to_pb(answers))

    async def ReleaseReservationBatch(
        self, request: pb.ReleaseReservationBatchRequest, context: Context
    ) -> pb.ReleaseReservationBatchResponse:
        validate_batch_size(len(request.requests))
        answers = await self._inventory.release_many([x.order_id for x in request.requests])
        return pb.ReleaseReservationBatchResponse(results=results_to_pb(answers))
