"""The inventory catalogue over real gRPC, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2

from ordermesh.common.v1 import money_pb2
from ordermesh.inventory.v1 import inventory_pb2 as pb
from ordermesh.inventory.v1 import inventory_pb2_grpc
from ordermesh_cli.registry import load_service
from tests.support.rich_status import detail
from tests.support.services import running_service

pytestmark = pytest.mark.integration


@pytest.fixture
async def inventory(
    any_database: str,
) -> AsyncIterator[inventory_pb2_grpc.InventoryServiceAsyncStub]:
    async with (
        running_service(load_service("inventory"), any_database) as service,
        grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel,
    ):
        yield inventory_pb2_grpc.InventoryServiceStub(channel)


def _product(sku: str, price: int = 650) -> pb.UpsertProductRequest:
    return pb.UpsertProductRequest(
        product=pb.Product(
            sku=sku,
            name=sku.title(),
            unit_price=money_pb2.Money(amount_minor=price, currency="EUR"),
        )
    )


async def test_upsert_then_adjust_then_read(
    inventory: inventory_pb2_grpc.InventoryServiceAsyncStub,
) -> None:
    await inventory.UpsertProduct(_product("TEA"))
    await inventory.UpsertProduct(_product("TEA", price=700))  # update, not a second product
    await inventory.AdjustStock(pb.AdjustStockRequest(adjustment_id="a1", sku="TEA", delta=10))
    listed = await inventory.ListProducts(pb.ListProductsRequest(skus=["TEA", "NOPE"]))
    assert [(p.sku, p.unit_price.amount_minor) for p in listed.products] == [("TEA", 700)]
    stock = await inventory.GetStock(pb.GetStockRequest(skus=["TEA", "NOPE"]))
    assert [(s.sku, s.available, s.reserved, s.committed) for s in stock.stock] == [
        ("TEA", 10, 0, 0)
    ]


async def test_a_retried_adjustment_applies_once(
    inventory: inventory_pb2_grpc.InventoryServiceAsyncStub,
) -> None:
    await inventory.UpsertProduct(_product("MUG"))
    request = pb.AdjustStockRequest(adjustment_id="delivery-7", sku="MUG", delta=5)
    replies = await asyncio.gather(*(inventory.AdjustStock(request) for _ in range(10)))
    assert {r.stock.available for r in replies} == {5}


async def test_the_same_adjustment_id_with_other_content_is_aborted(
    inventory: inventory_pb2_grpc.InventoryServiceAsyncStub,
) -> None:
    await inventory.UpsertProduct(_product("MUG"))
    await inventory.AdjustStock(pb.AdjustStockRequest(adjustment_id="x", sku="MUG", delta=5))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await inventory.AdjustStock(pb.AdjustStockRequest(adjustment_id="x", sku="MUG", delta=6))
    assert raised.value.code() == grpc.StatusCode.ABORTED
    assert detail(raised.value, error_details_pb2.ErrorInfo).reason == "IDEMPOTENCY_KEY_REUSED"


async def test_stock_never_goes_below_zero(
    inventory: inventory_pb2_grpc.InventoryServiceAsyncStub,
) -> None:
    await inventory.UpsertProduct(_product("POT"))
    await inventory.AdjustStock(pb.AdjustStockRequest(adjustment_id="in", sku="POT", delta=2))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await inventory.AdjustStock(pb.AdjustStockRequest(adjustment_id="out", sku="POT", delta=-3))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    stock = await inventory.GetStock(pb.GetStockRequest(skus=["POT"]))
    assert stock.stock[0].available == 2


async def test_adjusting_an_unknown_sku_is_not_found(
    inventory: inventory_pb2_grpc.InventoryServiceAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await inventory.AdjustStock(pb.AdjustStockRequest(adjustment_id="a", sku="GHOST", delta=1))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_requests_get_field_violations_and_the_service_stays_up(
    inventory: inventory_pb2_grpc.InventoryServiceAsyncStub,
) -> None:
    cases: list[tuple[object, set[str]]] = [
        (
            inventory.UpsertProduct(pb.UpsertProductRequest()),
            {"product.sku", "product.name", "product.unit_price.currency"},
        ),
        (
            inventory.AdjustStock(pb.AdjustStockRequest(sku="A", delta=0)),
            {"adjustment_id", "delta"},
        ),
        (inventory.GetStock(pb.GetStockRequest()), {"skus"}),
        (inventory.GetStock(pb.GetStockRequest(skus=["ok", "not ok"])), {"skus[1]"}),
    ]
    for call, fields in cases:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call  # type: ignore[misc]
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        bad = detail(raised.value, error_details_pb2.BadRequest)
        assert {v.field for v in bad.field_violations} == fields
    await inventory.UpsertProduct(_product("STILL-UP"))
