"""`make bench`: PlaceOrder against its baselines, measured in one run on this machine.

Every headline figure is a ratio against a baseline measured in the same run, because
these machines are shared and noisy:

- place_order_sync / echo_chain        the transport bound (closed loop, same concurrency)
- place_order_async / raw_sql          the database bound (orders fully processed per s)
- relay / raw_producer                 the relay bound (events per s to the same broker)
- p99 sync / p99 echo chain            in open loop, both at half of PlaceOrder's maximum
- risk on / risk off                   PlaceOrder with payment's risk scoring on and off
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from rich.console import Console
from rich.progress import Progress

from ordermesh.common.v1 import money_pb2
from ordermesh.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from ordermesh.order.v1 import order_pb2_grpc
from ordermesh_bench.costs import Snapshot, per_order, snapshot
from ordermesh_bench.echo import start_echo_chain, wait_serving
from ordermesh_bench.kafka_bench import producer_throughput, relay_throughput
from ordermesh_bench.loadgen import Call, closed_loop, open_loop
from ordermesh_bench.rawsql import RawOrderPath, asyncpg_dsn, checkpoint, seed_catalogue
from ordermesh_bench.risk_cost import (
    SIMULATED_ORDERS,
    champion_decided,
    decisions,
    declined_share,
    features_caught_up,
    scoring_histogram,
    scoring_summary,
    simulated_orders,
    since,
    train_champion_off_loop,
)
from ordermesh_bench.stats import Run
from ordermesh_bench.workload import RequestMaker, Requests, SimulatedRequests, Workload
from ordermesh_cli.invariants import check_invariants, owed_work
from ordermesh_cli.mesh import LocalMesh, MeshConfig
from ordermesh_cli.processes import stop_all
from ordermesh_cli.registry import load_service
from ordermesh_messaging.settings import KafkaSettings, RelaySettings
from ordermesh_platform.db import create_engine, ensure_database, vacuum_analyze
from ordermesh_platform.migrations import upgrade_to_head
from ordermesh_platform.service_names import SERVICE_NAMES

console = Console(stderr=True)
SKUS = tuple(f"BENCH-{i:03d}" for i in range(100))
BENCH_PRICES = dict.fromkeys(SKUS, 100)  # EUR minor units
STOCK_PER_SKU = 10_000_000
SAGA_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class BenchConfig:
    postgres: str = "postgresql://postgres@127.0.0.1:5432"
    base_port: int = 26051
    levels: tuple[int, ...] = (4, 16, 32, 128, 256)  # closed-loop concurrency, low to high
    level_s: float = 8.0
    open_loop_s: float = 10.0
    half_load_pairs: int = 2  # sync/echo runs at half load, alternating
    raw_sql_s: float = 8.0
    events: int = 20_000
    telemetry_pairs: int = 3  # off/on runs of the telemetry cost, alternating
    risk_pairs: int = 3  # off/on runs of payment's risk scoring, alternating
    relay_pairs: int = 3  # relay/bare-producer runs, alternating
    zipf_s: float = 1.1
    decline_share: float = 0.05
    # PostgreSQL connections per service process; the raw-SQL baseline's pools get
    # twice as many each. The defaults peak near 85 of a default server's 100.
    pool_size: int = 8
    # How long a restarted side may warm up before its run (e.g. until payment's champion
    # model has decided); past it the run goes ahead and its report shows what decided.
    ready_wait_s: float = 120.0
    out: Path = Path("bench/results")
    state_dir: Path = Path(".ordermesh/bench")


@dataclass
class Results:
    data: dict[str, Any] = field(default_factory=dict)
    curve: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def _outcome_of(error: grpc.aio.AioRpcError) -> str:
    return error.code().name


SHED_RETRIES = 100
SHED_BACKOFF_S = 0.5


def place_call(stub: order_pb2_grpc.OrderServiceAsyncStub, maker: Requests) -> Call:
    """One order, placed as a well-behaved caller does: a call shed with
    RESOURCE_EXHAUSTED (nothing was written) is sent again, same key, after a pause."""

    async def call() -> str:
        request = maker.place_order()
        for _ in range(SHED_RETRIES):
            try:
                await stub.PlaceOrder(request, timeout=30)
                return "OK"
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    return _outcome_of(error)
            await asyncio.sleep(SHED_BACKOFF_S)
        return grpc.StatusCode.RESOURCE_EXHAUSTED.name

    return call


def echo_call(channel: grpc.aio.Channel, maker: Requests) -> Call:
    method: grpc.aio.UnaryUnaryMultiCallable[Any, bytes] = channel.unary_unary(
        "/ordermesh.order.v1.OrderService/PlaceOrder",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=lambda b: b,
    )

    async def call() -> str:
        try:
            await method(maker.place_order(), timeout=30)
            return "OK"
        except grpc.aio.AioRpcError as error:
            return _outcome_of(error)

    return call


async def seed(address: str, prices: Mapping[str, int] = BENCH_PRICES) -> None:
    """The products (SKU: unit price in EUR minor units), each with STOCK_PER_SKU."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        for sku, unit_minor in prices.items():
            price = money_pb2.Money(amount_minor=unit_minor, currency="EUR")
            await stub.UpsertProduct(
                inventory_pb2.UpsertProductRequest(
                    product=inventory_pb2.Product(sku=sku, name=sku, unit_price=price)
                ),
                timeout=10,
            )
            await stub.AdjustStock(
                inventory_pb2.AdjustStockRequest(
                    adjustment_id=f"bench-{sku}", sku=sku, delta=STOCK_PER_SKU
                ),
                timeout=10,
            )


async def _settle(mesh: LocalMesh, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while await owed_work(mesh.config.database_url("order")):
        if time.monotonic() > deadline:
            raise TimeoutError("the mesh did not settle")
        await asyncio.sleep(0.25)


async def vacuum_analyse(mesh: LocalMesh) -> None:
    """Every service's database vacuumed and analysed, then a checkpoint: see
    :func:`vacuum_analyse_databases`."""
    await vacuum_analyse_databases([mesh.config.database_url(s) for s in SERVICE_NAMES])


async def vacuum_analyse_databases(urls: Sequence[str]) -> None:
    """``VACUUM (ANALYZE)`` each database, as autovacuum does on a server that has it on
    (the default, and what production runs; this machine's server has it off); the
    bench calls it before every measured run, the baselines' included.

    Without statistics the planner scans tables whole: at 170 orders/s on tables of a
    few thousand rows, PostgreSQL read some 7 million rows in 8 s and used a quarter
    more CPU, and a run was slower the more rows the runs before it left. Without the
    vacuum, every row the relays deleted and every order and payment version a saga
    step replaced stays in the tables for the rest of the bench: by the risk runs,
    payment's outbox held 120,000 dead rows in 60 MB, and PostgreSQL's CPU per order
    was a fifth higher than on the same tables vacuumed (docs/performance.md). The
    soak's ``Maintainer`` stands in for autovacuum the same way, every few minutes.

    Then a ``CHECKPOINT``, so that every run starts just after one: a timed checkpoint
    (every 5 minutes by default) landing inside one 8 s run and not the other, with
    the page images written after it, is a cost of the clock, not of what is measured.
    Skipped where the role may not (``pg_checkpoint``)."""
    for url in urls:
        engine = create_engine(url, pool_size=1)
        try:
            await vacuum_analyze(engine)
        finally:
            await engine.dispose()
    conn = await asyncpg.connect(asyncpg_dsn(urls[0]))
    try:
        await checkpoint(conn)
    finally:
        await conn.close()


async def outbox_backlog(mesh: LocalMesh) -> int:
    """Unpublished outbox rows in every producing service's database."""
    total = 0
    for service in ("order", "inventory", "payment"):
        conn = await asyncpg.connect(asyncpg_dsn(mesh.config.database_url(service)))
        try:
            total += await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        finally:
            await conn.close()
    return total


async def wait_drained(mesh: LocalMesh, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        left = await outbox_backlog(mesh)
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.25)


async def _drop_databases(postgres: str, prefix: str) -> None:
    conn = await asyncpg.connect(f"{postgres}/postgres")
    try:
        for (name,) in await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1", prefix + "%"
        ):
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def run_suite(config: BenchConfig) -> dict[str, Any]:
    prefix = f"bench_{uuid.uuid4().hex[:6]}"
    results = Results()
    env = {
        "ORDERMESH_SAGA_TIMEOUT_S": str(SAGA_TIMEOUT_S),
        "ORDERMESH_LOG_LEVEL": "WARNING",
        "ORDERMESH_DATABASE_POOL_SIZE": str(config.pool_size),
    }
    mesh = LocalMesh(
        MeshConfig(
            base_port=config.base_port,
            postgres=f"{config.postgres}/{prefix}",
            state_dir=config.state_dir,
            env=env,
        )
    )
    echo = []
    try:
        # The echo chain starts beside the mesh and serves before anything is measured:
        # its processes' start-up took half a core from the first levels' runs.
        echo = start_echo_chain(config.base_port + 20)
        mesh.start()
        await mesh.wait_serving(120)
        await seed(mesh.config.address("inventory"))
        await wait_serving(f"127.0.0.1:{config.base_port + 20}", 120)
        with Progress(console=console, transient=True) as progress:
            await _measure_mesh_and_echo(config, mesh, results, progress)
            invariants = await _invariants(mesh)
        left = await wait_drained(mesh, 120)
        results.data["outbox_backlog_after"] = left
        results.data["invariants_ok"] = invariants.ok and left == 0
        results.data["invariant_violations"] = invariants.violations[:20]
        results.data["orders_by_state"] = dict(invariants.orders_by_state)
        mesh.stop()
        stop_all(echo, 5)
        echo = []
        await _measure_database_bound(config, prefix, results)
        await _measure_relay_bound(config, prefix, results)
    finally:
        stop_all(echo, 5)
        mesh.stop()
        await _drop_databases(config.postgres, prefix)
    return _report(config, results)


async def _measure_mesh_and_echo(
    config: BenchConfig, mesh: LocalMesh, results: Results, progress: Progress
) -> None:
    workload = Workload(SKUS, zipf_s=config.zipf_s, decline_share=config.decline_share)
    async with (
        grpc.aio.insecure_channel(mesh.config.address("order")) as order_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{config.base_port + 20}") as echo_channel,
    ):
        orders = order_pb2_grpc.OrderServiceStub(order_channel)
        sync = place_call(orders, RequestMaker(workload, seed=1))
        echoed = echo_call(echo_channel, RequestMaker(workload, seed=2))
        await closed_loop(Run("warm-up"), sync, 4, 2.0)
        await closed_loop(Run("warm-up echo"), echoed, 4, 1.0)
        best: dict[str, Run] = {}
        best_level: dict[str, int] = {}
        for name, call in (("place_order_sync", sync), ("echo_chain", echoed)):
            results.curve[name] = []
            for level in config.levels:
                await vacuum_analyse(mesh)
                before = snapshot(mesh)
                run = await closed_loop(
                    Run(f"{name} x{level}"), call, level, config.level_s, progress
                )
                costs = per_order(before, snapshot(mesh), run.count)
                results.curve[name].append(
                    (run.summary()["throughput_per_s"], run.percentile_ms(99))
                )
                if (
                    name not in best
                    or run.count / run.elapsed_s > best[name].count / best[name].elapsed_s
                ):
                    best[name], best_level[name] = run, level
                    if name == "place_order_sync":
                        results.data["place_order_sync_costs"] = costs
            results.data[name] = {**best[name].summary(), "concurrency": best_level[name]}
        # Half load, open loop, the same rate for both: queueing is measured, not hidden.
        rate = max(1.0, results.data["place_order_sync"]["throughput_per_s"] / 2)
        half: dict[str, list[dict[str, Any]]] = {"sync": [], "echo": []}
        for _ in range(max(1, config.half_load_pairs)):
            for name, call in (("sync", sync), ("echo", echoed)):
                half[name].append(await _half_load_run(config, mesh, name, call, rate, progress))
        # Alternating, each side's best run (the lowest p99), as for the other pairs: a
        # bad second of the shared machine had moved one side's p99 tenfold.
        for name, runs in half.items():
            results.data[f"half_load_{name}"] = {
                **min(runs, key=lambda r: r["p99_ms"]),
                "p99_ms_by_run": [r["p99_ms"] for r in runs],
            }
        # Async: orders accepted, then fully processed; throughput counts to the last one.
        await _settle(mesh, 120)
        async_maker = RequestMaker(
            Workload(SKUS, config.zipf_s, config.decline_share, wait_for_outcome=False), seed=3
        )
        await wait_drained(mesh, 120)
        await vacuum_analyse(mesh)
        before = snapshot(mesh)
        run = await closed_loop(
            Run("place_order_async"), place_call(orders, async_maker), config.levels[-1],
            config.level_s, progress,
        )  # fmt: skip
        accepted_in = run.elapsed_s
        await _settle(mesh, 300)
        run.ended = time.perf_counter()
        results.data["place_order_async"] = {
            **run.summary(),
            "accept_throughput_per_s": round(run.count / accepted_in, 2),
            "note": "throughput counts orders accepted and fully processed (settled)",
        }
        # Everything an order costs, relays and consumers included: until every event is out.
        await wait_drained(mesh, 120)
        await asyncio.sleep(2.0)  # the consumers' last polls
        results.data["costs"] = per_order(before, snapshot(mesh), run.count)
        await _measure_hot_sku(
            config, mesh, orders, best_level["place_order_sync"], results, progress
        )
        await _measure_telemetry_cost(config, mesh, orders, workload, results, progress)
        await _measure_risk_cost(config, mesh, orders, results, progress)


async def _half_load_run(
    config: BenchConfig, mesh: LocalMesh, name: str, call: Call, rate: float, progress: Progress
) -> dict[str, Any]:
    """One open-loop run at ``rate``; for PlaceOrder (``sync``) also where an order's time
    went, stage by stage, and what it cost."""
    await vacuum_analyse(mesh)
    before = snapshot(mesh)
    run = await open_loop(
        Run(f"{name} at half load"), call, rate, config.open_loop_s, progress=progress
    )
    summary = {**run.summary(), "rate_per_s": round(rate, 2)}
    if name != "sync":
        return summary
    costs = per_order(before, snapshot(mesh), run.count)
    keys = (
        "batch_time_ms_by_hop",
        "batch_size_by_hop",
        "cpu_ms_per_order",
        "infrastructure_cpu_ms_per_order",
    )
    return summary | {key: costs[key] for key in keys}


async def _measure_hot_sku(
    config: BenchConfig,
    mesh: LocalMesh,
    orders: order_pb2_grpc.OrderServiceAsyncStub,
    level: int,
    results: Results,
    progress: Progress,
) -> None:
    """A flash sale: every order for one SKU, against one-line orders over the Zipf
    catalogue, back to back at the same concurrency."""
    runs = {}
    for name, skus, zipf in (("zipf_one_line", SKUS, config.zipf_s), ("hot_sku", SKUS[:1], 0.0)):
        workload = Workload(skus, zipf, config.decline_share, max_lines=1)
        call = place_call(orders, RequestMaker(workload, seed=5))
        await vacuum_analyse(mesh)
        run = await closed_loop(Run(name), call, level, config.level_s, progress)
        runs[name] = results.data[name] = {**run.summary(), "concurrency": level}
    results.data["hot_sku_vs_zipf"] = _ratio(
        runs["hot_sku"]["throughput_per_s"], runs["zipf_one_line"]["throughput_per_s"]
    )


async def _alternating_runs(
    config: BenchConfig,
    mesh: LocalMesh,
    progress: Progress,
    name: str,
    pairs: int,
    call_for: Callable[[int], Call],
    services: Sequence[str],
    settings: Mapping[str, Mapping[str, str]],
    extra: Callable[[str, Snapshot, Run], dict[str, Any]],
    ready: Callable[[str], bool] = lambda side: True,
    starting: Callable[[str], None] = lambda side: None,
) -> dict[str, list[dict[str, Any]]]:
    """``pairs`` closed-loop runs of each side at the highest level, off and on
    alternating, ``services`` restarted the same way before each (with
    ``settings[side]``) and run on the same data, vacuumed and analysed after the
    warm-up, so neither side gets the fresh database, the better plans or the quiet
    minute. The warm-up goes on until ``ready(side)`` (at most ``config.ready_wait_s``);
    ``starting(side)`` is called as the measured run begins.
    Each run's summary, with what ``extra`` adds."""
    level = config.levels[-1]
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for _ in range(pairs):
        for side in ("off", "on"):
            for service in services:
                mesh.stop_service(service)
                mesh.start_service(service, **settings[side])
            await mesh.wait_serving(120)
            await _settle(mesh, 120)
            call = call_for(len(runs[side]))
            await closed_loop(Run(f"warm-up, {name} {side}"), call, 4, 2.0)
            waited_until = time.monotonic() + config.ready_wait_s
            while not ready(side) and time.monotonic() < waited_until:
                await closed_loop(Run(f"warm-up, {name} {side}"), call, 4, 0.5)
            # After the warm-up, not before: a table it fills (payment's feature states,
            # on the first run with risk on) would have been analysed empty, and a
            # statement prepared meanwhile keeps a plan for an empty table (a sequential
            # scan per batch, 44 ms a read at 3,000 states) until the table is analysed,
            # which autovacuum does within a minute where it is on (docs/performance.md).
            await vacuum_analyse(mesh)
            before = snapshot(mesh)
            starting(side)
            run = await closed_loop(Run(f"{name} {side}"), call, level, config.level_s, progress)
            runs[side].append({**run.summary(), **extra(side, before, run)})
    return runs


async def _measure_telemetry_cost(
    config: BenchConfig,
    mesh: LocalMesh,
    orders: order_pb2_grpc.OrderServiceAsyncStub,
    workload: Workload,
    results: Results,
    progress: Progress,
) -> None:
    """The same closed loop with the OpenTelemetry SDK switched off in every service,
    against the default (no endpoint: ids only, nothing recorded). Off and on alternate,
    each side restarted the same way and run on the same data, so neither gets the fresh
    database or the quiet minute: a single off run at the end measured the growth of the
    tables as much as the telemetry. CPU per order is reported beside throughput: on a
    shared machine it moves far less between runs."""
    level = config.levels[-1]

    def cpu(side: str, before: Snapshot, run: Run) -> dict[str, Any]:
        costs = per_order(before, snapshot(mesh), run.count)
        return {"cpu_ms_per_order": costs["cpu_ms_per_order_total"]}

    runs = await _alternating_runs(
        config, mesh, progress, "telemetry", config.telemetry_pairs,
        lambda i: place_call(orders, RequestMaker(workload, seed=4 + i)),
        SERVICE_NAMES, {"off": {"OTEL_SDK_DISABLED": "true"}, "on": {}}, cpu,
    )  # fmt: skip

    # Another process on a shared machine only ever slows a run down: each side's best
    # run (highest throughput, lowest CPU per order) is the closest to what its code
    # costs, as timeit keeps the minimum. The means stay beside them.
    def best(side: str, key: str, pick: Callable[[Iterable[float]], float]) -> float:
        return pick(r[key] for r in runs[side])

    def mean(side: str, key: str) -> float:
        return statistics.fmean(r[key] for r in runs[side])

    on, off = best("on", "throughput_per_s", max), best("off", "throughput_per_s", max)
    cpu_on, cpu_off = best("on", "cpu_ms_per_order", min), best("off", "cpu_ms_per_order", min)
    mean_on, mean_off = mean("on", "throughput_per_s"), mean("off", "throughput_per_s")
    results.data["place_order_sync_telemetry_off"] = runs["off"][-1]
    results.data["telemetry_cost"] = {
        "throughput_on_per_s": round(on, 2),
        "throughput_off_per_s": round(off, 2),
        "cost_share": round(1 - on / off, 3) if off else None,
        "cpu_ms_per_order_on": round(cpu_on, 3),
        "cpu_ms_per_order_off": round(cpu_off, 3),
        "cpu_cost_share": round(1 - cpu_off / cpu_on, 3) if cpu_on else None,
        "mean_cost_share": round(1 - mean_on / mean_off, 3) if mean_off else None,
        "runs": runs,
        "note": f"{config.telemetry_pairs} runs each side, alternating off/on, {level} "
        "callers; each side's best run (mean_cost_share: the means)",
    }


def ready_to_score(payment_metrics_port: int) -> bool:
    """Risk on, in its steady state: the champion has decided, and payment's consumer
    has caught up with the payment events published while risk was off."""
    return champion_decided(payment_metrics_port) and features_caught_up(
        payment_metrics_port, KafkaSettings().kafka_topic_partitions
    )


async def _measure_risk_cost(
    config: BenchConfig,
    mesh: LocalMesh,
    orders: order_pb2_grpc.OrderServiceAsyncStub,
    results: Results,
    progress: Progress,
) -> None:
    """PlaceOrder with payment's risk scoring on (a small trained model as champion)
    against off, alternating as the telemetry cost does: payment restarted each time
    with the other setting, the rest of the mesh untouched. Both sides place the orders
    the model was trained on the like of: drawn from the simulator's log (customers,
    cards, risk signals, items), so the scored attempts carry signals and order lines.
    The model's scoring time per batch is read from payment's own histogram after each
    run on."""
    folder = config.state_dir / "risk"
    version = await train_champion_off_loop(folder, mesh.config.database_url("payment"))
    simulated = simulated_orders(folder)
    await seed(mesh.config.address("inventory"), simulated.products())
    level = config.levels[-1]
    # Each pair of runs starts further along the log; off and on of a pair alike.
    stride = SIMULATED_ORDERS // max(1, config.risk_pairs)
    histograms = []
    # The histogram as the run begins: the warm-up's batches (some by the rules, before
    # the champion was loaded) are not the run's.
    at_start: dict[str, dict[str, dict[float, float]]] = {}
    decided_at_start: dict[str, float] = {}
    port = mesh.config.metrics_port("payment")

    def start(side: str) -> None:
        if side == "on":
            at_start["on"] = scoring_histogram(port)
            decided_at_start.clear()
            decided_at_start.update(decisions(port))

    def scoring(side: str, before: Snapshot, run: Run) -> dict[str, Any]:
        # CPU per order moves far less than throughput between runs on a shared machine.
        costs = per_order(before, snapshot(mesh), run.count)
        cpu = {
            "cpu_ms_per_order": costs["cpu_ms_per_order_total"],
            "payment_cpu_ms_per_order": costs["cpu_ms_per_order"]["payment"],
            # Risk slows the authorization hop, and the other hops' batches shrink: what
            # that costs shows in the other services and the database, not in payment.
            "cpu_ms_per_order_by_process": {
                **costs["cpu_ms_per_order"],
                **costs["infrastructure_cpu_ms_per_order"],
            },
        }
        if side == "off":
            return cpu
        histograms.append(since(at_start.pop("on", {}), scoring_histogram(port)))
        # Each declined order also costs its compensations (stock released, payment
        # voided, a rejection event): the share says how much of the run that was.
        return {**cpu, "risk_declined_share": declined_share(decided_at_start, decisions(port))}

    poll = {"ORDERMESH_RISK_REGISTRY_POLL_S": "0.5"}  # the champion, soon after the start
    runs = await _alternating_runs(
        config, mesh, progress, "risk", config.risk_pairs,
        lambda i: place_call(orders, SimulatedRequests(simulated, start=i * stride)),
        ("payment",),
        {"off": {"ORDERMESH_RISK_ENABLED": "false", **poll},
         "on": {"ORDERMESH_RISK_ENABLED": "true", **poll}},
        scoring,
        lambda side: side == "off" or ready_to_score(mesh.config.metrics_port("payment")),
        start,
    )  # fmt: skip
    # The best run of each side, as for the telemetry cost (noise only slows a run down).
    on = max(r["throughput_per_s"] for r in runs["on"])
    off = max(r["throughput_per_s"] for r in runs["off"])
    results.data["risk_cost"] = {
        "champion": version,
        "throughput_on_per_s": round(on, 2),
        "throughput_off_per_s": round(off, 2),
        "mean_ratio": round(
            statistics.fmean(r["throughput_per_s"] for r in runs["on"])
            / statistics.fmean(r["throughput_per_s"] for r in runs["off"]),
            3,
        ),
        "cpu_ms_per_order_on": min(r["cpu_ms_per_order"] for r in runs["on"]),
        "cpu_ms_per_order_off": min(r["cpu_ms_per_order"] for r in runs["off"]),
        **scoring_summary(histograms),
        "risk_declined_share_by_run": [r.get("risk_declined_share") for r in runs["on"]],
        "runs": runs,
        "note": f"{config.risk_pairs} runs each side, alternating off/on, {level} callers; "
        "orders drawn from the simulator's log; each side's best run; scoring times are "
        "the histogram's bucket bounds",
    }


async def _invariants(mesh: LocalMesh) -> Any:
    await _settle(mesh, 300)
    c = mesh.config
    return await check_invariants(
        c.database_url("order"), c.database_url("inventory"), c.database_url("payment"),
        SAGA_TIMEOUT_S,
    )  # fmt: skip


async def _measure_database_bound(config: BenchConfig, prefix: str, results: Results) -> None:
    urls = {}
    for service in ("order", "inventory", "payment"):
        url = f"{config.postgres}/{prefix}_raw_{service}"
        spec = load_service(service)
        await upgrade_to_head(spec.migrations, url, spec.name)
        urls[service] = url
    pools = {
        s: await asyncpg.create_pool(
            asyncpg_dsn(u), min_size=min(4, config.pool_size), max_size=2 * config.pool_size
        )
        for s, u in urls.items()
    }
    try:
        await seed_catalogue(pools["inventory"], list(SKUS), STOCK_PER_SKU)
        path = RawOrderPath(pools["order"], pools["inventory"], pools["payment"], list(SKUS))
        await closed_loop(Run("raw warm-up"), path.place, 4, 1.0)
        await vacuum_analyse_databases(list(urls.values()))
        run = await closed_loop(Run("raw_sql"), path.place, config.levels[-1], config.raw_sql_s)
        results.data["raw_sql"] = run.summary()
    finally:
        for pool in pools.values():
            await pool.close()


async def _measure_relay_bound(config: BenchConfig, prefix: str, results: Results) -> None:
    from ordermesh_cli.broker import start_tansu, wait_for_port

    port = config.base_port + 60
    broker = start_tansu(port)
    try:
        wait_for_port(port, 15)
        url = f"{config.postgres}/{prefix}_relay"
        await ensure_database(url)
        await upgrade_to_head(load_service("order").migrations, url, "order")
        settings = RelaySettings.model_validate({"kafka_bootstrap": f"127.0.0.1:{port}"})
        # Alternating, each side's best run, as for the telemetry and risk costs: a
        # single baseline run moved from 52K to 99K events/s between runs of the bench
        # while the relay stayed at 34K-47K, and the ratio with it.
        runs: dict[str, list[float]] = {"relay": [], "raw_producer": []}
        for _ in range(max(1, config.relay_pairs)):
            runs["relay"].append(await relay_throughput(url, settings, config.events))
            await vacuum_analyse_databases([url])  # as before the relay's run (fill_outbox)
            runs["raw_producer"].append(
                await producer_throughput(
                    f"127.0.0.1:{port}", config.events, settings.outbox_batch_size
                )
            )
        for name, rates in runs.items():
            results.data[name] = {
                "throughput_per_s": round(max(rates), 2),
                "p50_ms": None,
                "p99_ms": None,
                "runs_per_s": [round(rate, 2) for rate in rates],
            }
    finally:
        stop_all([broker], 5)


def _ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return round(a / b, 3)


def _report(config: BenchConfig, results: Results) -> dict[str, Any]:
    d = results.data
    d["ratios"] = {
        "sync_vs_echo_chain": _ratio(
            d["place_order_sync"]["throughput_per_s"], d["echo_chain"]["throughput_per_s"]
        ),
        "async_vs_raw_sql": _ratio(
            d["place_order_async"]["throughput_per_s"], d["raw_sql"]["throughput_per_s"]
        ),
        "relay_vs_raw_producer": _ratio(
            d["relay"]["throughput_per_s"], d["raw_producer"]["throughput_per_s"]
        ),
        "p99_sync_vs_echo_chain_at_half_load": _ratio(
            d["half_load_sync"]["p99_ms"], d["half_load_echo"]["p99_ms"]
        ),
        "hot_sku_vs_zipf": d["hot_sku_vs_zipf"],
        "risk_on_vs_off": _ratio(
            d["risk_cost"]["throughput_on_per_s"], d["risk_cost"]["throughput_off_per_s"]
        ),
    }
    d["goals"] = {
        "sync_vs_echo_chain": ">= 1.0 (not done below 0.5)",
        "async_vs_raw_sql": ">= 2 (not done below 1)",
        "relay_vs_raw_producer": ">= 0.8 (not done below 0.6)",
        "p99_sync_vs_echo_chain_at_half_load": "<= 3 (not done above 5)",
        "hot_sku_vs_zipf": ">= 0.8 (not done below 0.5)",
        "cpu_ms_per_order_total": "<= 5 (not done above 10)",
        "statements_per_order": "<= 3 (not done above 6)",
        "telemetry_cost.cost_share": "< 0.03 (not done above 0.05)",
        "telemetry_cost.cpu_cost_share": "the same, in CPU per order",
        "risk_on_vs_off": ">= 0.9",
        "risk_cost.model_p99_ms_per_batch": "within ORDERMESH_RISK_BUDGET_S (20 ms)",
    }
    d["cpu_ms_per_order"] = d["costs"]["cpu_ms_per_order"]
    d["infrastructure_cpu_ms_per_order"] = d["costs"]["infrastructure_cpu_ms_per_order"]
    d["context_switches_per_order"] = d["costs"]["context_switches_per_order"]
    d["statements_per_order"] = d["costs"]["statements_per_order"]
    d["rpcs_per_order"] = d["costs"]["rpcs_per_order"]
    d["batch_size_by_hop"] = d["costs"]["batch_size_by_hop"]
    d["machine"] = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    d["config"] = {
        "levels": list(config.levels), "level_s": config.level_s, "open_loop_s": config.open_loop_s,
        "half_load_pairs": config.half_load_pairs,
        "zipf_s": config.zipf_s, "decline_share": config.decline_share, "events": config.events,
    }  # fmt: skip
    d["curve"] = {k: [list(p) for p in v] for k, v in results.curve.items()}
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "latest.json").write_text(json.dumps(d, indent=2) + "\n")
    plot(results, config.out / "latest.png")
    return d


def plot(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in results.curve.items():
        xs, ys = zip(*points, strict=True) if points else ((), ())
        ax.plot(xs, ys, marker="o", label=name.replace("_", " "))
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_title("ordermesh: latency against throughput (closed loop)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
