"""A database that hangs (every PostgreSQL process paused) fails calls fast with
UNAVAILABLE and turns health NOT_SERVING, with nothing half-written; the mesh serves
again once the server resumes. It runs on a PostgreSQL server of its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from ordermesh.order.v1 import order_pb2
from ordermesh_cli.health_client import check_health
from tests.e2e.conftest import start_mesh
from tests.support.mesh_client import MeshClient
from tests.support.own_postgres import OwnPostgres, own_postgres, why_not_available

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(why_not_available() is not None, reason=str(why_not_available())),
]

# A call waits far longer than the database timeout: an UNAVAILABLE answer can only
# come from the timeout, never from the caller's deadline.
DATABASE_TIMEOUT_S = 1.0
CALLER_DEADLINE_S = 30.0


@pytest.fixture(scope="module")
def postgres() -> Iterator[OwnPostgres]:
    with own_postgres() as server:
        yield server


@pytest.fixture(scope="module")
async def mesh(
    postgres: OwnPostgres, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[MeshClient]:
    settings = {
        "ORDERMESH_DATABASE_TIMEOUT_S": str(DATABASE_TIMEOUT_S),
        "ORDERMESH_HEALTH_TIMEOUT_S": "0.5",
    }
    async for client in start_mesh(
        tmp_path_factory.mktemp("hung"), f"{postgres.url}/omhang", settings
    ):
        yield client


ORDER_SERVICE = order_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name


async def _wait_health(client: MeshClient, wanted: str, patience_s: float = 60) -> None:
    """Until order-service's health says ``wanted`` (patience: not a timing claim)."""
    address = client.mesh.config.address("order")
    give_up = time.monotonic() + patience_s
    while (status := await check_health(address, ORDER_SERVICE)) != wanted:
        assert time.monotonic() < give_up, f"health stayed {status}, never {wanted}"
        await asyncio.sleep(0.1)


async def test_a_paused_database_fails_calls_with_unavailable_and_writes_nothing_half(
    mesh: MeshClient, postgres: OwnPostgres
) -> None:
    sku = await mesh.add_product(price_minor=500, stock=100)
    warm = await mesh.place({sku: 1})  # every service now holds open connections
    assert warm.state == order_pb2.ORDER_STATE_CONFIRMED
    await mesh.settle()
    requests = [mesh.place_request({sku: 1}, customer="hung") for _ in range(4)]
    postgres.pause()
    try:
        answers = await asyncio.gather(
            *(mesh.orders.PlaceOrder(r, timeout=CALLER_DEADLINE_S) for r in requests),
            return_exceptions=True,
        )
        codes = [a.code() if isinstance(a, grpc.aio.AioRpcError) else a for a in answers]
        assert codes == [grpc.StatusCode.UNAVAILABLE] * 4
        await _wait_health(mesh, "NOT_SERVING")
    finally:
        postgres.resume()
    await _wait_health(mesh, "SERVING")
    # Nothing half-written: an order the pause cut off was either never written, or is
    # carried to a final state by recovery; stock, payments and orders agree.
    await mesh.settle(timeout_s=60)
    listed = await mesh.orders.ListOrders(
        order_pb2.ListOrdersRequest(customer_id="hung", page_size=10), timeout=5
    )
    assert all(
        o.state in (order_pb2.ORDER_STATE_CONFIRMED, order_pb2.ORDER_STATE_REJECTED)
        for o in listed.orders
    )
    report = await mesh.invariants()
    assert report.ok, report
    # And the mesh serves again.
    after = await mesh.place({sku: 1}, deadline_s=CALLER_DEADLINE_S)
    assert after.state == order_pb2.ORDER_STATE_CONFIRMED
