"""`ordermesh up`: the whole mesh as local processes, on SQLite or one PostgreSQL server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from ordermesh_cli.access import Access
from ordermesh_cli.broker import start_tansu, wait_for_port
from ordermesh_cli.health_client import check_health
from ordermesh_cli.ports import (
    BROKER_PORT_OFFSET,
    check_layout,
    first_taken,
    metrics_port,
    port_owners,
    service_port,
    taken_message,
)
from ordermesh_cli.processes import dies_with_parent, stop_all
from ordermesh_platform.devcerts import (
    CALLER,
    DEV_AUDIENCE,
    DEV_ISSUER,
    create_dev_certs,
    ensure_jwt_keys,
)
from ordermesh_platform.health import instance_health_name
from ordermesh_platform.service_names import SERVICE_NAMES
from ordermesh_platform.targets import grpc_target
from ordermesh_platform.tls import TlsFiles

STOP_TIMEOUT_S = 8.0
CHILD_GRACE_S = 5.0


@dataclass(frozen=True)
class MeshConfig:
    base_port: int = 50051
    postgres: str | None = None
    kafka: str | None = None
    state_dir: Path = Path(".ordermesh")
    log_level: str = "INFO"
    otlp_endpoint: str | None = None
    # Extra ORDERMESH_* settings for every service (tests shorten timeouts with it).
    env: Mapping[str, str] = field(default_factory=dict)
    # mTLS on every hop, with development certificates under <state_dir>/certs.
    tls: bool = False
    # Callers must authenticate: tokens signed by a development key under <state_dir>/auth.
    auth: bool = False
    # Processes per service (1 when not named); callers get every replica's address.
    replicas: Mapping[str, int] = field(default_factory=dict)
    # PostgreSQL connections per service process. A local mesh shares its server with
    # tests and tools: 4 x 5 = 20 of the 100 a default server allows (the services'
    # own default, 10, is sized for a pod). ORDERMESH_DATABASE_POOL_SIZE overrides it.
    pool_size: int = 5

    def __post_init__(self) -> None:
        check_layout(self.base_port, self.replicas)

    @property
    def certs_dir(self) -> Path:
        return self.state_dir / "certs"

    @property
    def auth_dir(self) -> Path:
        return self.state_dir / "auth"

    def service_tls(self, name: str) -> TlsFiles | None:
        """A service's own certificate (``caller`` for callers); None without TLS."""
        return TlsFiles.in_dir(self.certs_dir / name) if self.tls else None

    @property
    def caller_tls(self) -> TlsFiles | None:
        return self.service_tls(CALLER)

    def access(self) -> Access:
        """How a caller (the demo, a test) reaches this mesh."""
        key = ensure_jwt_keys(self.auth_dir)[0] if self.auth else None
        return Access(self.caller_tls, key)

    def replica_count(self, service: str) -> int:
        return self.replicas.get(service, 1)

    def port(self, service: str, replica: int = 0) -> int:
        return service_port(self.base_port, service, replica)

    def metrics_port(self, service: str, replica: int = 0) -> int:
        return metrics_port(self.base_port, service, replica)

    def replica_address(self, service: str, replica: int = 0) -> str:
        return f"127.0.0.1:{self.port(service, replica)}"

    def address(self, service: str) -> str:
        """The gRPC target of every replica of ``service``: ``127.0.0.1:<port>`` for one,
        ``ipv4:127.0.0.1:<port>,...`` for several (ordermesh_platform.targets)."""
        return grpc_target(
            ",".join(self.replica_address(service, r) for r in range(self.replica_count(service)))
        )

    def ports(self) -> list[int]:
        """Every port the mesh listens on (the broker's only when it starts one)."""
        return list(self.port_owners())

    def port_owners(self) -> dict[int, str]:
        """Every port the mesh listens on, with what listens there."""
        return port_owners(self.base_port, self.replicas, broker=self.kafka is None)

    @property
    def broker_port(self) -> int:
        return self.base_port + BROKER_PORT_OFFSET

    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka or f"127.0.0.1:{self.broker_port}"

    def database_url(self, service: str) -> str:
        if self.postgres:
            # A database named in the URL is a prefix (tests use it to stay apart).
            server = make_url(self.postgres)
            url = server.set(database=f"{server.database or 'ordermesh'}_{service}")
            return url.render_as_string(hide_password=False)
        return f"sqlite+aiosqlite:///{(self.state_dir / f'{service}.db').resolve()}"


@dataclass
class Child:
    name: str
    address: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int = 0
    replica: int = 0
    # How many replicas the service runs: a lone one is shown by its service's name.
    of: int = 1
    started: float = field(default_factory=time.monotonic)
    health: str = "STARTING"
    # Supervision (LocalMesh.supervise): restarts so far, the delay before the next one
    # should it die soon, and when a restart is due while it is dead.
    restarts: int = 0
    next_delay_s: float = 0.0
    restart_at: float | None = None
    # Its server answered the mesh's instance name: it is this child, not another program.
    own: bool = False
    # Samples of the service's /metrics, summed over labels except "result".
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name if self.of == 1 else f"{self.name}/{self.replica}"


def scrape_metrics(port: int) -> dict[str, float]:
    """The service's metrics, summed over their labels (``name{result="x"}`` kept apart)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=0.5) as reply:
            body = reply.read().decode()
    except OSError:
        return {}
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            name = sample.name
            if "result" in sample.labels:
                name += f'{{result="{sample.labels["result"]}"}}'
            totals[name] = totals.get(name, 0.0) + sample.value
    return totals


class MeshFailed(RuntimeError):
    pass


# A child that dies after the mesh is up is started again after a delay that doubles
# from RESTART_FIRST_S to RESTART_MAX_S, and starts over once it has run STABLE_S.
RESTART_FIRST_S = 1.0
RESTART_MAX_S = 30.0
STABLE_S = 60.0


class LocalMesh:
    """Starts the broker (unless one is given) and the four services, and stops them all."""

    def __init__(self, config: MeshConfig, restart: bool = True) -> None:
        self.config = config
        self.restart = restart
        self.children: list[Child] = []
        self.broker: subprocess.Popen[bytes] | None = None
        self.logs_dir = config.state_dir / "logs"
        # Answered by this mesh's servers only (ORDERMESH_INSTANCE_ID).
        self.instance_id = uuid.uuid4().hex[:12]

    def service_env(self, service: str, replica: int = 0) -> dict[str, str]:
        c = self.config
        env = dict(os.environ)
        env.setdefault("ORDERMESH_DATABASE_POOL_SIZE", str(c.pool_size))
        env.update(
            ORDERMESH_GRPC_HOST="127.0.0.1",
            ORDERMESH_GRPC_PORT=str(c.port(service, replica)),
            ORDERMESH_DATABASE_URL=c.database_url(service),
            ORDERMESH_KAFKA_BOOTSTRAP=c.kafka_bootstrap,
            ORDERMESH_INVENTORY_ADDR=c.address("inventory"),
            ORDERMESH_PAYMENT_ADDR=c.address("payment"),
            ORDERMESH_SHUTDOWN_GRACE_S=str(CHILD_GRACE_S),
            ORDERMESH_LOG_LEVEL=c.log_level,
            ORDERMESH_METRICS_PORT=str(c.metrics_port(service, replica)),
            ORDERMESH_INSTANCE_ID=self.instance_id,
            OTEL_SERVICE_NAME=f"{service}-service",
        )
        if c.otlp_endpoint:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = c.otlp_endpoint
        tls = c.service_tls(service)
        if tls is not None:
            env.update(tls.env())
        if c.auth:
            env.update(
                ORDERMESH_AUTH_ENABLED="true",
                ORDERMESH_AUTH_JWT_PUBLIC_KEY_FILE=str(ensure_jwt_keys(c.auth_dir)[1]),
                ORDERMESH_AUTH_JWT_AUDIENCE=DEV_AUDIENCE,
                ORDERMESH_AUTH_JWT_ISSUER=DEV_ISSUER,
            )
        env.update(c.env)
        return env

    def prepare_credentials(self) -> None:
        """Development certificates and signing key, made once per state dir."""
        if self.config.tls:
            create_dev_certs(self.config.certs_dir, services=SERVICE_NAMES)
        if self.config.auth:
            ensure_jwt_keys(self.config.auth_dir)

    def check_ports(self) -> None:
        """MeshFailed naming the first port something else holds."""
        taken = first_taken(self.config.port_owners())
        if taken is not None:
            port, owner = taken
            raise MeshFailed(taken_message(port, owner))

    def start(self) -> None:
        self.check_ports()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.prepare_credentials()
        if self.config.kafka is None:
            log = (self.logs_dir / "broker.log").open("ab")
            self.broker = start_tansu(self.config.broker_port, log)
            wait_for_port(self.config.broker_port, timeout_s=15)
            if self.broker.poll() is not None:
                raise MeshFailed(
                    f"the broker exited with {self.broker.returncode}; see {self.logs_dir}"
                    "/broker.log"
                )
        for name in SERVICE_NAMES:
            for replica in range(self.config.replica_count(name)):
                self.start_service(name, replica)

    def start_service(self, name: str, replica: int = 0, /, **env: str) -> Child:
        """Start (or restart) one replica of a service; ``env`` adds settings for this
        start only (ORDERMESH_GRPC_PORT and ORDERMESH_METRICS_PORT among them move it)."""
        suffix = f"-{replica}" if replica else ""
        log_path = self.logs_dir / f"{name}{suffix}.log"
        settings = {**self.service_env(name, replica), **env}
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                dies_with_parent([sys.executable, "-m", "ordermesh_cli", "serve", name]),
                env=settings,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Out of the terminal's process group: Ctrl-C reaches `up` alone, which
                # then stops the services in order and the broker last.
                start_new_session=True,
            )
        child = Child(
            name,
            f"127.0.0.1:{settings['ORDERMESH_GRPC_PORT']}",
            proc,
            log_path,
            int(settings["ORDERMESH_METRICS_PORT"]),
            replica,
            max(self.config.replica_count(name), replica + 1),
        )
        self.children = [c for c in self.children if (c.name, c.replica) != (name, replica)] + [
            child
        ]
        self.children.sort(key=lambda c: (SERVICE_NAMES.index(c.name), c.replica))
        for sibling in self.children:
            if sibling.name == name:
                sibling.of = max(sibling.of, child.of)
        return child

    def child(self, name: str, replica: int = 0) -> Child:
        return next(c for c in self.children if (c.name, c.replica) == (name, replica))

    def stop_service(self, name: str, replica: int = 0) -> None:
        stop_all([self.child(name, replica).proc], STOP_TIMEOUT_S)

    async def refresh_health(self, with_metrics: bool = False) -> None:
        tls = self.config.caller_tls

        async def one(child: Child) -> None:
            if child.proc.poll() is not None:
                child.health = f"EXITED({child.proc.returncode})"
                return
            health = await check_health(child.address, tls=tls)
            if health == "SERVING" and not child.own:
                # Once per child: is it our server that answers, or something else's?
                own = instance_health_name(self.instance_id)
                child.own = await check_health(child.address, own, tls=tls) == "SERVING"
                if not child.own:
                    health = "FOREIGN"
            child.health = health
            if with_metrics:
                child.metrics = await asyncio.to_thread(scrape_metrics, child.metrics_port)

        await asyncio.gather(*(one(c) for c in self.children))

    def supervise(self, now: float | None = None) -> list[str]:
        """Start again each child that died, once its backoff has passed, as a
        supervisor or a kubelet would (unless ``restart`` is off). Returns one line
        per thing done, for a log."""
        if not self.restart:
            return []
        now = time.monotonic() if now is None else now
        done: list[str] = []
        for child in list(self.children):
            code = child.proc.poll()
            if code is None:
                continue
            if child.restart_at is None:
                ran_s = now - child.started
                delay = RESTART_FIRST_S if ran_s >= STABLE_S else child.next_delay_s
                child.restart_at = now + max(delay, RESTART_FIRST_S)
                done.append(
                    f"{child.label} exited with {code} after {ran_s:.0f}s; restart "
                    f"{child.restarts + 1} in {child.restart_at - now:.0f}s"
                )
            elif now >= child.restart_at:
                new = self.start_service(child.name, child.replica)
                new.restarts = child.restarts + 1
                # Should it die again soon, it waits twice as long.
                waited = max(child.next_delay_s, RESTART_FIRST_S)
                new.next_delay_s = min(2 * waited, RESTART_MAX_S)
                done.append(f"{new.label} restarted (pid {new.proc.pid}, restart {new.restarts})")
        return done

    async def wait_serving(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            await self.refresh_health()
            exited = [c for c in self.children if c.health.startswith("EXITED")]
            if exited:
                raise MeshFailed(self._failure(exited[0]))
            foreign = [c for c in self.children if c.health == "FOREIGN"]
            if foreign:
                port = foreign[0].address.rsplit(":", 1)[1]
                raise MeshFailed(
                    f"port {port} ({foreign[0].label}) is answered by another process, "
                    "not this mesh's; pass --base-port"
                )
            if all(c.health == "SERVING" for c in self.children):
                return
            if time.monotonic() > deadline:
                waiting = ", ".join(f"{c.label}={c.health}" for c in self.children)
                raise MeshFailed(f"not all services SERVING after {timeout_s}s: {waiting}")
            await asyncio.sleep(0.2)

    def _failure(self, child: Child) -> str:
        tail = child.log_path.read_text(errors="replace").splitlines()[-15:]
        return f"{child.label} exited with {child.proc.returncode}; last log lines:\n" + "\n".join(
            tail
        )

    def stop(self) -> None:
        """order-service first (its sagas still reach inventory and payment while it
        drains), then the other services, then the broker, so that every relay and
        consumer drains against a live broker."""
        callers = [c.proc for c in self.children if c.name == "order"]
        stop_all(callers, STOP_TIMEOUT_S)
        stop_all([c.proc for c in self.children if c.name != "order"], STOP_TIMEOUT_S)
        if self.broker is not None:
            stop_all([self.broker], 2.0)
