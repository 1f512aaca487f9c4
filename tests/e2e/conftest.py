from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from ordermesh_cli.mesh import LocalMesh, MeshConfig
from tests.support.mesh_client import MeshClient
from tests.support.ports import free_base
from tests.support.postgres import SERVER_URL, drop_databases_like, unique_name

SAGA_TIMEOUT_S = 20.0
# Short leases and timeouts so recovery and failures show within a test's patience.
TEST_SETTINGS = {
    "ORDERMESH_SAGA_TIMEOUT_S": str(SAGA_TIMEOUT_S),
    "ORDERMESH_LEASE_S": "2",
    "ORDERMESH_RECOVERY_INTERVAL_S": "0.5",
    "ORDERMESH_PSP_TIMEOUT_S": "1",
    "ORDERMESH_HEALTH_INTERVAL_S": "0.5",
    # The local broker holds a consumer's join for half its session timeout: 1 s, not 5.
    "ORDERMESH_CONSUMER_SESSION_TIMEOUT_S": "2",
}


async def start_mesh(
    tmp: Path,
    postgres: str | None,
    settings: dict[str, str] | None = None,
    tls: bool = False,
    auth: bool = False,
    replicas: dict[str, int] | None = None,
    base_port: int | None = None,
) -> AsyncIterator[MeshClient]:
    config = MeshConfig(
        base_port=base_port or 20000,
        postgres=postgres,
        state_dir=tmp,
        env={**TEST_SETTINGS, **(settings or {})},
        tls=tls,
        auth=auth,
        replicas=replicas or {},
    )
    if base_port is None:  # every port of this mesh free, replicas' included
        config = replace(
            config, base_port=free_base(lambda b: replace(config, base_port=b).ports())
        )
    mesh = LocalMesh(config)
    mesh.start()
    client = MeshClient(mesh, SAGA_TIMEOUT_S)
    try:
        await mesh.wait_serving(90)
        yield client
    finally:
        await client.close()
        mesh.stop()


@pytest.fixture(scope="module")
async def pg_mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshClient]:
    """The four services and a broker as processes, on the real PostgreSQL."""
    prefix = unique_name("omflow")
    async for client in start_mesh(tmp_path_factory.mktemp("mesh"), f"{SERVER_URL}/{prefix}"):
        yield client
    await drop_databases_like(prefix)


@pytest.fixture(scope="module")
async def sqlite_mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshClient]:
    async for client in start_mesh(tmp_path_factory.mktemp("mesh"), None):
        yield client
