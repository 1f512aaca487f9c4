"""The `ordermesh` command line."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live

from ordermesh_cli.dashboard import mesh_view
from ordermesh_cli.demo import DemoTraffic, seed_catalogue
from ordermesh_cli.health_client import check_health
from ordermesh_cli.mesh import LocalMesh, MeshConfig, MeshFailed
from ordermesh_cli.registry import SERVICE_NAMES, load_service

app = typer.Typer(
    help="ordermesh: an order-processing engine. Run the local mesh, or one service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _service_name(name: str) -> str:
    if name not in SERVICE_NAMES:
        raise typer.BadParameter(f"choose one of {', '.join(SERVICE_NAMES)}")
    return name


ServiceArg = Annotated[str, typer.Argument(help="order, inventory, payment or notification")]


@app.command()
def serve(service: ServiceArg) -> None:
    """Run one service until SIGTERM (what each pod runs)."""
    from ordermesh_platform.server import run

    run(load_service(_service_name(service)))


@app.command()
def migrate(
    service: ServiceArg,
    database_url: Annotated[
        str | None, typer.Option(help="defaults to ORDERMESH_DATABASE_URL / the service default")
    ] = None,
) -> None:
    """Apply a service's database migrations and exit."""
    from ordermesh_platform.logs import configure_logging
    from ordermesh_platform.migrations import upgrade_to_head

    spec = load_service(_service_name(service))
    settings = spec.settings_type()
    configure_logging(spec.name, settings.log_level)
    asyncio.run(upgrade_to_head(spec.migrations, database_url or settings.database_url, spec.name))


@app.command()
def relay(service: ServiceArg) -> None:
    """Run only the outbox relay of a service (beside it, with ORDERMESH_RELAY_ENABLED=false)."""
    from ordermesh_messaging.relay import OutboxRelay
    from ordermesh_messaging.settings import RelaySettings
    from ordermesh_platform.db import create_engine
    from ordermesh_platform.logs import configure_logging

    spec = load_service(_service_name(service))
    settings = spec.settings_type()
    if spec.outbox is None or not isinstance(settings, RelaySettings):
        raise typer.BadParameter(f"{service} publishes no events")
    configure_logging(f"{spec.name}-relay", settings.log_level)
    outbox = spec.outbox

    async def run() -> None:
        engine = create_engine(settings.database_url, 2)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(
            OutboxRelay(engine, outbox, f"ordermesh/{spec.name}", settings).run()
        )
        await stop.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await engine.dispose()

    asyncio.run(run())


dlq_app = typer.Typer(help="Dead-letter topics: list and replay.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
KafkaOption = Annotated[
    str, typer.Option(envvar="ORDERMESH_KAFKA_BOOTSTRAP", help="Kafka bootstrap servers")
]
TopicOption = Annotated[
    list[str] | None, typer.Option("--topic", help="DLQ topic(s); default: every one")
]


@dlq_app.command("list")
def dlq_list(kafka: KafkaOption = "127.0.0.1:9092", topic: TopicOption = None) -> None:
    """Show every message in the dead-letter topics, with why it is there."""
    from rich.table import Table

    from ordermesh_messaging.dlq import default_dlq_topics, list_dead_letters

    letters = asyncio.run(list_dead_letters(kafka, topic or default_dlq_topics()))
    columns = ("topic", "partition", "offset", "key", "type", "event id", "reason", "error")
    rows = [
        (x.topic, str(x.partition), str(x.offset), x.key, x.event_type, x.event_id,
         x.reason, x.error[:120])
        for x in letters
    ]  # fmt: skip
    if not sys.stdout.isatty():  # a pipe or a script: one tab-separated line each
        for line in (columns, *rows):
            typer.echo("\t".join(line))
        return
    table = Table(title=f"{len(letters)} dead letter(s)")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


@dlq_app.command("replay")
def dlq_replay(kafka: KafkaOption = "127.0.0.1:9092", topic: TopicOption = None) -> None:
    """Publish dead letters back onto their original topics (each one once)."""
    from ordermesh_messaging.dlq import default_dlq_topics, replay_dead_letters

    letters = asyncio.run(replay_dead_letters(kafka, topic or default_dlq_topics()))
    for x in letters:
        typer.echo(
            f"replayed {x.topic}@{x.partition}:{x.offset} -> {x.original_topic} ({x.event_id})"
        )
    typer.echo(f"{len(letters)} replayed")


@app.command()
def health(
    address: Annotated[str, typer.Argument(help="host:port")],
    service: Annotated[str, typer.Option(help="gRPC service name; empty for the server")] = "",
    timeout: Annotated[float, typer.Option(help="seconds")] = 2.0,
) -> None:
    """Exit 0 when the server (or one of its services) is SERVING."""
    status = asyncio.run(check_health(address, service, timeout))
    typer.echo(status)
    raise typer.Exit(0 if status == "SERVING" else 1)


@app.command()
def up(
    base_port: Annotated[
        int, typer.Option(help="order = N, inventory = N+1, payment = N+2, notification = N+3")
    ] = 50051,
    postgres: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL server URL; creates ordermesh_<service> databases on it "
            "(a database in the URL replaces the ordermesh prefix)"
        ),
    ] = None,
    kafka: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers to use; starts no local broker")
    ] = None,
    no_demo: Annotated[bool, typer.Option("--no-demo", help="seed, but place no orders")] = False,
    state_dir: Annotated[Path, typer.Option(help="SQLite files and logs")] = Path(".ordermesh"),
    ready_timeout: Annotated[float, typer.Option(help="seconds to wait for SERVING")] = 90.0,
    otlp: Annotated[
        str | None,
        typer.Option(
            envvar="OTEL_EXPORTER_OTLP_ENDPOINT",
            help="send traces there (OTLP, e.g. http://127.0.0.1:4317 for Jaeger)",
        ),
    ] = None,
) -> None:
    """Start the whole local mesh, wait until it is SERVING, seed it, and show it live.

    Metrics: each service serves /metrics on N+10 (order) ... N+13 (notification)."""
    config = MeshConfig(
        base_port=base_port, postgres=postgres, kafka=kafka, state_dir=state_dir, otlp_endpoint=otlp
    )
    code = asyncio.run(_up(config, demo=not no_demo, ready_timeout=ready_timeout))
    raise typer.Exit(code)


async def _up(config: MeshConfig, demo: bool, ready_timeout: float) -> int:
    mesh = LocalMesh(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        console.print(f"starting the mesh (logs in {mesh.logs_dir}/)")
        mesh.start()
        ready = asyncio.create_task(mesh.wait_serving(ready_timeout))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({ready, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            ready.cancel()
            return 0
        stopper.cancel()
        ready.result()
        for child in mesh.children:
            console.print(f"{child.name} SERVING on {child.address}")
        count = await seed_catalogue(config.address("inventory"))
        console.print(f"seeded {count} demo products")
        console.print("mesh ready")
        traffic = None
        if demo:
            traffic = DemoTraffic(config.address("order"), config.address("inventory"))
            demo_task = asyncio.create_task(traffic.run(stop))
        await _watch(mesh, stop, traffic)
        if traffic is not None:
            await demo_task
            console.print(f"demo orders: {dict(traffic.outcomes)}")
        return 0
    except MeshFailed as failure:
        console.print(f"[red]the mesh did not start:[/red] {failure}")
        return 1
    finally:
        console.print("stopping the mesh")
        mesh.stop()
        console.print("stopped")


async def _watch(mesh: LocalMesh, stop: asyncio.Event, demo: DemoTraffic | None) -> None:
    """The live table on a terminal; elsewhere (CI, a pipe) a line per change of outcomes."""
    tty = sys.stdout.isatty()
    live = Live(mesh_view(mesh, demo), console=Console(), refresh_per_second=2)
    shown = ""
    with live if tty else contextlib.nullcontext():
        while not stop.is_set():
            await mesh.refresh_health(with_metrics=tty)
            if tty:
                live.update(mesh_view(mesh, demo))
            elif demo is not None and (line := str(dict(demo.outcomes))) != shown:
                print(f"demo orders: {line}", flush=True)
                shown = line
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
