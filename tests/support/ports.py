"""Free loopback ports for servers the tests start."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable, Iterable

LOW, HIGH = 20000, 32000  # below the kernel's ephemeral range (32768-60999)


def _slice(low: int | None, high: int | None) -> tuple[int, int]:
    """The range this test process draws from. Under pytest-xdist each worker has its
    own slice, so two workers never take the same free port between check and bind."""
    if low is not None and high is not None:
        return low, high
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    width = (HIGH - LOW) // max(1, count)
    return LOW + worker * width, LOW + (worker + 1) * width


def is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(tries: int = 200) -> int:
    """One free port of this process's slice (a broker, a mail server): never the one
    another worker is about to bind, as "the first free port from N" could be."""
    low, high = _slice(None, None)
    for _ in range(tries):
        port = random.randrange(low, high)
        if is_free(port):
            return port
    raise RuntimeError("no free loopback port found")


def free_port_block(
    size: int, low: int | None = None, high: int | None = None, tries: int = 200
) -> int:
    """First port of ``size`` consecutive free ports, with the metrics ports (+10...)
    and the broker's (+40) that `ordermesh up` puts beside them. Below the kernel's
    ephemeral range (32768-60999), so no client socket takes one between the check
    and the bind."""
    low, high = _slice(low, high)
    for _ in range(tries):
        base = random.randrange(low, high - 64)
        wanted = [base + i for i in range(size)] + [base + 10 + i for i in range(size)]
        if all(is_free(p) for p in [*wanted, base + 40]):
            return base
    raise RuntimeError("no free block of loopback ports found")


def free_base(
    ports_of: Callable[[int], Iterable[int]],
    low: int | None = None,
    high: int | None = None,
    tries: int = 200,
) -> int:
    """A base port for which every port ``ports_of(base)`` names is free and below
    ``high`` (e.g. ``lambda b: replace(config, base_port=b).ports()`` for a mesh with
    replicas, whose ports reach base + 240)."""
    low, high = _slice(low, high)
    for _ in range(tries):
        base = random.randrange(low, high - 256)
        wanted = list(ports_of(base))
        if max(wanted) < high and all(is_free(p) for p in wanted):
            return base
    raise RuntimeError("no free set of loopback ports found")
