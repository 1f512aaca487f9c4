"""Inventory reservations over real gRPC, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from ordermesh.common.v1 import money_pb2
from ordermesh.inventory.v1 import inventory_pb2 as pb
from ordermesh.inventory.v1 import inventory_pb2_grpc
from ordermesh_cli.registry import load_service
from tests.support.rich_status import detail
from tests.support.services import running_service

pytestmark = pytest.mark.integration

if TYPE_CHECKING:  # the async stub type exists only in the .pyi
    Stub = inventory_pb2_grpc.InventoryServiceAsyncStub


@pytest.fixture
async def inventory(any_database: str) -> AsyncIterator[Stub]:
    spec = load_service("inventory")
    async with (
        running_service(spec, any_database, sweep_interval_s=0.1) as service,
        grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel,
    ):
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        for sku, price, units in [("A", 100, 5), ("B", 200, 1)]:
            await stub.UpsertProduct(
                pb.UpsertProductRequest(
                    product=pb.Product(
                        sku=sku,
                        name=sku,
                        unit_price=money_pb2.Money(amount_minor=price, currency="EUR"),
                    )
                )
            )
            await stub.AdjustStock(pb.AdjustStockRequest(adjustment_id=sku, sku=sku, delta=units))
        yield stub


def _reserve(
    order_id: str, ttl_s: int = 0, currency: str = "EUR", **lines: int
) -> pb.ReserveStockRequest:
    return pb.ReserveStockRequest(
        order_id=order_id,
        lines=[pb.ReservationLine(sku=s, quantity=q) for s, q in lines.items()],
        ttl=duration_pb2.Duration(seconds=ttl_s),
        currency=currency,
    )


async def _levels(stub: Stub) -> dict[str, tuple[int, int, int]]:
    reply = await stub.GetStock(pb.GetStockRequest(skus=["A", "B"]))
    return {s.sku: (s.available, s.reserved, s.committed) for s in reply.stock}


async def test_a_reservation_is_all_or_nothing(inventory: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await inventory.ReserveStock(_reserve("o1", A=2, B=2))
    info = detail(raised.value, error_details_pb2.ErrorInfo)
    assert (info.reason, info.metadata["sku"]) == ("OUT_OF_STOCK", "B")
    assert await _levels(inventory) == {"A": (5, 0, 0), "B": (1, 0, 0)}


async def test_reserve_commit_release_move_stock_and_retries_change_nothing(
    inventory: Stub,
) -> None:
    first = await inventory.ReserveStock(_reserve("o1", B=1, A=2))
    again = await inventory.ReserveStock(_reserve("o1", A=2, B=1))
    assert first.reservation == again.reservation
    assert [(x.sku, x.unit_price.amount_minor) for x in first.reservation.lines] == [
        ("A", 100),
        ("B", 200),
    ]
    assert await _levels(inventory) == {"A": (3, 2, 0), "B": (0, 1, 0)}
    for _ in range(2):
        await inventory.CommitReservation(pb.CommitReservationRequest(order_id="o1"))
    assert await _levels(inventory) == {"A": (3, 0, 2), "B": (0, 0, 1)}
    for _ in range(2):
        released = await inventory.ReleaseReservation(pb.ReleaseReservationRequest(order_id="o1"))
    assert released.reservation.state == pb.RESERVATION_STATE_RELEASED
    assert await _levels(inventory) == {"A": (5, 0, 0), "B": (1, 0, 0)}


async def test_a_release_before_the_reservation_stops_it_landing(inventory: Stub) -> None:
    await inventory.ReleaseReservation(pb.ReleaseReservationRequest(order_id="late"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await inventory.ReserveStock(_reserve("late", A=1))
    assert detail(raised.value, error_details_pb2.ErrorInfo).reason == "RESERVATION_RELEASED"
    assert await _levels(inventory) == {"A": (5, 0, 0), "B": (1, 0, 0)}


async def test_the_same_order_with_other_lines_is_aborted(inventory: Stub) -> None:
    await inventory.ReserveStock(_reserve("o1", A=1))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await inventory.ReserveStock(_reserve("o1", A=2))
    assert raised.value.code() == grpc.StatusCode.ABORTED


async def test_a_product_in_another_currency_is_refused(inventory: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await inventory.ReserveStock(_reserve("o1", currency="USD", A=1))
    assert detail(raised.value, error_details_pb2.ErrorInfo).reason == "CURRENCY_MISMATCH"


async def test_concurrent_orders_never_take_the_same_unit(inventory: Stub) -> None:
    async def reserve(i: int) -> bool:
        try:
            await inventory.ReserveStock(_reserve(f"race-{i}", A=1))
            return True
        except grpc.aio.AioRpcError:
            return False

    wins = await asyncio.gather(*(reserve(i) for i in range(20)))
    assert sum(wins) == 5
    assert await _levels(inventory) == {"A": (0, 5, 0), "B": (1, 0, 0)}


async def test_expired_reservations_are_swept_back_to_available(inventory: Stub) -> None:
    await inventory.ReserveStock(_reserve("short", ttl_s=1, A=2))
    await inventory.ReserveStock(_reserve("long", ttl_s=600, A=1))
    for _ in range(50):  # bounded: 50 x 0.1 s after the 1 s time to live
        await asyncio.sleep(0.1)
        if (await _levels(inventory))["A"] == (4, 1, 0):
            break
    assert await _levels(inventory) == {"A": (4, 1, 0), "B": (1, 0, 0)}
