"""The mesh's service names (ordermesh_platform.service_names) are the services that
are installed, and the names every other part derives from them."""

from __future__ import annotations

from importlib.metadata import entry_points

from ordermesh_cli.ports import PORT_OFFSETS
from ordermesh_platform.auth import service_identity
from ordermesh_platform.service_names import SERVICE_NAMES


def test_each_name_is_an_installed_service_and_each_service_is_named() -> None:
    installed = {e.name for e in entry_points(group="ordermesh.services")}
    assert installed == set(SERVICE_NAMES)
    assert len(SERVICE_NAMES) == len(set(SERVICE_NAMES))


def test_ports_follow_the_names_order() -> None:
    assert list(PORT_OFFSETS) == list(SERVICE_NAMES)
    assert list(PORT_OFFSETS.values()) == list(range(len(SERVICE_NAMES)))


def test_a_certificate_for_each_name_identifies_that_service() -> None:
    for name in SERVICE_NAMES:
        assert service_identity([f"ordermesh-{name}.ordermesh.svc"]) == name
    assert service_identity(["ordermesh-billing"]) == ""
