"""Calls spread over every replica, end to end: the mesh as processes with two
inventory and two payment replicas on the real PostgreSQL and broker.

order-service reaches each service through a list of its replicas (gRPC's ``ipv4:``
target) with the round_robin policy; every server ages its connections out after
ORDERMESH_MAX_CONNECTION_AGE_S (short here), so clients reconnect and a process
that joins later gets calls. Each replica's share is read from its own /metrics."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ordermesh.order.v1 import order_pb2 as pb
from ordermesh_cli.mesh import Child, MeshConfig
from tests.e2e.conftest import start_mesh
from tests.support.mesh_client import MeshClient
from tests.support.ports import free_base
from tests.support.postgres import SERVER_URL, drop_databases_like, unique_name

pytestmark = pytest.mark.e2e

REPLICAS = {"inventory": 2, "payment": 2}
# The process test_a_replica_added_later_gets_calls starts: replica slot 2 of
# inventory (its metrics port), listening on replica 0's gRPC port.
LATE = 2
MAX_AGE_S = 2.0
SETTINGS = {
    "ORDERMESH_MAX_CONNECTION_AGE_S": str(MAX_AGE_S),
    "ORDERMESH_MAX_CONNECTION_AGE_GRACE_S": "5",
    # One order per batch call, so a replica's calls count its orders.
    "ORDERMESH_BATCH_MAX_SIZE": "1",
    "ORDERMESH_BATCH_IN_FLIGHT": "8",
    # The process added later shares inventory replica 0's port.
    "ORDERMESH_GRPC_REUSE_PORT": "true",
    # Seven processes on the shared PostgreSQL (100 connections for everyone).
    "ORDERMESH_DATABASE_POOL_SIZE": "3",
}
RESERVE = "/ordermesh.inventory.v1.InventoryService/ReserveStockBatch"
AUTHORIZE = "/ordermesh.payment.v1.PaymentService/AuthorizePaymentBatch"
CONCURRENCY = 12


@pytest.fixture(scope="module")
async def mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshClient]:
    tmp = tmp_path_factory.mktemp("spread")
    prefix = unique_name("omspread")
    # Ports for the replicas and for the process that joins later.
    wanted = MeshConfig(replicas={**REPLICAS, "inventory": LATE + 1}, state_dir=tmp)
    base = free_base(lambda b: replace(wanted, base_port=b).ports())
    async for client in start_mesh(
        tmp, f"{SERVER_URL}/{prefix}", SETTINGS, replicas=REPLICAS, base_port=base
    ):
        yield client
    await drop_databases_like(prefix)


def calls_served(child: Child, method: str) -> int:
    """OK calls of ``method`` that this process answered, from its own /metrics."""
    url = f"http://127.0.0.1:{child.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        body = reply.read().decode()
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(body)
            for sample in family.samples
            if sample.name == "ordermesh_rpc_requests_total"
            and sample.labels.get("method") == method
            and sample.labels.get("code") == "OK"
        )
    )


def replicas_of(mesh: MeshClient, name: str) -> list[Child]:
    return [c for c in mesh.mesh.children if c.name == name]


async def place_many(mesh: MeshClient, sku: str, count: int, placed: list[pb.Order]) -> None:
    """``count`` orders from CONCURRENCY callers, each waiting for the outcome."""
    queue = iter(range(count))

    async def caller() -> None:
        for _ in queue:
            placed.append(await mesh.place({sku: 1}, deadline_s=30))

    await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))


def states(orders: list[pb.Order]) -> Counter[str]:
    return Counter(pb.OrderState.Name(o.state) for o in orders)


async def test_400_orders_spread_evenly_over_two_inventory_and_two_payment_replicas(
    mesh: MeshClient,
) -> None:
    sku = await mesh.add_product(100, stock=1_000)
    inventory, payment = replicas_of(mesh, "inventory"), replicas_of(mesh, "payment")
    before = {
        c.label: calls_served(c, RESERVE if c.name == "inventory" else AUTHORIZE)
        for c in inventory + payment
    }
    placed: list[pb.Order] = []
    await place_many(mesh, sku, 400, placed)
    assert states(placed) == {"ORDER_STATE_CONFIRMED": 400}
    for replicas, method in ((inventory, RESERVE), (payment, AUTHORIZE)):
        served = {c.label: calls_served(c, method) - before[c.label] for c in replicas}
        total = sum(served.values())
        assert total >= 400, served  # every order once (a retried call counts again)
        for label, count in served.items():
            assert 0.35 <= count / total <= 0.65, (label, served)
    await mesh.settle()
    assert (await mesh.invariants()).violations == []


async def test_killing_one_replica_and_draining_another_mid_burst_fails_no_order(
    mesh: MeshClient,
) -> None:
    sku = await mesh.add_product(100, stock=1_000)
    killed, drained = mesh.mesh.child("inventory", 1), mesh.mesh.child("payment", 1)
    served_before = calls_served(killed, RESERVE)
    placed: list[pb.Order] = []
    burst = asyncio.create_task(place_many(mesh, sku, 300, placed))
    while len(placed) < 60:  # mid-burst
        assert not burst.done(), placed
        await asyncio.sleep(0.05)
    assert calls_served(killed, RESERVE) > served_before  # it was taking this burst's calls
    killed.proc.kill()  # SIGKILL: its calls in flight are lost, the retry policy resends
    drained.proc.terminate()  # SIGTERM: the replica drains and goes away
    await burst
    assert await asyncio.to_thread(killed.proc.wait, 10) == -9
    assert await asyncio.to_thread(drained.proc.wait, 30) == 0  # a clean drain
    # Every order was accepted and confirmed: the lost calls were only retried.
    assert states(placed) == {"ORDER_STATE_CONFIRMED": 300}
    await mesh.settle()
    report = await mesh.invariants()
    assert report.violations == []
    # Back to two replicas each for whatever runs next.
    await mesh.restart("inventory", 1)
    await mesh.restart("payment", 1)


async def test_a_replica_added_later_gets_calls_once_connections_age_out(
    mesh: MeshClient,
) -> None:
    """The new process listens on inventory replica 0's port (both bind it with
    SO_REUSEPORT), as a new pod sits behind a connection-balancing Service: the
    kernel hands it new connections only, and order-service keeps its connection to
    the old process until that connection ages out. Each reconnect lands on either
    process, so within a few ages the new one has had calls; without an age it
    never would."""
    config = mesh.mesh.config
    late = mesh.mesh.start_service(
        "inventory", LATE, ORDERMESH_GRPC_PORT=str(config.port("inventory", 0))
    )
    # Its /metrics answers once its gRPC server has started.
    await wait_for_metrics(late)
    assert calls_served(late, RESERVE) == 0
    sku = await mesh.add_product(100, stock=1_000)
    # Each age brings at least one reconnect, with an even chance of landing on the
    # new process: after 15 of them, missing it has a chance of 2^-15.
    ages = 15
    deadline = time.monotonic() + ages * (MAX_AGE_S * 1.1) + 10
    placed: list[pb.Order] = []
    while calls_served(late, RESERVE) == 0:
        assert time.monotonic() < deadline, "the new replica never got a call"
        await place_many(mesh, sku, CONCURRENCY, placed)
    assert late.proc.poll() is None
    assert set(states(placed)) == {"ORDER_STATE_CONFIRMED"}
    # The captures and commits after the answers go one order per call here: their
    # batchers' spacing (50 ms) once held back even full batches, which capped them at
    # 20 orders a second and left 15-30 s of them owed after the loop above.
    await mesh.settle()
    assert (await mesh.invariants()).violations == []


async def wait_for_metrics(child: Child, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            calls_served(child, RESERVE)
            return
        except OSError:
            assert child.proc.poll() is None, f"{child.label} exited: see {child.log_path}"
            assert time.monotonic() < deadline, f"{child.label} never served /metrics"
            await asyncio.sleep(0.2)
