"""`make bench-soak ORDERS=n`: a long run with wait_for_outcome=false. It samples the
resident memory of every service and the outbox backlog as it goes, and checks the
invariants once the mesh has settled."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console
from rich.progress import Progress, TaskID

from ordermesh.order.v1 import order_pb2_grpc
from ordermesh_bench.suite import (
    SAGA_TIMEOUT_S,
    SKUS,
    _drop_databases,
    _settle,
    place_call,
    seed,
    wait_drained,
)
from ordermesh_bench.workload import RequestMaker, Workload
from ordermesh_cli.invariants import check_invariants, fetch_rows, owed_work
from ordermesh_cli.mesh import LocalMesh, MeshConfig, scrape_metrics
from ordermesh_platform.db import autovacuum_is_off, create_engine, vacuum_analyze
from ordermesh_platform.service_names import SERVICE_NAMES

console = Console(stderr=True)
PAGE_KB = 4


@dataclass(frozen=True)
class SoakConfig:
    orders: int
    postgres: str = "postgresql://postgres@127.0.0.1:5432"
    base_port: int = 27051
    concurrency: int = 32
    max_s: float = 0.0  # stop placing orders after this long (0: place them all)
    # Placing holds while the consumers are this many events behind (0: never holds), so
    # the run measures the rate the whole mesh sustains, not how far a backlog can grow.
    max_lag: int = 2000
    sample_every_s: float = 10.0
    # On a server with autovacuum off, VACUUM (ANALYZE) every service database this
    # often, as autovacuum would: else the planner keeps the plans of empty tables.
    vacuum_every_s: float = 180.0
    out: Path = Path("bench/results")
    state_dir: Path = Path(".ordermesh/soak")


def rss_mb(pid: int) -> float:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * PAGE_KB / 1024


async def run_soak(config: SoakConfig) -> dict[str, Any]:
    prefix = f"soak_{uuid.uuid4().hex[:6]}"
    env = {"ORDERMESH_SAGA_TIMEOUT_S": str(SAGA_TIMEOUT_S), "ORDERMESH_LOG_LEVEL": "WARNING"}
    mesh = LocalMesh(
        MeshConfig(
            base_port=config.base_port,
            postgres=f"{config.postgres}/{prefix}",
            state_dir=config.state_dir,
            env=env,
            pool_size=10,  # a pod's pool, as in the soaks recorded in docs/performance.md
        )
    )
    samples: list[dict[str, Any]] = []
    sample_errors = 0
    placed = 0
    governor = Governor(lambda: consumer_lag(mesh), config.max_lag)
    maintainer = Maintainer(
        [mesh.config.database_url(name) for name in SERVICE_NAMES] if config.postgres else [],
        config.vacuum_every_s,
    )
    try:
        mesh.start()
        await mesh.wait_serving(120)
        await seed(mesh.config.address("inventory"))
        maker = RequestMaker(Workload(SKUS, wait_for_outcome=False), seed=9)
        started = time.perf_counter()
        async with grpc.aio.insecure_channel(mesh.config.address("order")) as channel:
            call = place_call(order_pb2_grpc.OrderServiceStub(channel), maker)
            errors: Counter[str] = Counter()
            tickets = iter(range(config.orders))

            async def caller(progress: Progress, task: TaskID) -> None:
                # Each caller places one order after another, so `concurrency` stay in
                # flight until the last one (no pause between chunks of orders).
                nonlocal placed
                for _ in tickets:
                    if config.max_s and time.perf_counter() - started > config.max_s:
                        return  # time-boxed: the report says how many were placed
                    await governor.go.wait()
                    outcome = await call()
                    if outcome == "OK":
                        placed += 1
                    else:
                        errors[outcome] += 1
                    progress.advance(task)

            async def sampler() -> None:
                nonlocal sample_errors
                while True:
                    try:
                        samples.append(await _sample(mesh, placed, time.perf_counter() - started))
                    except Exception as error:  # one lost sample must not end the sampling
                        sample_errors += 1
                        console.print(f"[yellow]sample failed: {error!r}")
                    await asyncio.sleep(config.sample_every_s)

            sampling = asyncio.create_task(sampler())
            governing = asyncio.create_task(governor.run())
            maintaining = asyncio.create_task(maintainer.run())
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("soak", total=config.orders)
                await asyncio.gather(*(caller(progress, task) for _ in range(config.concurrency)))
            await _settle(mesh, 600)
            backlog = await wait_drained(mesh, 300)
            lag_left = await _wait_down(lambda: consumer_lag(mesh), 300)
            due_left = await _wait_down(lambda: notifications_due(mesh), 300)
            samples.append(await _sample(mesh, placed, time.perf_counter() - started))
            sampling.cancel()
            governing.cancel()
            maintaining.cancel()
        c = mesh.config
        report = await check_invariants(
            c.database_url("order"), c.database_url("inventory"), c.database_url("payment"),
            SAGA_TIMEOUT_S,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
    finally:
        mesh.stop()
        await _drop_databases(config.postgres, prefix)
    result = {
        "orders": config.orders,
        "stopped_at_max_s": placed + sum(errors.values()) < config.orders,
        "accepted": placed,
        "errors": sum(errors.values()),
        "errors_by_code": dict(errors),
        "elapsed_s": round(elapsed, 1),
        "throughput_per_s": round(placed / elapsed, 2),
        "held_s": round(governor.held_s, 1),
        "invariants_ok": report.ok and backlog == 0 and due_left == 0,
        "violations": report.violations[:20],
        "final_backlog": backlog,
        "final_consumer_lag": lag_left,
        "final_notifications_due": due_left,
        "memory_growth_10_to_100": _growth(samples),
        "sequential_rows_per_order": _scan_growth(samples),
        "sample_errors": sample_errors,
        "vacuum_passes": maintainer.passes,
        "vacuum_s": round(maintainer.spent_s, 1),
        "samples": samples,
    }
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_soak(samples, config.out / "soak.png")
    return result


def plot_soak(samples: list[dict[str, Any]], path: Path) -> None:
    """Resident memory per service, and the backlogs, against orders placed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (memory, backlog, rate) = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    placed = [s["placed"] for s in samples]
    for name in samples[-1]["rss_mb"] if samples else ():
        memory.plot(placed, [s["rss_mb"].get(name, 0) for s in samples], label=name)
    memory.set_ylabel("resident memory (MB)")
    memory.set_title("ordermesh soak (wait_for_outcome=false)")
    memory.legend()
    backlog.plot(placed, [s["backlog"] for s in samples], label="outbox rows unpublished")
    backlog.plot(placed, [s.get("owed", 0) for s in samples], label="orders owing saga work")
    backlog.plot(
        placed,
        [sum(s.get("consumer_lag", {}).values()) for s in samples],
        label="events not yet consumed",
    )
    backlog.plot(
        placed,
        [s.get("notifications_due", 0) for s in samples],
        label="notifications due, not yet sent",
    )
    backlog.set_ylabel("rows / orders")
    backlog.legend()
    # Orders accepted per second between samples: flat if the cost per order does not
    # grow with the data already held.
    pairs = list(itertools.pairwise(samples))
    rate.plot(
        [b["placed"] for _, b in pairs],
        [(b["placed"] - a["placed"]) / max(b["t_s"] - a["t_s"], 1e-9) for a, b in pairs],
        label="orders accepted per second",
    )
    rate.set_xlabel("orders accepted")
    rate.set_ylabel("orders/s")
    rate.legend()
    for ax in (memory, backlog, rate):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def _sample(mesh: LocalMesh, placed: int, at_s: float) -> dict[str, Any]:
    backlog = 0.0
    lag: dict[str, float] = {}
    for child in mesh.children:
        metrics = scrape_metrics(child.metrics_port)
        backlog += metrics.get("ordermesh_outbox_backlog", 0.0)
        lag[child.name] = metrics.get("ordermesh_consumer_lag", 0.0)
    return {
        "t_s": round(at_s, 1),
        "placed": placed,
        "rss_mb": {c.name: round(rss_mb(c.proc.pid), 1) for c in mesh.children},
        "backlog": backlog,
        # Events fetched from Kafka but not yet handled are held in the consumer's memory.
        "consumer_lag": lag,
        # Deliveries due and not yet sent: bounded if notification keeps up.
        "notifications_due": notifications_due(mesh),
        # Orders whose saga still owes work: bounded if the sagas keep up.
        "owed": await owed_work(mesh.config.database_url("order")),
        "seq_rows": await _sequentially_read(mesh),
    }


async def _sequentially_read(mesh: LocalMesh) -> dict[str, int]:
    """Rows PostgreSQL has read by sequential scans, per table of every service. A
    statement that scans a growing table makes this grow faster than the orders do: the
    cost per order then rises with the data, which a short run never shows."""
    if not mesh.config.postgres:
        return {}
    found: dict[str, int] = {}
    for name in SERVICE_NAMES:
        rows = await fetch_rows(
            mesh.config.database_url(name),
            "SELECT relname, seq_tup_read FROM pg_stat_user_tables",
        )
        found.update({f"{name}.{table}": int(n) for table, n in rows})
    return found


def _scan_growth(samples: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per table, the rows read sequentially per order placed over the second quarter
    and over the last quarter of the run. Bounded tables read the same per order in
    both; a table read whole per statement reads more per order as it grows."""
    if len(samples) < 8:
        return {}
    total = samples[-1]["placed"] or 1

    def at(share: float) -> dict[str, Any]:
        return next((s for s in samples if s["placed"] >= total * share), samples[-1])

    def per_order(a: dict[str, Any], b: dict[str, Any], table: str) -> float:
        placed = b["placed"] - a["placed"]
        read = b["seq_rows"].get(table, 0) - a["seq_rows"].get(table, 0)
        return round(read / placed, 2) if placed > 0 else 0.0

    q1, q2, q3, end = at(0.25), at(0.5), at(0.75), samples[-2]
    return {
        table: {
            "second_quarter": per_order(q1, q2, table),
            "last_quarter": per_order(q3, end, table),
        }
        for table in end.get("seq_rows", {})
    }


class Governor:
    """Opens ``go`` while the consumers keep up; closes it while they are more than
    ``max_lag`` events behind (0: never). A hold lasts at most ``max_hold_s``: the lag
    gauges move only when a consumer handles a batch, so a stale one must not stop the run."""

    def __init__(
        self,
        lag: Callable[[], float],
        max_lag: int,
        interval_s: float = 1.0,
        max_hold_s: float = 60.0,
    ) -> None:
        self._lag = lag
        self._max_lag = max_lag
        self._interval_s = interval_s
        self._max_hold_s = max_hold_s
        self.go = asyncio.Event()
        self.go.set()
        self.held_s = 0.0

    async def run(self) -> None:
        held_since: float | None = None
        while self._max_lag:
            await asyncio.sleep(self._interval_s)
            lag = await asyncio.to_thread(self._lag)
            now = time.monotonic()
            behind = lag > self._max_lag and (
                held_since is None or now - held_since < self._max_hold_s
            )
            if behind and held_since is None:
                held_since = now
                self.go.clear()
            elif not behind and held_since is not None:
                self.held_s += now - held_since
                held_since = None
                self.go.set()


class Maintainer:
    """Stands in for autovacuum where the server has it off (it is on by default, and
    production should keep it on): every ``every_s``, ``VACUUM (ANALYZE)`` each database.
    Does nothing on a server whose autovacuum is on, or with no databases."""

    def __init__(self, urls: list[str], every_s: float) -> None:
        self._urls = urls
        self._every_s = every_s
        self.passes = 0
        self.spent_s = 0.0

    async def run(self) -> None:
        if not self._urls or not await self._server_never_vacuums():
            return
        while True:
            await asyncio.sleep(self._every_s)
            began = time.perf_counter()
            for url in self._urls:
                engine = create_engine(url, pool_size=1)
                try:
                    await vacuum_analyze(engine)
                finally:
                    await engine.dispose()
            self.passes += 1
            self.spent_s += time.perf_counter() - began

    async def _server_never_vacuums(self) -> bool:
        engine = create_engine(self._urls[0], pool_size=1)
        try:
            return await autovacuum_is_off(engine)
        finally:
            await engine.dispose()


def consumer_lag(mesh: LocalMesh) -> float:
    """Events the mesh's consumers have yet to handle, from their metrics."""
    return sum(
        scrape_metrics(child.metrics_port).get("ordermesh_consumer_lag", 0.0)
        for child in mesh.children
    )


def notifications_due(mesh: LocalMesh) -> float:
    """Deliveries due and not yet sent, from notification's metrics (every replica
    reports the whole table: the largest report)."""
    return max(
        scrape_metrics(child.metrics_port).get("ordermesh_notifications_due", 0.0)
        for child in mesh.children
    )


async def _wait_down(left: Callable[[], float], timeout_s: float) -> float:
    """Wait until ``left()`` (read off the event loop) is 0; what is left at the end."""
    deadline = time.monotonic() + timeout_s
    while True:
        now_left = await asyncio.to_thread(left)
        if not now_left or time.monotonic() > deadline:
            return now_left
        await asyncio.sleep(0.5)


def _growth(samples: list[dict[str, Any]]) -> dict[str, float | None]:
    """Memory at the end over memory at 10% of the orders, per service."""
    if len(samples) < 2:
        return {}
    total = samples[-1]["placed"] or 1
    early = next((s for s in samples if s["placed"] >= total * 0.1), samples[0])
    late = samples[-1]
    return {
        name: round(late["rss_mb"][name] / early["rss_mb"][name] - 1, 4)
        if early["rss_mb"].get(name)
        else None
        for name in late["rss_mb"]
    }
