"""What an order costs each service, read from the outside while a load runs: CPU
seconds from /proc, statements and RPCs from each service's /metrics, and the batch
sizes every batcher formed. Beside the services, what the machine's PostgreSQL and the
mesh's broker spent meanwhile: a change that moves work out of a service and into the
database would otherwise look free. And every process's context switches: the
wakeups a pass costs."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ordermesh_cli.mesh import LocalMesh
from ordermesh_platform.service_names import SERVICE_NAMES

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    """A process's /proc stat fields from the state on (the third field)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def _cpu_of(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # user + system


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    return _cpu_of(_stat(pid))


def context_switches(pid: int) -> int:
    """Times a process's threads have been switched out so far, waiting (for a
    statement's answer, a message) or preempted. Each is a wakeup that costs the
    machine CPU; on the batched path they, not the work itself, set what a pass costs
    (docs/performance.md, "Half load, taken apart")."""
    total = 0
    for thread in os.scandir(f"/proc/{pid}/task"):
        try:
            with open(f"{thread.path}/status") as status:
                total += sum(int(line.split()[1]) for line in status if "ctxt_switches" in line)
        except FileNotFoundError:
            continue  # the thread ended while we looked
    return total


def _postgres_pids() -> list[int]:
    """Every PostgreSQL process on the machine (its backends and its own workers): the
    server is the machine's, so a run should be its only user."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                if cmdline.read().startswith(b"postgres"):
                    pids.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # ended (or not ours to read) while we looked
    return pids


# A process as a pid and its start time: a pid the kernel hands to a new process is
# another process.
ProcessKey = tuple[int, int]


def _postgres_readings() -> dict[ProcessKey, tuple[float, float]]:
    """Every PostgreSQL process's CPU seconds and context switches so far."""
    readings = {}
    for pid in _postgres_pids():
        try:
            fields = _stat(pid)  # the start time (field 22) tells a reused pid apart
            readings[(pid, int(fields[19]))] = (_cpu_of(fields), float(context_switches(pid)))
        except (FileNotFoundError, ProcessLookupError):
            continue  # a backend that ended between the listing and the read
    return readings


def _spent_since(
    before: Mapping[ProcessKey, tuple[float, float]],
    after: Mapping[ProcessKey, tuple[float, float]],
) -> tuple[float, float]:
    """What the processes alive at ``after`` spent since ``before``: CPU seconds and
    context switches. Taken process by process, not as the difference of two sums: a
    backend of another client that ended in between would take what it had spent
    before out of the second sum (it fell to nothing while tests ran beside a bench).
    A process that started in between counts whole; one that ended is lost."""
    cpu = switches = 0.0
    for key, (spent, switched) in after.items():
        spent_before, switched_before = before.get(key, (0.0, 0.0))
        cpu += spent - spent_before
        switches += switched - switched_before
    return cpu, switches


def samples(port: int) -> list[Any]:
    """Every sample a service's /metrics exposes now."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
        body = reply.read().decode()
    return [s for family in text_string_to_metric_families(body) for s in family.samples]


# The batchers' histograms (each labelled by batcher): items per batch, an item's wait
# for its batch, a batch's run; and the batches that stalled (ran past the stall time).
BATCH_SIZE = "ordermesh_batch_size"
BATCH_WAIT = "ordermesh_batch_queue_wait_seconds"
BATCH_RUN = "ordermesh_batch_duration_seconds"
BATCH_STALLS = "ordermesh_batch_stalls_total"
_BATCHER_SAMPLES = frozenset(
    [f"{histogram}{part}" for histogram in (BATCH_SIZE, BATCH_WAIT, BATCH_RUN)
     for part in ("_sum", "_count")] + [BATCH_STALLS]
)  # fmt: skip


@dataclass
class Snapshot:
    cpu_s: dict[str, float] = field(default_factory=dict)
    # The mesh's own broker's, apart from the services'.
    infrastructure_cpu_s: dict[str, float] = field(default_factory=dict)
    # Each PostgreSQL process's CPU seconds and context switches (``_spent_since``).
    postgres: dict[ProcessKey, tuple[float, float]] = field(default_factory=dict)
    # The services' and the broker's (PostgreSQL's are in ``postgres``).
    context_switches: dict[str, float] = field(default_factory=dict)
    statements: dict[str, float] = field(default_factory=dict)
    rpcs: dict[str, float] = field(default_factory=dict)
    # "<service>/<batcher>" -> {histogram sample name: value}: the sums and counts of
    # the batchers' histograms
    batchers: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def batches(self) -> dict[str, tuple[float, float]]:
        """batcher -> (items, batches) so far."""
        return {
            key: (found.get(f"{BATCH_SIZE}_sum", 0.0), found.get(f"{BATCH_SIZE}_count", 0.0))
            for key, found in self.batchers.items()
        }


def snapshot(mesh: LocalMesh) -> Snapshot:
    shot = Snapshot()
    shot.postgres = _postgres_readings()
    if mesh.broker is not None:  # none when the mesh uses a broker it did not start
        shot.infrastructure_cpu_s["broker"] = cpu_seconds(mesh.broker.pid)
        shot.context_switches["broker"] = context_switches(mesh.broker.pid)
    for name in SERVICE_NAMES:
        pid = mesh.child(name).proc.pid
        shot.cpu_s[name] = cpu_seconds(pid)
        shot.context_switches[name] = context_switches(pid)
        statements = rpcs = 0.0
        for s in samples(mesh.config.metrics_port(name)):
            if s.name == "ordermesh_db_statements_total":
                statements += s.value
            elif s.name == "ordermesh_rpc_requests_total":
                rpcs += s.value
            elif s.name in _BATCHER_SAMPLES:
                found = shot.batchers.setdefault(f"{name}/{s.labels['batcher']}", {})
                found[s.name] = found.get(s.name, 0.0) + s.value
        shot.statements[name], shot.rpcs[name] = statements, rpcs
    return shot


def per_order(before: Snapshot, after: Snapshot, orders: int) -> dict[str, Any]:
    """The costs between two snapshots, divided by the orders placed in between."""
    n = max(orders, 1)

    def delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        return {k: b[k] - a.get(k, 0.0) for k in b}

    cpu = delta(before.cpu_s, after.cpu_s)
    postgres_cpu, postgres_switches = _spent_since(before.postgres, after.postgres)
    infrastructure = {
        "postgres": postgres_cpu,
        **delta(before.infrastructure_cpu_s, after.infrastructure_cpu_s),
    }
    switches = {
        **delta(before.context_switches, after.context_switches),
        "postgres": postgres_switches,
    }
    statements = delta(before.statements, after.statements)
    rpcs = delta(before.rpcs, after.rpcs)
    batches = {}
    for key in after.batchers:
        items, count = _grown(before, after, key, BATCH_SIZE)
        if count:
            batches[key] = {
                "batches": int(count),
                "mean_size": round(items / count, 2),
                "stalls": int(_grown_by(before, after, key, BATCH_STALLS)),
            }
    return {
        "orders": orders,
        "batch_time_ms_by_hop": batch_times(before, after),
        "cpu_ms_per_order": {k: round(1000 * v / n, 2) for k, v in cpu.items()},
        "cpu_ms_per_order_total": round(1000 * sum(cpu.values()) / n, 2),
        "infrastructure_cpu_ms_per_order": {
            k: round(1000 * v / n, 2) for k, v in infrastructure.items()
        },
        "context_switches_per_order": {k: round(v / n, 1) for k, v in switches.items()},
        "statements_per_order": round(sum(statements.values()) / n, 2),
        "statements_per_order_by_service": {k: round(v / n, 2) for k, v in statements.items()},
        # Every RPC a service answered, PlaceOrder included.
        "rpcs_per_order": round(sum(rpcs.values()) / n, 3),
        "internal_rpcs_per_order": round(
            (rpcs.get("inventory", 0) + rpcs.get("payment", 0)) / n, 3
        ),
        "batch_size_by_hop": batches,
    }


def batch_times(before: Snapshot, after: Snapshot) -> dict[str, dict[str, float | None]]:
    """Each batcher's mean wait of an item for its batch and mean run of a batch, in ms,
    between two snapshots: an order's time stage by stage (docs/performance.md, "Half
    load by stage")."""

    def mean_ms(key: str, histogram: str) -> float | None:
        total, count = _grown(before, after, key, histogram)
        return round(1000 * total / count, 2) if count else None

    found = {}
    for key in after.batchers:
        wait, run = mean_ms(key, BATCH_WAIT), mean_ms(key, BATCH_RUN)
        if wait is not None or run is not None:
            found[key] = {"wait_ms": wait, "run_ms": run}
    return found


def _grown_by(before: Snapshot, after: Snapshot, key: str, sample: str) -> float:
    """How much one of a batcher's samples grew between the snapshots."""
    return after.batchers.get(key, {}).get(sample, 0.0) - before.batchers.get(key, {}).get(
        sample, 0.0
    )


def _grown(before: Snapshot, after: Snapshot, key: str, histogram: str) -> tuple[float, float]:
    """How much a batcher's histogram's sum and count grew between the snapshots."""
    return (
        _grown_by(before, after, key, f"{histogram}_sum"),
        _grown_by(before, after, key, f"{histogram}_count"),
    )
