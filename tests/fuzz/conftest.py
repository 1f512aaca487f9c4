"""Shared fixtures of the fuzz suites (see tests/fuzz/harness.py for how they run)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fuzz.harness import Mesh


@pytest.fixture(autouse=True)
def still_serving(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test of a suite: no service crashed or stopped being SERVING."""
    yield
    if "mesh" in request.fixturenames:
        mesh = request.getfixturevalue("mesh")
        assert isinstance(mesh, Mesh)
        mesh.assert_serving()
