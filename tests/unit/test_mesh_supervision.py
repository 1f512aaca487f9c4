"""`ordermesh up` looking after its children: ports refused when taken, a dead child
started again with backoff, the services stopped before the broker, and plain output
for a pipe."""

from __future__ import annotations

import socket
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ordermesh_cli import mesh as mesh_module
from ordermesh_cli.dashboard import outcome_lines
from ordermesh_cli.demo import DemoTraffic
from ordermesh_cli.mesh import Child, LocalMesh, MeshConfig, MeshFailed
from ordermesh_cli.ports import first_taken, in_use
from ordermesh_cli.simulated_orders import SimulatedOrders


class FakeProcess:
    """What LocalMesh reads of a child process: its pid and whether it has exited."""

    def __init__(self, pid: int, returncode: int | None = None) -> None:
        self.pid, self.returncode = pid, returncode

    def poll(self) -> int | None:
        return self.returncode


def test_a_port_something_listens_on_is_in_use_and_named() -> None:
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        free = spare.getsockname()[1]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        assert in_use(taken)
        assert not in_use(free)
        assert first_taken({free: "order", taken: "payment"}) == (taken, "payment")
    assert not in_use(taken)
    assert first_taken({free: "order"}) is None


def test_up_refuses_a_taken_port_before_starting_anything(tmp_path: Path) -> None:
    config = MeshConfig(base_port=_free_base(), state_dir=tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", config.port("payment")))
        holder.listen()
        mesh = LocalMesh(config)
        with pytest.raises(MeshFailed) as failed:
            mesh.start()
    assert str(failed.value) == (
        f"port {config.port('payment')} (payment) is in use by another process; pass --base-port"
    )
    assert mesh.children == []
    assert mesh.broker is None


def test_port_owners_name_replicas_metrics_and_the_broker() -> None:
    owners = MeshConfig(base_port=50051, replicas={"inventory": 2}).port_owners()
    assert owners[50052] == "inventory/0"
    assert owners[50162] == "inventory/1"
    assert owners[50262] == "inventory/1 metrics"
    assert owners[50061] == "order metrics"
    assert owners[50091] == "broker"
    assert 50091 not in MeshConfig(kafka="k:9092").port_owners()


def _free_base() -> int:
    from tests.support.ports import free_base

    return free_base(lambda b: MeshConfig(base_port=b).ports())


@pytest.fixture
def supervised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[LocalMesh, list[Any]]:
    """A mesh whose start_service records the start instead of running a process."""
    mesh = LocalMesh(MeshConfig(state_dir=tmp_path))
    started: list[Any] = []

    def start_service(name: str, replica: int = 0, **env: str) -> Child:
        child = Child(name, "127.0.0.1:1", FakeProcess(100 + len(started)), tmp_path / "x.log")  # type: ignore[arg-type]
        mesh.children = [c for c in mesh.children if c.name != name] + [child]
        started.append((name, replica))
        return child

    monkeypatch.setattr(mesh, "start_service", start_service)
    mesh.children = [
        Child("inventory", "127.0.0.1:1", FakeProcess(1), tmp_path / "x.log", started=0.0)  # type: ignore[arg-type]
    ]
    return mesh, started


def test_a_dead_child_restarts_after_a_backoff_that_doubles_while_it_keeps_dying(
    supervised: tuple[LocalMesh, list[Any]],
) -> None:
    mesh, started = supervised
    assert mesh.supervise(now=1.0) == []  # alive: nothing to do
    delays = []
    now = 10.0
    for restart in range(1, 8):
        mesh.children[0].proc.returncode = -9
        (line,) = mesh.supervise(now=now)
        assert line.startswith("inventory exited with -9")
        due = mesh.children[0].restart_at
        assert due is not None
        delays.append(due - now)
        assert mesh.supervise(now=due - 0.01) == []  # not yet
        (line,) = mesh.supervise(now=due)
        assert line.endswith(f"restart {restart})")
        assert mesh.children[0].restarts == restart
        now = due + 1.0  # dies again a second after its start
        mesh.children[0].started = due
    assert started == [("inventory", 0)] * 7
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_a_child_that_ran_a_while_restarts_after_the_first_delay_again(
    supervised: tuple[LocalMesh, list[Any]],
) -> None:
    mesh, _ = supervised
    child = mesh.children[0]
    child.next_delay_s = 30.0  # it had been dying often
    child.started = 0.0
    child.proc.returncode = 1
    mesh.supervise(now=mesh_module.STABLE_S + 5)
    assert child.restart_at == mesh_module.STABLE_S + 5 + mesh_module.RESTART_FIRST_S


def test_no_restart_leaves_a_dead_child_dead(supervised: tuple[LocalMesh, list[Any]]) -> None:
    mesh, started = supervised
    mesh.restart = False
    mesh.children[0].proc.returncode = -9
    assert mesh.supervise(now=100.0) == []
    assert mesh.supervise(now=1000.0) == []
    assert started == []


def test_stop_drains_order_service_then_the_others_then_the_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh = LocalMesh(MeshConfig(state_dir=tmp_path, replicas={"order": 2}))
    procs = {label: FakeProcess(n) for n, label in enumerate(("o0", "o1", "inv", "pay", "b"))}
    for label, name in (("o0", "order"), ("o1", "order"), ("inv", "inventory"), ("pay", "payment")):
        mesh.children.append(Child(name, "", procs[label], tmp_path / "x"))  # type: ignore[arg-type]
    mesh.broker = procs["b"]  # type: ignore[assignment]
    stages: list[list[str]] = []
    names = {id(p): label for label, p in procs.items()}

    def stop_all(group: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
        stages.append([names[id(p)] for p in group])

    monkeypatch.setattr(mesh_module, "stop_all", stop_all)
    mesh.stop()
    assert stages == [["o0", "o1"], ["inv", "pay"], ["b"]]


def test_piped_outcomes_are_plain_lines_that_say_how_each_outcome_was_learnt() -> None:
    demo = DemoTraffic("127.0.0.1:1", "127.0.0.1:2", SimulatedOrders(()))
    demo.outcomes = Counter(
        {
            "waited: FAILED_PRECONDITION PAYMENT_DECLINED": 3,
            "background: REJECTED (PAYMENT_DECLINED)": 2,
            "waited: CONFIRMED": 40,
        }
    )
    lines = outcome_lines(demo)
    assert lines[0] == "demo orders: 45"
    assert all(len(line) < 80 for line in lines)
    assert "{" not in "".join(lines)
    assert any(line.strip().endswith("background: REJECTED (PAYMENT_DECLINED)") for line in lines)
