"""The README's examples, run as pasted against a mesh `ordermesh up` started: its
Python programs as files, its grpcurl commands with bash. The mesh listens on free
ports, so the README's default ports are replaced by those, and nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ordermesh_platform.service_names import SERVICE_NAMES
from tests.support.ports import free_port_block
from tests.support.readme import code_blocks

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
README_BASE_PORT = 50051


@dataclass
class UpMesh:
    proc: subprocess.Popen[bytes]
    base_port: int
    home: Path  # the working directory: its .ordermesh is the mesh's state directory
    log: Path

    def with_ports(self, code: str) -> str:
        """The README's code with this mesh's ports instead of the default ones."""
        for i in range(len(SERVICE_NAMES)):
            code = code.replace(f":{README_BASE_PORT + i}", f":{self.base_port + i}")
        return code


def _up(home: Path, *args: str) -> Iterator[UpMesh]:
    base = free_port_block(4)
    home.mkdir(parents=True, exist_ok=True)
    log = home / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "ordermesh"), "up", "--base-port", str(base), "--no-demo", *args],
            cwd=home,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    mesh = UpMesh(proc, base, home, log)
    try:
        deadline = time.monotonic() + 120
        while "mesh ready" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mesh did not come up:\n{log.read_text()}")
            time.sleep(0.2)
        yield mesh
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def plain_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpMesh]:
    yield from _up(tmp_path_factory.mktemp("readme-plain"))


@pytest.fixture(scope="module")
def secure_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpMesh]:
    yield from _up(tmp_path_factory.mktemp("readme-secure"), "--tls", "--auth")


def _program(kind: str) -> str:
    """The README's Python program that opens a ``kind`` channel (insecure or secure)."""
    found = [code for code in code_blocks("python") if f"grpc.aio.{kind}_channel" in code]
    assert len(found) == 1, f"one README program with a {kind} channel, found {len(found)}"
    return found[0]


def _run_file(mesh: UpMesh, name: str, code: str, env: dict[str, str] | None = None) -> str:
    path = mesh.home / name
    path.write_text(mesh.with_ports(code), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, name],
        cwd=mesh.home,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_python_block_of_the_readme_is_one_of_the_programs_run_here() -> None:
    assert sorted(code_blocks("python")) == sorted([_program("insecure"), _program("secure")])


def test_the_readme_python_program_runs_as_a_file_and_prints_stock_and_order(
    plain_mesh: UpMesh,
) -> None:
    printed = _run_file(plain_mesh, "place_order.py", _program("insecure"))
    lines = printed.splitlines()
    assert lines[0].startswith("TEA-SENCHA: ")
    assert lines[0].endswith(" available")
    assert lines[1].startswith("order ")
    assert lines[1].endswith(": ORDER_STATE_CONFIRMED, 17.80 EUR")


def test_the_client_library_example_runs_as_a_file(plain_mesh: UpMesh) -> None:
    [code] = code_blocks("python", REPO / "docs/client.md")
    printed = _run_file(plain_mesh, "client_example.py", code).splitlines()
    assert printed[0].startswith("order ")
    assert printed[0].endswith(": ORDER_STATE_CONFIRMED")
    assert printed[1:] == ["declined: card_declined", "out of stock: KETTLE-GOOSENECK"]


def test_the_readme_grpcurl_examples_run_as_pasted(plain_mesh: UpMesh) -> None:
    blocks = [code for code in code_blocks("sh") if "OrderService/" in code]
    assert len(blocks) == 2  # placing an order, and the rest of its life
    outputs = []
    for code in blocks:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", plain_mesh.with_ports(code)],
            cwd=REPO,  # the README's commands run from the repository's root
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    placed, life = outputs
    assert '"state": "ORDER_STATE_CONFIRMED"' in placed
    assert '"sku": "MUG-STONEWARE"' in life  # GetOrder
    assert '"state": "ORDER_STATE_CONFIRMED"' in life  # WatchOrder followed it to the end
    assert life.count('"orderId"') >= 4  # GetOrder, WatchOrder (2+), ListOrders (2)


def test_dlq_asks_the_broker_of_the_mesh_running_in_the_state_directory(
    plain_mesh: UpMesh,
) -> None:
    result = subprocess.run(
        [str(BIN / "ordermesh"), "dlq", "list"],  # no --kafka: .ordermesh/mesh.json says
        cwd=plain_mesh.home,
        env={k: v for k, v in os.environ.items() if k != "ORDERMESH_KAFKA_BOOTSTRAP"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("topic\tpartition\toffset")


def test_the_readme_mtls_program_lists_the_customers_orders(secure_mesh: UpMesh) -> None:
    token = subprocess.run(
        [str(BIN / "ordermesh"), "token", "c1"],
        cwd=secure_mesh.home,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    printed = _run_file(secure_mesh, "my_orders.py", _program("secure"), {"ORDERMESH_TOKEN": token})
    assert printed.splitlines()[0] == "0 order(s) of c1"


def test_grpcurl_describe_shows_the_comments_written_in_the_protos(plain_mesh: UpMesh) -> None:
    described = subprocess.run(
        [
            str(BIN / "grpcurl"),
            "-plaintext",
            plain_mesh.with_ports("127.0.0.1:50051"),
            "describe",
            "ordermesh.order.v1.PlaceOrderRequest",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    written = (REPO / "protos/ordermesh/order/v1/order.proto").read_text()
    assert "// The customer placing the order" in written
    assert "// The customer placing the order" in described
