"""A local mesh sizes its services' database pools to share one PostgreSQL."""

from __future__ import annotations

import pytest

from ordermesh_cli.mesh import LocalMesh, MeshConfig


def test_a_local_mesh_gives_each_service_a_small_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORDERMESH_DATABASE_POOL_SIZE", raising=False)
    env = LocalMesh(MeshConfig()).service_env("order")
    assert env["ORDERMESH_DATABASE_POOL_SIZE"] == "5"
    assert (
        LocalMesh(MeshConfig(pool_size=10)).service_env("payment")["ORDERMESH_DATABASE_POOL_SIZE"]
        == "10"
    )


def test_the_environment_and_the_mesh_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERMESH_DATABASE_POOL_SIZE", "7")
    assert LocalMesh(MeshConfig()).service_env("order")["ORDERMESH_DATABASE_POOL_SIZE"] == "7"
    config = MeshConfig(env={"ORDERMESH_DATABASE_POOL_SIZE": "2"})
    assert LocalMesh(config).service_env("order")["ORDERMESH_DATABASE_POOL_SIZE"] == "2"
