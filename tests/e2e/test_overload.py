"""Overload: a spike of ten times the in-flight bound against the mesh as processes.

During the spike the services shed what is past their bound with RESOURCE_EXHAUSTED
(quickly: before any work), nothing crashes, and afterwards normal requests are as fast
as before it. Latency is compared as a ratio against the same run's own baseline,
never against a fixed number of milliseconds, and every loop is bounded.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from ordermesh.order.v1 import order_pb2 as pb
from ordermesh_cli.health_client import check_health
from ordermesh_cli.mesh import scrape_metrics
from ordermesh_cli.registry import load_service
from ordermesh_platform.service_names import SERVICE_NAMES
from tests.e2e.conftest import start_mesh
from tests.support.mesh_client import MeshClient
from tests.support.postgres import SERVER_URL, drop_databases_like, unique_name
from tests.support.rich_status import detail

pytestmark = pytest.mark.e2e

BOUND = 8  # ORDERMESH_MAX_IN_FLIGHT of every service in this test
SPIKE_WORKERS = 10 * BOUND
SPIKE_S = 12.0
MAX_CALLS_PER_WORKER = 5_000  # the spike's loops end on time, or at this, whichever first
SAMPLES = 25
RECOVERY_ROUNDS = 5
ALLOWED_SLOWDOWN = 3.0


@pytest.fixture(scope="module")
async def mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshClient]:
    prefix = unique_name("omload")
    settings = {"ORDERMESH_MAX_IN_FLIGHT": str(BOUND), "ORDERMESH_SHED_RETRY_AFTER_S": "0.05"}
    tmp: Path = tmp_path_factory.mktemp("mesh")
    async for client in start_mesh(tmp, f"{SERVER_URL}/{prefix}", settings):
        yield client
    await drop_databases_like(prefix)


async def _p50_of_normal_requests(mesh: MeshClient, sku: str, customer: str) -> float:
    """Median latency of SAMPLES orders placed one after another (waiting for outcome)."""
    latencies = []
    for _ in range(SAMPLES):
        started = time.perf_counter()
        order = await mesh.place({sku: 1}, deadline_s=30, customer=customer)
        latencies.append(time.perf_counter() - started)
        assert order.state == pb.ORDER_STATE_CONFIRMED
    return statistics.median(latencies)


async def test_a_spike_is_shed_without_a_crash_and_latency_recovers(mesh: MeshClient) -> None:
    sku = await mesh.add_product(100, stock=1_000_000)
    await _p50_of_normal_requests(mesh, sku, "warm-up")  # connections, caches, JIT-less warmth
    before = await _p50_of_normal_requests(mesh, sku, "baseline")

    # The spike: SPIKE_WORKERS callers in closed loops; a shed caller waits the delay the
    # server advises (RetryInfo), as a well-behaved client does, then tries again.
    outcomes: Counter[str] = Counter()
    served: list[float] = []
    shed: list[float] = []
    shed_details: Counter[tuple[str, bool]] = Counter()  # (ErrorInfo reason, RetryInfo set)
    ends = time.monotonic() + SPIKE_S

    async def worker(n: int) -> None:
        for i in range(MAX_CALLS_PER_WORKER):
            if time.monotonic() >= ends:
                return
            request = mesh.place_request({sku: 1}, customer=f"spike-{n}", key=f"spike-{n}-{i}")
            started = time.perf_counter()
            try:
                await mesh.orders.PlaceOrder(request, timeout=30)
            except grpc.aio.AioRpcError as error:
                outcomes[error.code().name] += 1
                if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    shed.append(time.perf_counter() - started)
                    reason = detail(error, error_details_pb2.ErrorInfo).reason
                    delay = detail(error, error_details_pb2.RetryInfo).retry_delay
                    shed_details[(reason, delay.ToMilliseconds() > 0)] += 1
                    await asyncio.sleep(delay.ToTimedelta().total_seconds())
                continue
            outcomes["OK"] += 1
            served.append(time.perf_counter() - started)

    await asyncio.gather(*(worker(n) for n in range(SPIKE_WORKERS)))

    assert outcomes["RESOURCE_EXHAUSTED"] > 0, outcomes
    assert outcomes["OK"] > 0, outcomes
    assert outcomes["INTERNAL"] == 0, outcomes
    assert outcomes["UNKNOWN"] == 0, outcomes
    assert shed_details == {("OVERLOADED", True): outcomes["RESOURCE_EXHAUSTED"]}
    # Shedding is quick: a refusal costs a fraction of what a served call takes.
    assert statistics.median(shed) < statistics.median(served), (outcomes, shed[:5], served[:5])
    order_metrics = scrape_metrics(mesh.mesh.config.metrics_port("order"))
    assert order_metrics.get("ordermesh_rpc_shed_total", 0) >= outcomes["RESOURCE_EXHAUSTED"]

    # No crash: every process is alive and every service SERVING.
    for name in SERVICE_NAMES:
        child = mesh.mesh.child(name)
        assert child.proc.poll() is None, f"{name} exited during the spike"
        full_name = load_service(name).grpc_services[0]
        assert await check_health(child.address, full_name, timeout_s=10) == "SERVING"

    # Everything accepted during the spike finishes, and the invariants hold.
    await mesh.settle(timeout_s=180)
    report = await mesh.invariants()
    assert report.violations == []

    # Normal requests are back to their latency before the spike.
    after = []
    for _ in range(RECOVERY_ROUNDS):
        after.append(await _p50_of_normal_requests(mesh, sku, "after"))
        if after[-1] <= ALLOWED_SLOWDOWN * before:
            break
    assert after[-1] <= ALLOWED_SLOWDOWN * before, (before, after, outcomes)
    print(f"spike outcomes {dict(outcomes)}; p50 before {before:.4f}s, after {after}")

    await mesh.settle(timeout_s=60)
    assert (await mesh.invariants()).violations == []
