"""`make chaos`: steady load while processes die, the broker goes away, PostgreSQL
restarts and the payment provider turns slow and then fails. When the mesh has
settled, every invariant of the design is checked, and every order acknowledged to a
caller must exist.

Relays and consumers run inside the service processes, so killing a service kills
its relay (order, inventory, payment) or its consumer (notification) with it.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console

from ordermesh_bench.rawsql import asyncpg_dsn
from ordermesh_bench.suite import (
    SKUS,
    _drop_databases,
    _settle,
    outbox_backlog,
    seed,
    wait_drained,
)
from ordermesh_bench.workload import RequestMaker, Workload
from ordermesh_cli.invariants import check_invariants
from ordermesh_cli.mesh import LocalMesh, MeshConfig
from ordermesh_client import OrderClient, OrdermeshError, open_channel
from ordermesh_messaging.cloudevents import header_map
from ordermesh_messaging.events import TOPICS
from ordermesh_platform.service_names import SERVICE_NAMES

console = Console(stderr=True)
SAGA_TIMEOUT_S = 30.0
CUSTOMER_FACING = {
    "ordermesh.events.v1.OrderConfirmed",
    "ordermesh.events.v1.OrderRejected",
    "ordermesh.events.v1.OrderCancelled",
    "ordermesh.events.v1.PaymentRefunded",
}


@dataclass(frozen=True)
class ChaosConfig:
    orders: int = 5000
    kills: int = 10
    broker_outage_s: float = 20.0
    restart_postgres: bool = True
    psp_slow_s: float = 5.0
    concurrency: int = 16
    postgres: str = "postgresql://postgres@127.0.0.1:5432"
    base_port: int = 28051
    state_dir: Path = Path(".ordermesh/chaos")
    seed: int = 42


@dataclass
class ChaosReport:
    orders_placed: int = 0
    orders_acknowledged: int = 0
    faults: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    orders_by_state: dict[str, int] = field(default_factory=dict)
    # The committed events checked on the wire and in the deliveries: none, no check.
    events_checked: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "orders_placed": self.orders_placed,
            "orders_acknowledged": self.orders_acknowledged,
            "faults_injected": len(self.faults),
            "faults": self.faults,
            "violations": self.violations,
            "orders_by_state": self.orders_by_state,
            "events_checked": self.events_checked,
        }


def restart_postgres() -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"],
        check=True,
        capture_output=True,
        timeout=120,
    )


async def run_chaos(config: ChaosConfig) -> ChaosReport:
    rng = random.Random(config.seed)
    prefix = f"chaos_{uuid.uuid4().hex[:6]}"
    settings = {
        "ORDERMESH_SAGA_TIMEOUT_S": str(SAGA_TIMEOUT_S),
        "ORDERMESH_LEASE_S": "3",
        "ORDERMESH_LOG_LEVEL": "WARNING",
        "ORDERMESH_KAFKA_REQUEST_TIMEOUT_S": "3",
        "ORDERMESH_PSP_TIMEOUT_S": "2",
    }
    mesh = LocalMesh(
        MeshConfig(
            base_port=config.base_port,
            postgres=f"{config.postgres}/{prefix}",
            state_dir=config.state_dir,
            env=settings,
        )
    )
    report = ChaosReport()
    acknowledged: set[str] = set()
    try:
        mesh.start()
        await mesh.wait_serving(120)
        await seed(mesh.config.address("inventory"))
        faults_done = asyncio.Event()
        load = asyncio.create_task(_load(mesh, config, report, acknowledged, faults_done))
        try:
            await _faults(mesh, config, rng, report)
        finally:
            faults_done.set()
        await load
        for name in SERVICE_NAMES:  # everything back up, as operators would leave it
            if mesh.child(name).proc.poll() is not None:
                mesh.start_service(name)
        await mesh.wait_serving(120)
        await _settle(mesh, 300)
        await wait_drained(mesh, 300)
        await _wait_notified(mesh, 300)
        await _check(mesh, report, acknowledged)
    finally:
        mesh.stop()
        await _drop_databases(config.postgres, prefix)
    return report


async def _load(
    mesh: LocalMesh, config: ChaosConfig, report: ChaosReport, acknowledged: set[str],
    faults_done: asyncio.Event,
) -> None:  # fmt: skip
    """Steady load: at least ``config.orders`` orders, and on until every fault is done."""
    gate = asyncio.Semaphore(config.concurrency)
    async with open_channel(mesh.config.address("order")) as channel:
        orders = OrderClient(channel)
        maker = RequestMaker(Workload(SKUS, decline_share=0.05), seed=config.seed)

        async def one(i: int) -> None:
            request = maker.place_order()
            request.wait_for_outcome = i % 2 == 0
            async with gate:
                report.orders_placed += 1
                try:
                    # Retried while order-service is away or shedding, with the same key.
                    reply = await orders.place_order(request, timeout_s=10)
                    acknowledged.add(reply.order.order_id)
                except OrdermeshError as error:
                    # A refusal naming its order is an acknowledged (rejected) order too.
                    order_id = error.metadata.get("order_id", "")
                    if order_id:
                        acknowledged.add(order_id)
                    else:  # order-service is away: a caller would back off too
                        await asyncio.sleep(0.2)

        i = 0
        in_flight: set[asyncio.Task[None]] = set()
        while len(acknowledged) < config.orders or not faults_done.is_set():
            await gate.acquire()  # as many in flight as the concurrency, no more
            gate.release()
            task = asyncio.create_task(one(i))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            i += 1
            await asyncio.sleep(0)
        await asyncio.gather(*in_flight)
    report.orders_acknowledged = len(acknowledged)


async def _faults(
    mesh: LocalMesh, config: ChaosConfig, rng: random.Random, report: ChaosReport
) -> None:
    plan: list[str] = ["kill"] * config.kills
    if config.broker_outage_s:
        plan.append("broker")
    if config.restart_postgres:
        plan.append("postgres")
    if config.psp_slow_s:
        plan.append("psp")
    rng.shuffle(plan)
    for fault in plan:
        # Spread over the run: roughly one fault every 5-15 s of steady load.
        await asyncio.sleep(rng.uniform(5.0, 15.0) * min(1.0, config.orders / 5000))
        if fault == "kill":
            name = rng.choice(SERVICE_NAMES)
            child = mesh.child(name)
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGKILL)
                child.proc.wait()
            report.faults.append(f"SIGKILL {name}")
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            mesh.start_service(name)
        elif fault == "broker" and mesh.broker is not None:
            os.kill(mesh.broker.pid, signal.SIGSTOP)
            report.faults.append(f"broker stopped {config.broker_outage_s:.0f}s")
            await asyncio.sleep(config.broker_outage_s)
            os.kill(mesh.broker.pid, signal.SIGCONT)
        elif fault == "postgres":
            await asyncio.to_thread(restart_postgres)
            report.faults.append("PostgreSQL restarted")
        elif fault == "psp":
            mesh.stop_service("payment")
            mesh.start_service("payment", ORDERMESH_PSP_LATENCY_S=str(config.psp_slow_s))
            report.faults.append(f"payment provider slow ({config.psp_slow_s:.0f}s)")
            await asyncio.sleep(config.psp_slow_s * 2)
            mesh.stop_service("payment")
            mesh.start_service("payment", ORDERMESH_PSP_FAILURE_RATE="1.0")
            report.faults.append("payment provider failing")
            await asyncio.sleep(config.psp_slow_s)
            mesh.stop_service("payment")
            mesh.start_service("payment")


async def _rows(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


_EVENTS = "ordermesh.events.v1."
# An order's final state and the customer-facing event that took it there.
_FINAL_EVENT = {
    "CONFIRMED": _EVENTS + "OrderConfirmed",
    "REJECTED": _EVENTS + "OrderRejected",
    "CANCELLED": _EVENTS + "OrderCancelled",
}


async def _committed(mesh: LocalMesh) -> set[tuple[str, str]]:
    """(order id, event type) of the order and refund events the orders' and payments'
    states say were committed. The relay deletes what it publishes, so the outbox is no
    record of them: the states are."""
    c = mesh.config
    committed: set[tuple[str, str]] = set()
    for r in await _rows(c.database_url("order"), "SELECT order_id, state FROM orders"):
        committed.add((r["order_id"], _EVENTS + "OrderCreated"))
        if r["state"] in _FINAL_EVENT:
            committed.add((r["order_id"], _FINAL_EVENT[r["state"]]))
    refunded = "SELECT order_id FROM payments WHERE state = 'REFUNDED'"
    for r in await _rows(c.database_url("payment"), refunded):
        committed.add((r["order_id"], _EVENTS + "PaymentRefunded"))
    return committed


async def _unnotified(mesh: LocalMesh, committed: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The committed customer-facing events with no delivery."""
    delivered = {
        (r["order_id"], r["event_type"])
        for r in await _rows(
            mesh.config.database_url("notification"), "SELECT order_id, event_type FROM deliveries"
        )
    }
    return {e for e in committed if e[1] in CUSTOMER_FACING} - delivered


async def _wait_notified(mesh: LocalMesh, timeout_s: float) -> None:
    """The consumer catches up after the faults (it may have been killed or starved)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not await _unnotified(mesh, await _committed(mesh)) or time.monotonic() > deadline:
            return
        await asyncio.sleep(1.0)


async def _check(mesh: LocalMesh, report: ChaosReport, acknowledged: set[str]) -> None:
    c = mesh.config
    invariants = await check_invariants(
        c.database_url("order"), c.database_url("inventory"), c.database_url("payment"),
        SAGA_TIMEOUT_S,
    )  # fmt: skip
    report.violations += invariants.violations
    report.orders_by_state = dict(invariants.orders_by_state)
    existing = {
        r["order_id"] for r in await _rows(c.database_url("order"), "SELECT order_id FROM orders")
    }
    missing = acknowledged - existing
    report.violations += [f"acknowledged order {o} does not exist" for o in sorted(missing)[:20]]
    # Nothing committed is left unpublished, and every committed event reached Kafka.
    left = await outbox_backlog(mesh)
    if left:
        report.violations.append(f"{left} outbox rows were never published")
    committed = await _committed(mesh)
    report.events_checked = len(committed)
    on_the_wire = await _wire_events(c.kafka_bootstrap, list(TOPICS.values()), len(committed))
    lost = committed - on_the_wire
    report.violations += [f"{t} of order {o} never reached Kafka" for o, t in sorted(lost)[:20]]
    # Every customer-facing event notified exactly once per channel (the unique key
    # makes twice impossible; this checks once).
    twice = await _rows(
        c.database_url("notification"),
        "SELECT event_id, channel FROM deliveries GROUP BY event_id, channel HAVING count(*) > 1",
    )
    report.violations += [f"event {r['event_id']} notified twice" for r in twice[:20]]
    unnotified = await _unnotified(mesh, committed)
    report.violations += [f"{t} of order {o} never notified" for o, t in sorted(unnotified)[:20]]


async def _wire_events(
    bootstrap: str, topics: list[str], expect: int, quiet_s: float = 3.0
) -> set[tuple[str, str]]:
    """(key, event type) of every record on the topics: the aggregate is the key."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen: set[tuple[str, str]] = set()
        last = time.monotonic()
        deadline = last + 300
        while time.monotonic() < deadline and (
            len(seen) < expect or time.monotonic() - last < quiet_s
        ):
            batch = await consumer.getmany(timeout_ms=300, max_records=5000)
            for records in batch.values():
                for record in records:
                    kind = header_map(record.headers).get("ce_type", b"").decode()
                    seen.add(((record.key or b"").decode(), kind))
                last = time.monotonic()
            if len(seen) >= expect and time.monotonic() - last >= quiet_s:
                break
        return seen
    finally:
        await consumer.stop()
