"""A PostgreSQL server of a test's own (initdb in a temporary folder), for tests that do
to a server what must not be done to the shared one: pause it, for instance. PostgreSQL
refuses to run as root, so when the tests run as root it runs as the `postgres` user."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port_block
from tests.support.procs import children_of

RUN_AS = "postgres"


def server_binaries() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<v>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


def why_not_available() -> str | None:
    """None when a server of one's own can be made here, else why not."""
    if server_binaries() is None:
        return "PostgreSQL's server binaries (initdb, pg_ctl) are not installed"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser to start PostgreSQL as another user"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam(RUN_AS)
        except KeyError:
            return f"running as root, and there is no {RUN_AS!r} user to run PostgreSQL as"
    return None


@dataclass
class OwnPostgres:
    port: int
    data: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def processes(self) -> list[int]:
        main = int((self.data / "postmaster.pid").read_text().splitlines()[0])
        return [main, *children_of(main)]

    def pause(self) -> None:
        """Every process of the server stops (SIGSTOP): connections stay open, and
        nothing answers on them, as with a server that hangs."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, signum: signal.Signals) -> None:
        # A child listed here may be gone by the time it is signalled: once the server
        # process runs again it reaps the children that exited (a backend that ended
        # just before the pause). A process that is gone needs no signal.
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", RUN_AS, "--", *command] if os.geteuid() == 0 else command


@contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    binaries = server_binaries()
    assert binaries is not None
    home = Path(tempfile.mkdtemp(prefix="ordermesh-pg-"))
    if os.geteuid() == 0:
        shutil.chown(home, RUN_AS)
    data = home / "data"
    port = free_port_block(1)
    subprocess.run(
        _as_server_user(
            [str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
        ),
        check=True,
        capture_output=True,
    )
    options = (
        f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c max_connections=60 "
        "-c shared_buffers=16MB -c fsync=off"
    )
    ctl = [str(binaries / "pg_ctl"), "-D", str(data)]
    subprocess.run(
        _as_server_user([*ctl, "-o", options, "-l", str(home / "log"), "-w", "start"]),
        check=True,
        capture_output=True,
    )
    server = OwnPostgres(port, data)
    try:
        yield server
    finally:
        server.resume()  # a paused server cannot stop
        subprocess.run(
            _as_server_user([*ctl, "-m", "immediate", "-w", "stop"]), capture_output=True
        )
        shutil.rmtree(home, ignore_errors=True)
