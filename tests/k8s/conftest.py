"""Fixtures of the Helm chart tests: render k8s/ordermesh with the pinned helm.

helm comes from `make k8s-tools` (.tools/k8s/bin/helm, or $ORDERMESH_HELM). When it
is missing the tests fail, they do not skip: a chart that was never rendered is
not a chart that passed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.chart import (
    CHART,
    EDGES_VALUES,
    PLATFORM_VALUES,
    PRODUCTION_VALUES,
    Manifest,
    Render,
    RenderError,
    helm_path,
    parse,
    run_helm_template,
)


@pytest.fixture(scope="session")
def helm() -> Path:
    path = helm_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"helm is missing at {path}: run `make k8s-tools` first "
            "(it installs the pinned helm into .tools/k8s/)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def helm_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm")


@pytest.fixture(scope="session")
def render(helm: Path, helm_tmp: Path) -> Render:
    """render(*values_files, sets=[...]) -> the objects; each value set is rendered
    once per session, and a failed render fails the test with helm's message."""
    cache: dict[tuple[tuple[Path, ...], tuple[str, ...]], list[Manifest]] = {}

    def _render(*values: Path, sets: Sequence[str] = ()) -> list[Manifest]:
        key = (tuple(values), tuple(sets))
        if key not in cache:
            result = run_helm_template(helm, helm_tmp, values, sets)
            if result.returncode != 0:
                pytest.fail(f"helm template {key} failed:\n{result.stderr}", pytrace=False)
            cache[key] = parse(result.stdout)
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def default_objects(render: Render) -> list[Manifest]:
    return render()


@pytest.fixture(scope="session")
def production_objects(render: Render) -> list[Manifest]:
    return render(PRODUCTION_VALUES)


@pytest.fixture(scope="session")
def platform_objects(render: Render) -> list[Manifest]:
    """The production values with every platform option on top."""
    return render(PRODUCTION_VALUES, PLATFORM_VALUES)


@pytest.fixture(scope="session")
def edges_objects(render: Render) -> list[Manifest]:
    return render(EDGES_VALUES)


@pytest.fixture(scope="session")
def chart_values() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return data


@pytest.fixture(scope="session")
def helm_template_error(helm: Path, helm_tmp: Path) -> RenderError:
    """Render that must fail (schema or template check); returns helm's error output."""

    def _render_error(sets: Sequence[str], values: Sequence[Path] = ()) -> str:
        result = run_helm_template(helm, helm_tmp, values, sets)
        assert result.returncode != 0, f"helm template {list(values)} {list(sets)} succeeded"
        return result.stderr

    return _render_error


@pytest.fixture
def schema_error(helm_template_error: RenderError, tmp_path: Path) -> Callable[[str], str]:
    """Render these values (YAML text), which the schema must refuse; helm's error."""

    def _schema_error(content: str) -> str:
        values = tmp_path / "bad-values.yaml"
        values.write_text(content)
        err = helm_template_error([], values=[values])
        assert "values don't meet the specifications of the schema" in err
        return err

    return _schema_error
