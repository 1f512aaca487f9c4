"""A command that cannot reach PostgreSQL or Kafka ends with one line naming the
dependency, where it was looked for (no password) and why; never a traceback. Nothing
listens on port 1 of this machine, so those connections are refused at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ordermesh_cli.mesh import MeshConfig
from ordermesh_cli.state import MeshState
from tests.support.ports import free_base

ORDERMESH = [sys.executable, "-m", "ordermesh_cli"]


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ORDERMESH, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "80"},  # a narrow terminal must not wrap the line
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stdout + result.stderr
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    "command",
    [
        ["migrate", "order", "--database-url", "postgresql://shop:s3cret@127.0.0.1:1/shop"],
        ["up", "--postgres", "postgresql://shop:s3cret@127.0.0.1:1"],
        ["bench", "--postgres", "postgresql://shop:s3cret@127.0.0.1:1"],
    ],
    ids=lambda c: c[0],
)
def test_an_unreachable_postgresql_is_one_line_with_its_url_redacted(
    command: list[str], tmp_path: Path
) -> None:
    if command[0] == "up":
        command = [*command, *_own_ports_and_state(tmp_path)]
    line = _one_error_line(_run(*command))
    assert "PostgreSQL at postgresql://shop:***@127.0.0.1:1" in line
    assert "connection refused" in line
    assert "s3cret" not in line
    if command[0] != "bench":  # bench names no service: it checks the server
        assert "order: " in line
    assert not (tmp_path / "state" / "logs").exists()  # up started nothing


def test_up_with_an_unreachable_kafka_is_one_line_naming_it(tmp_path: Path) -> None:
    line = _one_error_line(_run("up", "--kafka", "127.0.0.1:1", *_own_ports_and_state(tmp_path)))
    assert "Kafka at 127.0.0.1:1: no broker answered" in line


def test_migrate_says_which_database_it_migrated_and_that_it_is_done(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/order.db"
    result = _run("migrate", "order", "--database-url", url)
    assert result.returncode == 0, result.stderr
    assert f"order: migrated {url} to revision " in result.stdout
    assert result.stdout.rstrip().endswith(": done")


def test_dlq_without_a_running_mesh_says_so_in_one_line(tmp_path: Path) -> None:
    line = _one_error_line(_run("dlq", "list", "--state-dir", str(tmp_path)))
    assert f"no local mesh has run with the state directory {tmp_path}" in line
    assert "--kafka" in line


def test_dlq_reads_the_broker_of_the_running_mesh_from_its_state_directory(
    tmp_path: Path,
) -> None:
    # A live pid (this test's) and a broker address nobody listens on: the error names
    # the address read from the state file, so that is where dlq went.
    MeshState(os.getpid(), 47051, "127.0.0.1:1").write(tmp_path)
    line = _one_error_line(_run("dlq", "list", "--state-dir", str(tmp_path)))
    assert "Kafka at 127.0.0.1:1: no broker answered" in line


def test_dlq_ignores_the_state_of_a_mesh_that_is_gone(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    MeshState(gone.pid, 47051, "127.0.0.1:1").write(tmp_path)
    line = _one_error_line(_run("dlq", "replay", "--state-dir", str(tmp_path)))
    assert f"(pid {gone.pid}) is not running" in line


def _own_ports_and_state(tmp_path: Path) -> list[str]:
    """Free ports: a mesh on the default ones (`make run`) may be running beside."""
    base = free_base(lambda b: MeshConfig(base_port=b).ports())
    return ["--base-port", str(base), "--state-dir", str(tmp_path / "state")]
