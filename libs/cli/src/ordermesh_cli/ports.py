"""Whether the ports a local mesh needs are free, asked before anything starts."""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping


def in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when another socket listens on (or is bound to) ``host:port``. The probe
    binds the way the services do (SO_REUSEADDR, so connections left in TIME_WAIT by
    an earlier run do not count) and never with SO_REUSEPORT, which would share a
    port with another server instead of noticing it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def first_taken(owners: Mapping[int, str]) -> tuple[int, str] | None:
    """The first port (and what it is for) that something else holds, or None."""
    for port, owner in sorted(owners.items()):
        if in_use(port):
            return port, owner
    return None
