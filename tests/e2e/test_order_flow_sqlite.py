"""The order flow on the embedded default (SQLite files), as `make run` runs it."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import pytest
from google.rpc import error_details_pb2

from ordermesh.order.v1 import order_pb2 as pb
from tests.support.mesh_client import MeshClient
from tests.support.rich_status import detail

pytestmark = pytest.mark.e2e


async def test_orders_confirm_reject_and_never_oversell_on_sqlite(sqlite_mesh: MeshClient) -> None:
    mesh = sqlite_mesh
    sku = await mesh.add_product(250, stock=5)
    assert (await mesh.place({sku: 1})).state == pb.ORDER_STATE_CONFIRMED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await mesh.place({sku: 1}, token="tok_decline")
    assert detail(raised.value, error_details_pb2.ErrorInfo).reason == "PAYMENT_DECLINED"

    async def buy(i: int) -> str:
        try:
            await mesh.place({sku: 1}, customer=f"b{i}", deadline_s=60)
            return "CONFIRMED"
        except grpc.aio.AioRpcError as error:
            return str(detail(error, error_details_pb2.ErrorInfo).reason)

    assert Counter(await asyncio.gather(*(buy(i) for i in range(12)))) == {
        "CONFIRMED": 4,
        "OUT_OF_STOCK": 8,
    }
    await mesh.settle()
    assert await mesh.stock(sku) == (0, 0, 5)
    assert (await mesh.invariants()).violations == []
