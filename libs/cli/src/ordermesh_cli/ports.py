"""The ports of a local mesh, and whether they are free, asked before anything starts
(and before the heavy imports: `ordermesh up` refuses a taken port at once).

From the base port N (docs/architecture.md, "The local mesh"):
  N+0 .. N+3             gRPC of order, inventory, payment, notification (replica 0)
  N+10 .. N+13           their /metrics
  N+40                   the local broker
  N+100 + 10*i + r       gRPC of replica r (1..9) of the service at offset i: the
                         replicas of a service sit on consecutive ports
                         (inventory's: N+111, N+112, ...)
  N+200 + 10*i + r       its /metrics
The blocks never overlap, so no replica count can take another service's port, the
broker's, or a metrics port.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping

from ordermesh_platform.service_names import SERVICE_NAMES

PORT_OFFSETS = {name: i for i, name in enumerate(SERVICE_NAMES)}
BROKER_PORT_OFFSET = 40
METRICS_PORT_OFFSET = 10
REPLICA_PORT_OFFSET = 100
REPLICA_METRICS_PORT_OFFSET = 200
MAX_REPLICAS = 10


def service_port(base: int, service: str, replica: int = 0) -> int:
    if replica == 0:
        return base + PORT_OFFSETS[service]
    return base + REPLICA_PORT_OFFSET + 10 * PORT_OFFSETS[service] + replica


def metrics_port(base: int, service: str, replica: int = 0) -> int:
    if replica == 0:
        return base + METRICS_PORT_OFFSET + PORT_OFFSETS[service]
    return base + REPLICA_METRICS_PORT_OFFSET + 10 * PORT_OFFSETS[service] + replica


def port_owners(base: int, replicas: Mapping[str, int], broker: bool) -> dict[int, str]:
    """Every port of the mesh, with what listens there (the broker's with ``broker``)."""
    owners: dict[int, str] = {}
    for name in SERVICE_NAMES:
        count = replicas.get(name, 1)
        for r in range(count):
            label = name if count == 1 else f"{name}/{r}"
            owners[service_port(base, name, r)] = label
            owners[metrics_port(base, name, r)] = f"{label} metrics"
    if broker:
        owners[base + BROKER_PORT_OFFSET] = "broker"
    return owners


def check_layout(base: int, replicas: Mapping[str, int]) -> None:
    """ValueError when a replica count or the base port cannot be laid out."""
    for name, count in replicas.items():
        if name not in SERVICE_NAMES:
            raise ValueError(f"replicas: no service named {name!r}")
        if not 1 <= count <= MAX_REPLICAS:
            raise ValueError(f"replicas: {name}={count}, choose 1 to {MAX_REPLICAS}")
    highest = max(port_owners(base, replicas, broker=True))
    if base < 1 or highest > 65535:
        raise ValueError(f"base port {base}: the mesh's ports reach {highest}")


def parse_replicas(text: str) -> dict[str, int]:
    """``inventory=2,payment=2`` as a mapping; ValueError names what is wrong."""
    replicas: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, count = item.partition("=")
        if not sep or not count.strip().isdigit():
            raise ValueError(f"{item!r}: write <service>=<count>, e.g. inventory=2")
        replicas[name.strip()] = int(count)
    return replicas


def taken_message(port: int, owner: str) -> str:
    return f"port {port} ({owner}) is in use by another process; pass --base-port"


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
