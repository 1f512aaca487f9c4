"""The fuzz suites' harness.

How it runs: the services are real (``running_service``: gRPC server, migrations, a
PostgreSQL database of their own) and run on one event loop in a background thread,
started once per test module. The hypothesis tests are plain synchronous ``@given``
functions that call them through blocking ``grpc.Channel`` objects, one per service,
reused for every example. pytest-asyncio's event loop is not involved, so each
example is one blocking call and its answer: simple and deterministic. The database
checks run on the services' loop too (``Mesh.run``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import asyncpg
import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, settings

from ordermesh_cli.registry import load_service
from ordermesh_platform.money import CURRENCIES, MAX_AMOUNT_MINOR
from ordermesh_platform.server import RunningService
from tests.support.postgres import SERVER_URL, database_url, drop_database, unique_name
from tests.support.services import running_service

T = TypeVar("T")

# Every status a caller may be answered with. UNKNOWN and INTERNAL are bugs.
ALLOWED_CODES = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)
CALL_TIMEOUT_S = 10.0
MESSAGE_LIMIT_BYTES = 4 * 1024 * 1024  # ORDERMESH_MAX_MESSAGE_BYTES, the default

# The hypothesis settings of every fuzz test: 200 examples per RPC. No example
# database: a failure prints the blob that reproduces it (@reproduce_failure). The
# checks are methods of suite.ServiceContract, which pytest instantiates once per RPC;
# the instances hold no state, so calls from different ones are the same test.
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.differing_executors,
    ],
    database=None,
    print_blob=True,
)

# Constants the SQL checks name (fixed values, never input: safe to interpolate).
SQL_CONSTANTS = {
    "currencies": "ARRAY[" + ",".join(f"'{code}'" for code in sorted(CURRENCIES)) + "]",
    "max_amount": str(MAX_AMOUNT_MINOR),
    "sku": "'^[A-Za-z0-9._-]{1,64}$'",
}


@dataclass(frozen=True)
class Rpc:
    """One RPC of one service, as its descriptor describes it."""

    service: str  # the ordermesh service hosting it: "order", "inventory", ...
    method: MethodDescriptor

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def request_type(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.input_type)

    @property
    def response_type(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.output_type)

    def __str__(self) -> str:
        return self.name


def rpcs_of(service: str, descriptor: ServiceDescriptor) -> list[Rpc]:
    return [Rpc(service, method) for method in descriptor.methods]


def _code(error: grpc.RpcError) -> grpc.StatusCode:
    return cast(grpc.Call, error).code()


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _item_bug(reply: Message) -> grpc.StatusCode | None:
    """A batch answer's first item status that no caller may be answered with (UNKNOWN,
    INTERNAL): an item's status counts as an answer of its own."""
    for result in getattr(reply, "results", ()):
        code = _CODES.get(result.status.code, grpc.StatusCode.UNKNOWN)
        if code not in ALLOWED_CODES:
            return code
    return None


class Mesh:
    """Services on one background event loop, blocking channels to each of them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="fuzz-services", daemon=True
        )
        self._thread.start()
        self._stack = contextlib.AsyncExitStack()
        self.services: dict[str, RunningService] = {}
        self.databases: dict[str, str] = {}
        self.channels: dict[str, grpc.Channel] = {}

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        """Run a coroutine on the services' loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self, service: str, **settings: object) -> RunningService:
        """Start a service on a fresh PostgreSQL database; it stops with the mesh."""
        name = unique_name(f"omfuzz_{service}")
        self.databases[service] = name
        # Connection aging off: its GOAWAY can land while a 4 MiB body is still being
        # sent, and that call then ends UNAVAILABLE (retryable) instead of the
        # RESOURCE_EXHAUSTED the oversize check asserts. Aging has its own e2e test.
        settings.setdefault("max_connection_age_s", 0.0)
        context = running_service(load_service(service), database_url(name), **settings)
        running = self.run(self._stack.enter_async_context(context))
        self.services[service] = running
        self.channels[service] = grpc.insecure_channel(f"127.0.0.1:{running.port}")
        return running

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.services[service].port}"

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()
        try:
            self.run(self._stack.aclose())
        finally:
            for name in self.databases.values():
                self.run(_drop(name))
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=30)
            self.loop.close()

    # -- calls -----------------------------------------------------------------------

    def call(
        self, rpc: Rpc, request: Message, timeout: float = CALL_TIMEOUT_S
    ) -> tuple[grpc.StatusCode, list[Message]]:
        """The status of one call and the replies it got (a stream may have several)."""
        channel = self.channels[rpc.service]
        serialize: Callable[[Message], bytes] = _serialize
        try:
            if rpc.method.server_streaming:
                stream = channel.unary_stream(
                    rpc.path,
                    request_serializer=serialize,
                    response_deserializer=rpc.response_type.FromString,
                )
                return grpc.StatusCode.OK, list(stream(request, timeout=timeout))
            unary = channel.unary_unary(
                rpc.path,
                request_serializer=serialize,
                response_deserializer=rpc.response_type.FromString,
            )
            reply = unary(request, timeout=timeout)
            return _item_bug(reply) or grpc.StatusCode.OK, [reply]
        except grpc.RpcError as error:
            return _code(error), []

    def call_raw(self, rpc: Rpc, data: bytes, timeout: float = CALL_TIMEOUT_S) -> grpc.StatusCode:
        """Send bytes as they are, with no serializer, as a broken or hostile client would."""
        channel = self.channels[rpc.service]
        try:
            if rpc.method.server_streaming:
                stream = channel.unary_stream(rpc.path, _raw, _raw)
                list(stream(data, timeout=timeout))
            else:
                channel.unary_unary(rpc.path, _raw, _raw)(data, timeout=timeout)
        except grpc.RpcError as error:
            return _code(error)
        return grpc.StatusCode.OK

    # -- checks ----------------------------------------------------------------------

    def assert_serving(self, within_s: float = 10.0) -> None:
        """grpc.health.v1 says SERVING for the server and for each hosted service. A
        database probe that timed out while the machine was saturated may say
        NOT_SERVING for a moment, so it has ``within_s`` to say SERVING again; a crashed
        or stuck service never does."""
        deadline = time.monotonic() + within_s
        for service, running in self.services.items():
            health = health_pb2_grpc.HealthStub(self.channels[service])
            for name in ("", *running.spec.grpc_services):
                while True:
                    request = health_pb2.HealthCheckRequest(service=name)
                    reply = health.Check(request, timeout=5)  # type: ignore[attr-defined]
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                    assert time.monotonic() < deadline, f"{service} ({name!r}) is not SERVING"
                    time.sleep(0.1)

    def fetch(self, service: str, sql: str, *args: object) -> list[asyncpg.Record]:
        """Rows of a query run straight on the service's database."""

        async def query() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(f"{SERVER_URL}/{self.databases[service]}")
            try:
                return await conn.fetch(sql, *args)
            finally:
                await conn.close()

        return self.run(query())

    def assert_no_rows(self, service: str, checks: Mapping[str, str]) -> None:
        """Each check is a query for the rows that break a rule: every one must find none.
        The queries may name {currencies} (the ISO 4217 codes, as an SQL array),
        {max_amount} (MAX_AMOUNT_MINOR) and {sku} (the SKU pattern)."""
        broken: dict[str, list[dict[str, object]]] = {}
        for rule, sql in checks.items():
            rows = self.fetch(service, sql.format(**SQL_CONSTANTS))
            if rows:
                broken[rule] = [dict(row) for row in rows[:5]]
        assert not broken, f"invalid data in the {service} database: {broken}"

    def count(self, service: str, table: str) -> int:
        rows = self.fetch(service, f"SELECT count(*) AS n FROM {table}")
        return int(rows[0]["n"])


async def _drop(name: str) -> None:
    """Drop a database, again if another suite's chaos cut the admin connection."""
    for attempt in range(3):
        try:
            await drop_database(name)
            return
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if attempt == 2:
                raise
            await asyncio.sleep(1)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _raw(data: bytes) -> bytes:
    return data


def assert_allowed(rpc: Rpc, code: grpc.StatusCode, request: object) -> None:
    event(code.name)  # the spread of answers: pytest --hypothesis-show-statistics
    assert code in ALLOWED_CODES, f"{rpc.name} answered {code.name} for {_short(request)}"


def _short(value: object, limit: int = 2000) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def rpc_ids(rpcs: Iterable[Rpc]) -> list[str]:
    return [rpc.name for rpc in rpcs]
