"""The gRPC bootstrap every service runs on: health, reflection, error mapping, message
limits, load shedding, mTLS, caller authentication, migrations, and a graceful drain
on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from ordermesh_platform.auth import Authenticator, TokenVerifier
from ordermesh_platform.db import (
    Transactions,
    autovacuum_is_off,
    count_statements,
    create_engine,
)
from ordermesh_platform.dependencies import DependencyUnavailable, redacted_url
from ordermesh_platform.gc_tuning import tune_for_serving
from ordermesh_platform.health import DatabaseHealth, instance_health_name
from ordermesh_platform.interceptors import AuthInterceptor, InFlightLimit, RpcInterceptor
from ordermesh_platform.logs import configure_logging, get_logger
from ordermesh_platform.metrics import serve_metrics
from ordermesh_platform.migrations import upgrade_to_head
from ordermesh_platform.reflection import enable_reflection
from ordermesh_platform.service import Runtime, ServiceSpec
from ordermesh_platform.settings import ServiceSettings
from ordermesh_platform.telemetry import (
    configure_tracing,
    instrument_engine,
    server_interceptors,
    shutdown_tracing,
)
from ordermesh_platform.tls import server_credentials

log = get_logger(__name__)


def server_options(settings: ServiceSettings) -> list[tuple[str, int]]:
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.http2.max_pings_without_data", 0),
        # gRPC shares a port with any process that asks by default; a port in use
        # must fail instead (ordermesh up relies on it to refuse a second mesh).
        ("grpc.so_reuseport", int(settings.grpc_reuse_port)),
    ]
    if settings.max_connection_age_s > 0:
        # Aged connections make clients reconnect and re-resolve, so replicas added
        # since (new pods) get their share of calls; GOAWAY lets calls not yet sent
        # move to another connection without an error (docs/deploy.md).
        options += [
            ("grpc.max_connection_age_ms", round(settings.max_connection_age_s * 1000)),
            (
                "grpc.max_connection_age_grace_ms",
                round(settings.max_connection_age_grace_s * 1000),
            ),
        ]
    return options


def interceptors(spec: ServiceSpec, settings: ServiceSettings) -> list[grpc.aio.ServerInterceptor]:
    """Tracing (outermost), then errors/metrics/shedding, then authentication."""
    limit = None
    if settings.max_in_flight > 0:
        limit = InFlightLimit(spec.name, settings.max_in_flight, settings.shed_retry_after_s)
    chain: list[grpc.aio.ServerInterceptor] = [
        *server_interceptors(),
        RpcInterceptor(spec.name, limit),
    ]
    if settings.auth_enabled:
        chain.append(AuthInterceptor(authenticator(settings), spec.policy))
    return chain


def authenticator(settings: ServiceSettings) -> Authenticator:
    tokens = settings.token_settings()
    verifier = None
    if tokens.key_sources():
        verifier = TokenVerifier(tokens)
    else:
        log.warning(
            "authentication is on without token keys (ORDERMESH_AUTH_JWKS_URL, "
            "ORDERMESH_AUTH_OIDC_ISSUER, ORDERMESH_AUTH_JWKS_FILE or "
            "ORDERMESH_AUTH_JWT_PUBLIC_KEY_FILE): only ordermesh service certificates are accepted"
        )
    if settings.tls_files() is None:
        log.warning(
            "authentication is on without TLS: tokens travel in clear text and no caller "
            "can prove a service identity; set ORDERMESH_TLS_*"
        )
    return Authenticator(verifier)


class RunningService:
    """A started service: its bound port, and how to stop it (tests use this directly)."""

    def __init__(self, spec: ServiceSpec, settings: ServiceSettings) -> None:
        self.spec = spec
        self.settings = settings
        self.port = 0
        self.health_port = 0
        self.metrics_port = 0
        self._stop = asyncio.Event()
        self._stopped = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def run(self, ready: asyncio.Event | None = None) -> None:
        spec, settings = self.spec, self.settings
        if settings.migrate_on_start:
            log.info("applying migrations", database=redacted_url(settings.database_url))
            await upgrade_to_head(spec.migrations, settings.database_url, spec.name)
        chain = interceptors(spec, settings)  # reads the token keys: fails before anything opens
        engine = create_engine(
            settings.database_url, settings.database_pool_size, settings.database_timeout_s
        )
        count_statements(engine, spec.name)
        await _warn_if_never_vacuumed(engine, settings.database_url)
        instrument_engine(engine)
        server = grpc.aio.server(options=server_options(settings), interceptors=chain)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        # Probes that cannot do mTLS ask this plaintext server, which answers health only.
        health_server = None
        if settings.health_port:
            health_server = grpc.aio.server(options=server_options(settings))
            health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        enable_reflection(
            server,
            (*spec.grpc_services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name),
        )
        db_health = DatabaseHealth(
            health_servicer,
            engine,
            spec.grpc_services,
            settings.health_interval_s,
            settings.health_timeout_s,
        )
        runtime = Runtime(
            settings, server, engine, Transactions(engine, settings.database_timeout_s)
        )
        try:
            async with spec.wire(runtime):
                address = f"{settings.grpc_host}:{settings.grpc_port}"
                tls = settings.tls_files()
                if tls is not None:
                    self.port = server.add_secure_port(address, server_credentials(tls))
                else:
                    self.port = server.add_insecure_port(address)
                if health_server is not None:
                    self.health_port = health_server.add_insecure_port(
                        f"{settings.grpc_host}:{settings.health_port}"
                    )
                await db_health.start()
                if settings.instance_id:
                    await health_servicer.set(
                        instance_health_name(settings.instance_id),
                        health_pb2.HealthCheckResponse.SERVING,
                    )
                await server.start()
                if health_server is not None:
                    await health_server.start()
                prober = asyncio.create_task(db_health.run(), name="database-health")
                self.metrics_port = serve_metrics(settings.metrics_port, settings.grpc_host)
                log.info(
                    "serving",
                    address=f"{settings.grpc_host}:{self.port}",
                    metrics_port=self.metrics_port,
                    health_port=self.health_port,
                    tls=tls is not None,
                    auth=settings.auth_enabled,
                    max_in_flight=settings.max_in_flight,
                )
                if ready is not None:
                    ready.set()
                await self._stop.wait()
                # Drain: tell load balancers first, refuse new calls, let in-flight ones finish.
                log.info("draining", grace_s=settings.shutdown_grace_s)
                await health_servicer.enter_graceful_shutdown()
                prober.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await prober
                await server.stop(settings.shutdown_grace_s)
                if health_server is not None:
                    await health_server.stop(None)
                log.info("drained; stopping the workers")
        finally:
            await engine.dispose()
            self._stopped.set()
            log.info("stopped")


async def serve(spec: ServiceSpec, settings: ServiceSettings | None = None) -> None:
    """Run one service until SIGTERM or SIGINT, then drain and return."""
    settings = settings or spec.settings_type()
    configure_logging(spec.name, settings.log_level)
    configure_tracing(spec.name)
    running = RunningService(spec, settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, running.request_stop)
    ready = asyncio.Event()
    # A process of its own: its garbage collector is set once it serves (in-process
    # servers, as in tests, leave their host's alone).
    tuned = asyncio.create_task(_tune_gc_when(ready))
    try:
        await running.run(ready)
    finally:
        tuned.cancel()
        shutdown_tracing()


async def _tune_gc_when(ready: asyncio.Event) -> None:
    await ready.wait()
    tune_for_serving()


def run(spec: ServiceSpec) -> None:
    try:
        asyncio.run(serve(spec))
    except DependencyUnavailable as failure:
        # One line that says which dependency, where and why: a traceback would not.
        log.error("cannot start", error=str(failure))
        raise SystemExit(1) from None


async def _warn_if_never_vacuumed(engine: AsyncEngine, url: str) -> None:
    """Say once, at start, that the database will slow down as it grows. Only a warning:
    a short-lived or test database may run like that on purpose."""
    try:
        off = await autovacuum_is_off(engine)
    except Exception:  # the database may not be up yet: health reports that, not this
        return
    if off:
        log.warning(
            "autovacuum is off on this PostgreSQL server: tables are never analysed nor "
            "vacuumed, so statements slow down as they grow; turn it on, or run "
            "VACUUM (ANALYZE) regularly",
            database=redacted_url(url),
        )
