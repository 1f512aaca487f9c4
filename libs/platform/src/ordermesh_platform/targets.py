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

from typing import Annotated

from pydantic import AfterValidator

from ordermesh_client.targets import grpc_target as grpc_target
from ordermesh_client.targets import target_authority as target_authority

# A settings field holding a target: validated and normalised when settings load.
GrpcTarget = Annotated[str, AfterValidator(grpc_target)]
