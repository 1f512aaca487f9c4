"""grpc.health.v1 follows the service's database."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from ordermesh_cli.registry import load_service
from tests.support.postgres import admin_execute
from tests.support.services import running_service

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _wait_for(stub: health_pb2_grpc.HealthStub, service: str, wanted: int) -> None:
    for _ in range(150):  # bounded: 150 x 0.1 s
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)  # type: ignore[attr-defined]
        if reply.status == wanted:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{service or 'server'} never became {wanted}")


async def test_a_service_is_not_serving_while_its_database_is_unreachable(
    pg_database: str,
) -> None:
    spec = load_service("inventory")
    name = make_url(pg_database).database
    async with (
        running_service(spec, pg_database) as service,
        grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel,
    ):
        stub = health_pb2_grpc.HealthStub(channel)
        full_name = spec.grpc_services[0]
        await _wait_for(stub, "", SERVING)
        await _wait_for(stub, full_name, SERVING)

        # Take the database away: refuse new connections and cut the open ones.
        await admin_execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin_execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        )
        await _wait_for(stub, "", NOT_SERVING)
        await _wait_for(stub, full_name, NOT_SERVING)

        await admin_execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await _wait_for(stub, "", SERVING)
        await _wait_for(stub, full_name, SERVING)
