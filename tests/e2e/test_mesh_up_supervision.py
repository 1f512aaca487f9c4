"""`ordermesh up` as a user runs it: it refuses ports another program or another mesh
holds, restarts a child that dies, and on Ctrl-C stops the services before the
broker. Its output goes to a file, as through `make run | tee log`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ordermesh_cli.health_client import check_health
from ordermesh_cli.mesh import MeshConfig
from tests.support.ports import free_base
from tests.support.procs import children_of, is_alive

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent


def base_port() -> int:
    return free_base(lambda b: MeshConfig(base_port=b).ports())


def up_command(base: int, state: Path, *args: str) -> list[str]:
    return [
        str(BIN / "ordermesh"),
        "up",
        "--base-port",
        str(base),
        "--state-dir",
        str(state),
        "--no-demo",
        *args,
    ]


class Up:
    """A running `ordermesh up`, in its own process group as a shell runs it."""

    def __init__(self, base: int, state: Path, log: Path) -> None:
        self.base, self.state, self.log = base, state, log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                up_command(base, state),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.output():
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, f"no {text!r} in:\n{self.output()}"
            time.sleep(0.2)

    def child_pid(self, service: str) -> int:
        for pid in children_of(self.proc.pid):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"serve" in argv and service.encode() in argv:
                return pid
        raise AssertionError(f"no {service} child of {self.proc.pid}")

    def ctrl_c(self) -> int:
        """SIGINT to the whole process group, as a terminal's Ctrl-C sends it."""
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout=60)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def running_up(tmp_path: Path) -> Iterator[Up]:
    up = Up(base_port(), tmp_path / "state", tmp_path / "up.log")
    try:
        up.wait_for("mesh ready")
        yield up
    finally:
        up.close()


def test_up_refuses_a_port_another_program_holds_naming_it(tmp_path: Path) -> None:
    base = base_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", base + 1))
        holder.listen()
        done = subprocess.run(
            up_command(base, tmp_path / "state"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert f"port {base + 1} (inventory) is in use by another process; pass --base-port" in output
    assert "Traceback" not in output
    assert not (tmp_path / "state" / "logs" / "inventory.log").exists()  # nothing started


def test_a_second_mesh_on_the_same_ports_is_refused_and_the_first_keeps_serving(
    running_up: Up, tmp_path: Path
) -> None:
    other = tmp_path / "other-mesh"
    done = subprocess.run(
        up_command(running_up.base, other),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert f"port {running_up.base} (order) is in use by another process" in output
    assert "mesh ready" not in output
    assert "Traceback" not in output
    assert not (other / "logs" / "order.log").exists()
    # The first mesh is untouched.
    for offset in range(4):
        status = asyncio.run(check_health(f"127.0.0.1:{running_up.base + offset}"))
        assert status == "SERVING", offset
    assert running_up.proc.poll() is None


def test_a_killed_child_is_restarted_and_ctrl_c_stops_the_broker_last(running_up: Up) -> None:
    killed = running_up.child_pid("inventory")
    os.kill(killed, signal.SIGKILL)
    running_up.wait_for("inventory exited with -9")
    running_up.wait_for("inventory restarted (pid ")
    restarted = running_up.child_pid("inventory")
    assert restarted != killed
    address = f"127.0.0.1:{running_up.base + 1}"
    deadline = time.monotonic() + 60
    while asyncio.run(check_health(address)) != "SERVING":
        assert is_alive(restarted), running_up.output()
        assert time.monotonic() < deadline, running_up.output()
        time.sleep(0.2)

    children = children_of(running_up.proc.pid)
    assert len(children) == 5, children  # four services and the broker
    assert running_up.ctrl_c() == 0
    assert not [pid for pid in children if is_alive(pid)]
    # The services drained while the broker was still up: no relay or consumer lost it.
    for log in (running_up.state / "logs").glob("*.log"):
        assert "Unable connect to node" not in log.read_text(errors="replace"), log.name
