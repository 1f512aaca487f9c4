"""Finds services by name through the ``ordermesh.services`` entry points, and the
commands of other packages through the ``ordermesh.commands`` entry points, so the CLI
never imports a service package or the bench directly."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from ordermesh_platform.service_names import SERVICE_NAMES

if TYPE_CHECKING:
    import typer

    from ordermesh_platform.service import ServiceSpec


def load_service(name: str) -> ServiceSpec:
    from ordermesh_platform.service import ServiceSpec  # the services' imports: only here

    found = entry_points(group="ordermesh.services", name=name)
    for entry in found:
        spec = entry.load()
        if not isinstance(spec, ServiceSpec):
            raise TypeError(f"entry point {entry.value} is not a ServiceSpec")
        return spec
    raise LookupError(f"no service named {name!r}; known: {', '.join(SERVICE_NAMES)}")


def add_installed_commands(app: typer.Typer) -> None:
    """Let each installed package's ``ordermesh.commands`` entry point, a function of the
    app, add its commands (the bench adds bench, soak and chaos). A package that is not
    installed adds nothing."""
    for entry in sorted(entry_points(group="ordermesh.commands"), key=lambda e: e.name):
        entry.load()(app)
