"""What a running `ordermesh up` leaves in its state directory for other commands of
the same machine: where its broker listens (`ordermesh dlq` reads it)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_FILE = "mesh.json"


@dataclass(frozen=True)
class MeshState:
    pid: int  # of the `ordermesh up` process
    base_port: int
    kafka_bootstrap: str

    def write(self, state_dir: Path) -> Path:
        path = state_dir / STATE_FILE
        state_dir.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        temporary.replace(path)  # a reader never sees half a file
        return path


class NoRunningMesh(LookupError):
    pass


def running_mesh(state_dir: Path) -> MeshState:
    """The mesh `ordermesh up --state-dir <state_dir>` runs now; NoRunningMesh when none
    does (never started there, stopped, or killed without cleaning up)."""
    path = state_dir / STATE_FILE
    try:
        state = MeshState(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise NoRunningMesh(f"no local mesh has run with the state directory {state_dir}") from None
    except (ValueError, TypeError) as error:
        raise NoRunningMesh(f"{path} is not a mesh state file: {error}") from None
    if not _alive(state.pid):
        raise NoRunningMesh(f"the local mesh of {state_dir} (pid {state.pid}) is not running")
    return state


def forget_mesh(state_dir: Path) -> None:
    (state_dir / STATE_FILE).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
