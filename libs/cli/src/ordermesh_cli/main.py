"""The `ordermesh` command line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ordermesh_cli.failures import Failure, one_line
from ordermesh_cli.gitfiles import tracked_by_git
from ordermesh_cli.ports import (
    check_layout,
    first_taken,
    parse_replicas,
    port_owners,
    taken_message,
)
from ordermesh_cli.preflight import check_dependencies
from ordermesh_cli.registry import add_installed_commands, load_service
from ordermesh_cli.risk import risk_app
from ordermesh_cli.state import MeshState, NoRunningMesh, forget_mesh, running_mesh
from ordermesh_platform.dependencies import DependencyUnavailable, redacted_url
from ordermesh_platform.service_names import SERVICE_NAMES

# The mesh, the demo and gRPC are imported by the commands that use them: `up` answers
# a taken port before loading them, and `--help` stays quick.
if TYPE_CHECKING:
    from ordermesh_cli.demo import DemoTraffic
    from ordermesh_cli.mesh import LocalMesh, MeshConfig


# Help as plain text: paragraphs reflowed to the terminal (up to HELP_WIDTH columns), not
# cut where the docstring's lines end, and no type shown for a flag (Rich's panels show
# `<bool>` on each); it reads the same in a pipe.
HELP_WIDTH = 100
HELP = {"rich_markup_mode": None, "context_settings": {"max_content_width": HELP_WIDTH}}
app = typer.Typer(
    help="ordermesh: an order-processing engine. Run the local mesh, or one service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    **HELP,  # type: ignore[arg-type]
)
# soft_wrap: long lines (a failure naming a port and a path) stay whole in a log.
console = Console(stderr=True, soft_wrap=True)
# How often `up` looks at its children (and restarts the dead); how often, when its
# output is not a terminal, it prints the demo's outcomes.
WATCH_INTERVAL_S = 1.0
PLAIN_EVERY_S = 10.0


def _service_name(name: str) -> str:
    if name not in SERVICE_NAMES:
        raise typer.BadParameter(f"choose one of {', '.join(SERVICE_NAMES)}")
    return name


CERTS_DIR = Path(".ordermesh/certs")  # .ordermesh/ is git-ignored
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
    url = database_url or settings.database_url
    revision = asyncio.run(upgrade_to_head(spec.migrations, url, spec.name))
    typer.echo(f"{spec.name}: migrated {redacted_url(url)} to revision {revision}: done")


@app.command(short_help="Print every service's settings: variable, default, meaning.")
def settings() -> None:
    """Print every ORDERMESH_* setting of every service as Markdown (docs/settings.md is
    this output)."""
    from ordermesh_cli.settings_reference import render

    typer.echo(render(), nl=False)


@app.command(short_help="Run only the outbox relay of a service.")
def relay(service: ServiceArg) -> None:
    """Run only the outbox relay of a service (beside it, with ORDERMESH_RELAY_ENABLED=false)."""
    from ordermesh_messaging.relay import OutboxRelay
    from ordermesh_messaging.settings import RelaySettings
    from ordermesh_platform.db import create_engine
    from ordermesh_platform.logs import configure_logging
    from ordermesh_platform.metrics import serve_metrics
    from ordermesh_platform.telemetry import configure_tracing

    spec = load_service(_service_name(service))
    settings = spec.settings_type()
    if spec.outbox is None or not isinstance(settings, RelaySettings):
        raise typer.BadParameter(f"{service} publishes no events")
    configure_logging(f"{spec.name}-relay", settings.log_level)
    configure_tracing(spec.name)
    serve_metrics(settings.metrics_port, settings.grpc_host)
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


dlq_app = typer.Typer(
    help="Dead-letter topics: list and replay.",
    no_args_is_help=True,
    **HELP,  # type: ignore[arg-type]
)
app.add_typer(dlq_app, name="dlq")
app.add_typer(risk_app, name="risk")
KafkaOption = Annotated[
    str | None,
    typer.Option(
        envvar="ORDERMESH_KAFKA_BOOTSTRAP",
        help="Kafka bootstrap servers; default: the broker of the mesh running in --state-dir",
    ),
]
StateDirOption = Annotated[
    Path, typer.Option(help="state directory of the running `ordermesh up` to read")
]
TopicOption = Annotated[
    list[str] | None, typer.Option("--topic", help="DLQ topic(s); default: every one")
]


@dlq_app.command("list")
def dlq_list(
    kafka: KafkaOption = None,
    topic: TopicOption = None,
    state_dir: StateDirOption = Path(".ordermesh"),
) -> None:
    """Show every message in the dead-letter topics, with why it is there."""
    from rich.table import Table

    from ordermesh_messaging.dlq import default_dlq_topics, list_dead_letters

    bootstrap = _broker(kafka, state_dir)
    letters = asyncio.run(list_dead_letters(bootstrap, topic or default_dlq_topics()))
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


@dlq_app.command("replay", short_help="Publish dead letters back onto their original topics.")
def dlq_replay(
    kafka: KafkaOption = None,
    topic: TopicOption = None,
    state_dir: StateDirOption = Path(".ordermesh"),
) -> None:
    """Publish dead letters back onto their original topics (each one once)."""
    from ordermesh_messaging.dlq import default_dlq_topics, replay_dead_letters

    bootstrap = _broker(kafka, state_dir)
    letters = asyncio.run(replay_dead_letters(bootstrap, topic or default_dlq_topics()))
    for x in letters:
        typer.echo(
            f"replayed {x.topic}@{x.partition}:{x.offset} -> {x.original_topic} ({x.event_id})"
        )
    typer.echo(f"{len(letters)} replayed")


def _broker(kafka: str | None, state_dir: Path) -> str:
    """--kafka, else the broker of the local mesh running with that state directory."""
    if kafka:
        return kafka
    try:
        return running_mesh(state_dir).kafka_bootstrap
    except NoRunningMesh as missing:
        raise Failure(f"{missing}: start one (`make run`), or pass --kafka host:port") from None


@app.command()
def health(
    address: Annotated[str, typer.Argument(help="host:port")],
    service: Annotated[str, typer.Option(help="gRPC service name; empty for the server")] = "",
    timeout: Annotated[float, typer.Option(help="seconds")] = 2.0,
    tls: Annotated[
        bool, typer.Option("--tls", help="mTLS, with the certificate files below")
    ] = False,
    cert: Annotated[
        str, typer.Option(envvar="ORDERMESH_TLS_CERT_FILE", help="client certificate (PEM)")
    ] = "",
    key: Annotated[str, typer.Option(envvar="ORDERMESH_TLS_KEY_FILE", help="its key (PEM)")] = "",
    ca: Annotated[
        str, typer.Option(envvar="ORDERMESH_TLS_CA_FILE", help="CA of the server (PEM)")
    ] = "",
    server_name: Annotated[
        str, typer.Option(help="name to verify the server's certificate against")
    ] = "",
) -> None:
    """Exit 0 when the server (or one of its services) is SERVING.

    With --tls the files default to the service's own (ORDERMESH_TLS_*), so inside a
    pod `ordermesh health --tls 127.0.0.1:50051` works as it is."""
    from ordermesh_cli.health_client import check_health
    from ordermesh_platform.tls import TlsFiles

    files = None
    if tls:
        files = TlsFiles.from_paths(cert, key, ca)
        if files is None:
            raise typer.BadParameter("--tls needs --cert, --key and --ca (or ORDERMESH_TLS_*)")
    status = asyncio.run(check_health(address, service, timeout, files, server_name))
    typer.echo(status)
    raise typer.Exit(0 if status == "SERVING" else 1)


@app.command(short_help="Create a development CA and certificates.")
def certs(
    out: Annotated[
        Path, typer.Option(help="where the CA and certificate folders go (git ignores the default)")
    ] = CERTS_DIR,
    namespace: Annotated[
        str, typer.Option(help="Kubernetes namespace of the in-cluster DNS names")
    ] = "ordermesh",
    force: Annotated[bool, typer.Option("--force", help="replace everything, CA included")] = False,
) -> None:
    """Create a development CA, a certificate per service and one for callers.

    Each folder (order, inventory, payment, notification, caller) holds tls.crt, tls.key
    and ca.crt, the layout of a cert-manager Secret. Service certificates are for server
    and client use, with the names localhost, 127.0.0.1 and ordermesh-<service>[.<ns>
    [.svc[.cluster.local]]]. Existing files are kept unless --force."""
    from ordermesh_platform.devcerts import CALLER, create_dev_certs

    written = create_dev_certs(out, namespace=namespace, services=SERVICE_NAMES, force=force)
    for name in (*SERVICE_NAMES, CALLER):
        state = "created" if out / name in written else "kept"
        typer.echo(f"{state:8} {out / name}/{{tls.crt,tls.key,ca.crt}}")
    typer.echo(f"CA: {out / 'ca.crt'} (its key {out / 'ca.key'} signs them: keep it private)")
    if tracked_by_git(out / "ca.key"):
        typer.echo(
            f"warning: {out} is in a git working tree and not ignored: a commit could "
            f"carry the CA key; add it to .gitignore, or use the default {CERTS_DIR}",
            err=True,
        )


@app.command(short_help="Print a development bearer token.")
def token(
    subject: Annotated[str, typer.Argument(help="the token's sub: a customer id or an operator")],
    admin: Annotated[bool, typer.Option("--admin", help="add the ordermesh:admin scope")] = False,
    key: Annotated[Path, typer.Option(help="development signing key")] = Path(
        ".ordermesh/auth/jwt-signing.key"
    ),
    ttl: Annotated[float, typer.Option(help="seconds the token is valid")] = 3600.0,
    kid: Annotated[
        str, typer.Option(help="the header's kid: the key's id in a JWKS (default: none)")
    ] = "",
) -> None:
    """Print a development bearer token for a mesh started with `ordermesh up --auth`
    (signed with its key, made on first use). Production tokens come from your
    identity provider."""
    from ordermesh_platform.devcerts import ADMIN_SCOPE, ensure_jwt_keys, mint_token

    if not key.is_file():
        key = ensure_jwt_keys(key.parent)[0]
    scopes = [ADMIN_SCOPE] if admin else []
    typer.echo(mint_token(key, subject, scopes, ttl_s=ttl, kid=kid or None))


@app.command(short_help="Start the whole local mesh and show it live.")
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
    state_dir: Annotated[
        Path,
        typer.Option(help="SQLite files, logs, certificates, and mesh.json for `ordermesh dlq`"),
    ] = Path(".ordermesh"),
    ready_timeout: Annotated[float, typer.Option(help="seconds to wait for SERVING")] = 90.0,
    otlp: Annotated[
        str | None,
        typer.Option(
            envvar="OTEL_EXPORTER_OTLP_ENDPOINT",
            help="send traces there (OTLP, e.g. http://127.0.0.1:4317 for Jaeger)",
        ),
    ] = None,
    tls: Annotated[
        bool,
        typer.Option(
            "--tls", help="mTLS on every hop (development certificates in <state-dir>/certs)"
        ),
    ] = False,
    auth: Annotated[
        bool,
        typer.Option(
            "--auth",
            help="callers need a token (`ordermesh token`, key in <state-dir>/auth) "
            "or a service certificate",
        ),
    ] = False,
    replicas: Annotated[
        str,
        typer.Option(
            help="processes per service, e.g. inventory=2,payment=2 (up to 10 each); "
            "callers spread their calls over every replica",
        ),
    ] = "",
    no_restart: Annotated[
        bool,
        typer.Option(
            "--no-restart",
            help="leave a service that dies stopped (by default it is started again, "
            "after 1 s, then twice as long each time it dies within a minute, up to 30 s)",
        ),
    ] = False,
) -> None:
    """Start the whole local mesh, wait until it is SERVING, seed it, and show it live.

    Metrics: each service serves /metrics on N+10 (order) ... N+13 (notification).
    Replica r (1-9) of the service at offset i (order 0 ... notification 3) listens
    on N+100+10i+r, its metrics on N+200+10i+r (inventory's second: N+111, N+211)."""
    try:
        replica_counts = parse_replicas(replicas)
        check_layout(base_port, replica_counts)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    taken = first_taken(port_owners(base_port, replica_counts, broker=kafka is None))
    if taken is not None:
        console.print(f"[red]the mesh did not start:[/red] {taken_message(*taken)}")
        raise typer.Exit(1)
    if kafka is None:
        from ordermesh_cli.broker import tansu_binary

        tansu_binary()  # fails here, before anything starts, when the broker is not installed
    from ordermesh_cli.mesh import MeshConfig

    try:
        config = MeshConfig(
            base_port=base_port,
            postgres=postgres,
            kafka=kafka,
            state_dir=state_dir,
            otlp_endpoint=otlp,
            tls=tls,
            auth=auth,
            replicas=replica_counts,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    code = asyncio.run(
        _up(config, demo=not no_demo, ready_timeout=ready_timeout, restart=not no_restart)
    )
    raise typer.Exit(code)


async def _up(config: MeshConfig, demo: bool, ready_timeout: float, restart: bool = True) -> int:
    from ordermesh_cli import dashboard
    from ordermesh_cli.demo import DemoTraffic, demo_catalogue, demo_orders, seed_catalogue
    from ordermesh_cli.mesh import LocalMesh, MeshFailed

    mesh = LocalMesh(config, restart=restart)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await check_dependencies(config)
    except DependencyUnavailable as failure:
        console.print(f"[red]the mesh did not start:[/red] {failure}", highlight=False)
        return 1
    try:
        console.print(f"starting the mesh (logs in {mesh.logs_dir}/)")
        mesh.start()
        MeshState(os.getpid(), config.base_port, config.kafka_bootstrap).write(config.state_dir)
        ready = asyncio.create_task(mesh.wait_serving(ready_timeout))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({ready, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            ready.cancel()
            return 0
        stopper.cancel()
        ready.result()
        for child in mesh.children:
            console.print(f"{child.label} SERVING on {child.address}")
        console.print(dashboard.broker_text(mesh))
        if config.tls:
            console.print(f"mTLS on: caller certificate in {config.certs_dir / 'caller'}/")
        if config.auth:
            console.print("authentication on: `ordermesh token <customer-id>` prints a token")
        access = config.access()
        # The simulator's log is written in a worker thread: the mesh's watch runs here.
        orders = await asyncio.to_thread(demo_orders, config.state_dir)
        catalogue = demo_catalogue(orders)
        count = await seed_catalogue(config.address("inventory"), access, catalogue)
        console.print(f"seeded {count} demo products")
        console.print("mesh ready")
        traffic = None
        if demo:
            console.print(
                f"demo orders drawn from `ordermesh risk simulate` "
                f"({len(orders.orders)} simulated orders in {config.state_dir / 'demo-orders'}/)"
            )
            traffic = DemoTraffic(
                config.address("order"), config.address("inventory"), orders,
                access=access, catalogue=catalogue,
            )  # fmt: skip
            demo_task = asyncio.create_task(traffic.run(stop))
        await _watch(mesh, stop, traffic)
        if traffic is not None:
            await demo_task
            console.print("\n".join(dashboard.outcome_lines(traffic)))
        return 0
    except MeshFailed as failure:
        console.print(f"[red]the mesh did not start:[/red] {failure}", highlight=False)
        return 1
    finally:
        forget_mesh(config.state_dir)
        console.print("stopping the mesh")
        mesh.stop()
        console.print("stopped")


async def _watch(mesh: LocalMesh, stop: asyncio.Event, demo: DemoTraffic | None) -> None:
    """The live table on a terminal; elsewhere (CI, a pipe) plain lines: what changed in
    the mesh as it happens, the demo's outcomes every PLAIN_EVERY_S when they moved."""
    from rich.live import Live

    from ordermesh_cli.dashboard import mesh_view, outcome_lines

    tty = sys.stdout.isatty()
    live = Live(mesh_view(mesh, demo), console=Console(), refresh_per_second=2)
    healths: dict[str, str] = {}
    shown: list[str] = []
    shown_at = time.monotonic()
    with live if tty else contextlib.nullcontext():
        while not stop.is_set():
            events = mesh.supervise()
            await mesh.refresh_health(with_metrics=tty)
            if tty:
                for line in events:
                    live.console.log(line)
                live.update(mesh_view(mesh, demo))
            else:
                for line in events:
                    print(line, flush=True)
                for child in mesh.children:
                    if healths.get(child.label, "SERVING") != child.health:
                        print(f"{child.label} {child.health}", flush=True)
                    healths[child.label] = child.health
                now = time.monotonic()
                if demo is not None and now - shown_at >= PLAIN_EVERY_S:
                    if (lines := outcome_lines(demo)) != shown:
                        print("\n".join(lines), flush=True)
                        shown = lines
                    shown_at = now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=WATCH_INTERVAL_S)


# Commands of other installed packages (the bench's bench, soak and chaos), last in --help.
add_installed_commands(app)


def main() -> None:
    """The `ordermesh` command: a failure to reach a database, a broker or a service
    ends it with one line saying which and why, not a traceback."""
    # aiokafka logs each failed connection attempt; the line below says it once.
    logging.getLogger("aiokafka").addHandler(logging.NullHandler())
    try:
        app()
    except Exception as error:
        line = one_line(error)
        if line is None:
            raise
        # escape: a message may hold brackets (an extra's name), not markup.
        console.print(f"[red]error:[/red] {escape(line)}", highlight=False)
        raise SystemExit(1) from None
