"""Shared fixtures of the fuzz suites (see tests/fuzz/harness.py for how they run)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fuzz.harness import Mesh, rpc_ids
from tests.fuzz.suite import ServiceContract


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each check of a ServiceContract runs once per RPC of its service."""
    cls = metafunc.cls
    if cls is not None and issubclass(cls, ServiceContract) and "rpc" in metafunc.fixturenames:
        metafunc.parametrize("rpc", cls.RPCS, ids=rpc_ids(cls.RPCS))


@pytest.fixture(scope="module")
def context() -> object:
    """What a suite seeded before the fuzzing (none unless its module says otherwise)."""
    return None


@pytest.fixture(autouse=True)
def still_serving(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test of a suite: no service crashed or stopped being SERVING."""
    yield
    if "mesh" in request.fixturenames:
        mesh = request.getfixturevalue("mesh")
        assert isinstance(mesh, Mesh)
        mesh.assert_serving()
