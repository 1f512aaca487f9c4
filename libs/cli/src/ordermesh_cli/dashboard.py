"""The live table `ordermesh up` shows while the mesh runs."""

from __future__ import annotations

import time

from rich.console import Group
from rich.table import Table

from ordermesh_cli.demo import DemoTraffic
from ordermesh_cli.mesh import Child, LocalMesh

STYLES = {"SERVING": "green", "NOT_SERVING": "yellow", "STARTING": "cyan"}
OUTCOMES_CAPTION = (
    "waited: PlaceOrder answered with the outcome (a rejection as an error and its "
    "reason); background: answered PENDING, the outcome came from WatchOrder"
)


def health_text(child: Child, now: float) -> str:
    """The child's health, and when it is dead, when it starts again."""
    if child.restart_at is not None and child.proc.poll() is not None:
        return f"{child.health}, restart in {max(0.0, child.restart_at - now):.0f}s"
    return child.health


def broker_text(mesh: LocalMesh) -> str:
    broker = mesh.broker
    if broker is None:
        return f"broker (external) {mesh.config.kafka_bootstrap}"
    state = "RUNNING" if broker.poll() is None else f"EXITED({broker.returncode})"
    return f"broker (tansu) {mesh.config.kafka_bootstrap} pid {broker.pid} {state}"


def outcome_lines(demo: DemoTraffic) -> list[str]:
    total = sum(demo.outcomes.values())
    return [f"demo orders: {total}"] + [
        f"  {count:6d}  {outcome}" for outcome, count in sorted(demo.outcomes.items())
    ]


def mesh_view(mesh: LocalMesh, demo: DemoTraffic | None) -> Group:
    parts: list[Table] = [mesh_table(mesh)]
    if demo is not None:
        outcomes = Table(title="demo orders", show_header=True, caption=OUTCOMES_CAPTION)
        outcomes.add_column("outcome")
        outcomes.add_column("orders", justify="right")
        for outcome, count in demo.outcomes.most_common():
            outcomes.add_row(outcome, str(count))
        recent = Table(title="latest", show_header=False)
        recent.add_column("order")
        for line in demo.last:
            recent.add_row(line)
        parts += [outcomes, recent]
    return Group(*parts)


def mesh_table(mesh: LocalMesh) -> Table:
    table = Table(
        title="ordermesh — local mesh (Ctrl-C stops everything)",
        caption=f"Kafka: {mesh.config.kafka_bootstrap}",
    )
    table.add_column("service")
    table.add_column("address")
    table.add_column("pid", justify="right")
    table.add_column("health")
    table.add_column("up", justify="right")
    table.add_column("restarts", justify="right")
    table.add_column("outbox backlog", justify="right")
    table.add_column("notifications sent", justify="right")
    now = time.monotonic()
    for child in mesh.children:
        style = STYLES.get(child.health, "red")
        backlog = child.metrics.get("ordermesh_outbox_backlog")
        sent = child.metrics.get('ordermesh_notifications_total{result="sent"}')
        table.add_row(
            child.label,
            child.address,
            str(child.proc.pid),
            f"[{style}]{health_text(child, now)}[/{style}]",
            f"{now - child.started:.0f}s",
            str(child.restarts),
            "" if backlog is None else f"{backlog:.0f}",
            "" if sent is None else f"{sent:.0f}",
        )
    broker = mesh.broker
    if broker is not None:
        alive = broker.poll() is None
        table.add_row(
            "broker (tansu)",
            mesh.config.kafka_bootstrap,
            str(broker.pid),
            "[green]RUNNING[/green]" if alive else f"[red]EXITED({broker.returncode})[/red]",
            "",
        )
    else:
        table.add_row("broker (external)", mesh.config.kafka_bootstrap)
    return table
