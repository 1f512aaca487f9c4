"""The services of the mesh, by name, in the order the CLI starts them and gives them
ports. Certificates, the peer names authentication accepts and the CLI's registry all
read this one tuple; each name is also an ``ordermesh.services`` entry point."""

from __future__ import annotations

SERVICE_NAMES = ("order", "inventory", "payment", "notification")
