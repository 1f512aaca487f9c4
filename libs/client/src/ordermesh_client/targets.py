"""Where a channel goes: one address, a list of replicas, or a name every replica
answers to, written as the gRPC target its resolver understands.

- ``host:port``: one server (gRPC's default ``dns`` resolver).
- ``127.0.0.1:50052,127.0.0.1:50162``: every replica of a service started by
  ``ordermesh up --replicas`` (IPv4 literals only), turned into gRPC's static
  ``ipv4:`` target so the client's load-balancing policy sees each of them.
- any gRPC target URI, kept as it is: ``dns:///inventory-headless.ns.svc:50052``
  (a headless Service: one address per ready pod, re-resolved whenever a connection
  closes), ``ipv4:...``, ``ipv6:...``, ``unix:...``.
"""

from __future__ import annotations

import ipaddress

SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


def grpc_target(address: str) -> str:
    """The gRPC target for ``address`` (see the module); ValueError when it is a list
    holding anything but IPv4 ``host:port`` literals."""
    address = address.strip()
    if not address:
        raise ValueError("an address is required")
    if address.startswith(SCHEMES) or "," not in address:
        return address
    parts = [part.strip() for part in address.split(",")]
    for part in parts:
        host, _, port = part.rpartition(":")
        try:
            ipaddress.IPv4Address(host)
            valid_port = 0 < int(port) < 65536
        except ValueError:
            valid_port = False
        if not valid_port:
            raise ValueError(
                f"{part!r}: a list of replicas takes IPv4 host:port literals; for a name "
                "that resolves to every replica use dns:///<name>:<port>"
            )
    return "ipv4:" + ",".join(parts)


def target_authority(target: str) -> str | None:
    """The authority (and TLS name) a channel to several literal addresses presents:
    its first address, which every replica's certificate carries (127.0.0.1). gRPC
    would otherwise use the whole list. None: gRPC's own choice is right."""
    if target.startswith("ipv4:") and "," in target:
        return target.removeprefix("ipv4:").split(",", 1)[0]
    return None
