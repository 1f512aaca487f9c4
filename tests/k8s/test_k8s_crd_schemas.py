"""The bundled CRD schemas (k8s/tools/crd-schemas/) that `make k8s-check` validates the
custom resources with, and its PromQL check of the alerts: what the chart renders
passes, and what the real CRDs (or Prometheus) refuse fails, so a check that passes is
one that could have failed."""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.chart import REPO, Manifest, helm_path

VALIDATOR = REPO / "k8s" / "tools" / "validate_manifests.py"
CUSTOM = {"ScaledObject", "PrometheusRule", "ServiceMonitor", "GRPCRoute", "KafkaTopic"}


def tools_python() -> Path:
    return helm_path().parent.parent / "venv" / "bin" / "python"


def validate(objects: list[Manifest], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "objects.yaml"
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return subprocess.run(
        [str(tools_python()), str(VALIDATOR), "-k", "1.29.0", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def custom_resources(objects: list[Manifest]) -> list[Manifest]:
    return [o for o in objects if o["kind"] in CUSTOM]


def test_the_rendered_custom_resources_pass(
    platform_objects: list[Manifest], helm: Path, tmp_path: Path
) -> None:
    objects = custom_resources(platform_objects)
    assert {o["kind"] for o in objects} == CUSTOM
    result = validate(objects, tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"+ {len(objects)} custom resources (bundled CRD schemas)" in result.stdout


def _first(kind: str, objects: list[Manifest]) -> Manifest:
    return next(o for o in objects if o["kind"] == kind)


def _numeric_lag(o: dict[str, Any]) -> None:
    o["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 500


def _no_triggers(o: dict[str, Any]) -> None:
    o["spec"]["triggers"] = []


def _zero_max(o: dict[str, Any]) -> None:
    o["spec"]["maxReplicaCount"] = 0


def _bad_for(o: dict[str, Any]) -> None:
    o["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"


def _no_expr(o: dict[str, Any]) -> None:
    del o["spec"]["groups"][0]["rules"][0]["expr"]


def _not_promql(o: dict[str, Any]) -> None:
    o["spec"]["groups"][0]["rules"][0]["expr"] = "max by (service (ordermesh_outbox_backlog)"


def _bad_action(o: dict[str, Any]) -> None:
    o["spec"]["endpoints"][0]["relabelings"][0]["action"] = "rename"


def _unknown_route_field(o: dict[str, Any]) -> None:
    o["spec"]["rules"][0]["timeouts"] = {"request": "10s"}


def _bad_method_type(o: dict[str, Any]) -> None:
    o["spec"]["rules"][0]["matches"][0]["method"]["type"] = "Prefix"


MUTATIONS: list[tuple[str, str, Callable[[dict[str, Any]], None], str]] = [
    ("ScaledObject", "numeric trigger metadata", _numeric_lag, "lagThreshold"),
    ("ScaledObject", "no trigger", _no_triggers, "triggers"),
    ("ScaledObject", "maxReplicaCount 0", _zero_max, "maxReplicaCount"),
    ("PrometheusRule", "a duration Prometheus cannot read", _bad_for, "for"),
    ("PrometheusRule", "a rule without expr", _no_expr, "expr"),
    ("PrometheusRule", "an expression that is not PromQL", _not_promql, "not PromQL"),
    ("ServiceMonitor", "an unknown relabel action", _bad_action, "action"),
    ("GRPCRoute", "a field of the experimental channel", _unknown_route_field, "timeouts"),
    ("GRPCRoute", "a method match type that does not exist", _bad_method_type, "type"),
]


@pytest.mark.parametrize(
    ("kind", "what", "mutate", "where"), MUTATIONS, ids=[m[1] for m in MUTATIONS]
)
def test_what_the_crd_refuses_fails_the_check(
    kind: str,
    what: str,
    mutate: Callable[[dict[str, Any]], None],
    where: str,
    platform_objects: list[Manifest],
    helm: Path,
    tmp_path: Path,
) -> None:
    broken = copy.deepcopy(_first(kind, platform_objects))
    mutate(broken)
    result = validate([broken], tmp_path)
    assert result.returncode == 1, f"{what} passed"
    assert where in result.stderr


def test_a_key_given_twice_fails_the_check(helm: Path, tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"
        "  labels:\n    team: a\n    team: b\n"
    )
    result = subprocess.run(
        [str(tools_python()), str(VALIDATOR), "-k", "1.29.0", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "duplicate key 'team'" in result.stderr
