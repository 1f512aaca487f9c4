"""`ordermesh up` runs the whole mesh as separate processes, and SIGTERM takes it all down."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ordermesh_cli.health_client import check_health
from ordermesh_cli.registry import load_service
from ordermesh_platform.service_names import SERVICE_NAMES
from tests.support.ports import free_port_block
from tests.support.postgres import SERVER_URL, drop_databases_like, unique_name
from tests.support.procs import children_of, is_alive

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent


class Mesh:
    def __init__(self, proc: subprocess.Popen[bytes], base_port: int, log: Path) -> None:
        self.proc, self.base_port, self.log = proc, base_port, log

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.base_port + SERVICE_NAMES.index(service)}"

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while "mesh ready" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mesh did not come up:\n{self.log.read_text()}")
            time.sleep(0.2)


def _start(tmp_path: Path, *args: str) -> Iterator[Mesh]:
    base = free_port_block(4)
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(BIN / "ordermesh"),
                "up",
                "--base-port",
                str(base),
                "--state-dir",
                str(tmp_path / "state"),
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    mesh = Mesh(proc, base, log)
    try:
        mesh.wait_ready()
        yield mesh
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def postgres_mesh(tmp_path: Path) -> Iterator[Mesh]:
    prefix = unique_name("ome2e")
    yield from _start(tmp_path, "--no-demo", "--postgres", f"{SERVER_URL}/{prefix}")
    asyncio.run(drop_databases_like(prefix))


@pytest.fixture
def sqlite_mesh(tmp_path: Path) -> Iterator[Mesh]:
    yield from _start(tmp_path)


def _assert_all_serving(mesh: Mesh) -> None:
    async def statuses() -> dict[str, str]:
        result = {}
        for name in SERVICE_NAMES:
            result[name] = await check_health(mesh.address(name))
            full = load_service(name).grpc_services[0]
            result[full] = await check_health(mesh.address(name), full)
        return result

    assert set(asyncio.run(statuses()).values()) == {"SERVING"}


def _assert_sigterm_stops_everything(mesh: Mesh) -> None:
    children = children_of(mesh.proc.pid)
    assert len(children) == 5, children  # four services and the broker
    start = time.monotonic()
    mesh.proc.send_signal(signal.SIGTERM)
    assert mesh.proc.wait(timeout=15) == 0
    while any(is_alive(pid) for pid in children):
        assert time.monotonic() - start < 10, "a child outlived SIGTERM by 10 s"
        time.sleep(0.05)


def test_up_on_postgres_serves_lists_and_stops_on_sigterm(postgres_mesh: Mesh) -> None:
    _assert_all_serving(postgres_mesh)
    listed = subprocess.run(
        [str(BIN / "grpcurl"), "-plaintext", postgres_mesh.address("order"), "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert "ordermesh.order.v1.OrderService" in listed
    assert "grpc.health.v1.Health" in listed
    _assert_sigterm_stops_everything(postgres_mesh)


def test_up_on_sqlite_seeds_the_catalogue_and_shows_demo_orders(sqlite_mesh: Mesh) -> None:
    _assert_all_serving(sqlite_mesh)
    stock = subprocess.run(
        [
            str(BIN / "grpcurl"),
            "-plaintext",
            "-d",
            '{"skus": ["TEA-SENCHA"]}',
            sqlite_mesh.address("inventory"),
            "ordermesh.inventory.v1.InventoryService/GetStock",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert '"availa' in stock
    deadline = time.monotonic() + 60
    while "CONFIRMED" not in sqlite_mesh.log.read_text():  # the demo's orders flow
        assert time.monotonic() < deadline, sqlite_mesh.log.read_text()
        time.sleep(0.2)
    # They are the risk simulator's, on a catalogue that holds its products too.
    assert "demo orders drawn from `ordermesh risk simulate`" in sqlite_mesh.log.read_text()
    assert (sqlite_mesh.log.parent / "state" / "demo-orders" / "events.jsonl").exists()
    assert os.path.exists(sqlite_mesh.log.parent / "state" / "inventory.db")
    _assert_sigterm_stops_everything(sqlite_mesh)
