"""Rendering k8s/ordermesh with the pinned helm, shared by the chart tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "k8s" / "ordermesh"
PRODUCTION_VALUES = REPO / "k8s" / "examples" / "values-production.yaml"
# Every option that adapts the chart to a platform switched on (an overlay).
PLATFORM_VALUES = REPO / "k8s" / "examples" / "values-platform.yaml"
EDGES_VALUES = Path(__file__).resolve().parent / "values-edges.yaml"
RELEASE = "om"
NAMESPACE = "shop"
KUBE_VERSION = "1.29.0"

Manifest = dict[str, Any]
# render(*values_files, sets=[...]) -> the rendered objects
Render = Callable[..., list[Manifest]]
# render_error(sets, values=[...]) -> helm's error output of a render that must fail
RenderError = Callable[..., str]


def helm_path() -> Path:
    return Path(os.environ.get("ORDERMESH_HELM", REPO / ".tools" / "k8s" / "bin" / "helm"))


def helm_env(tmp: Path) -> dict[str, str]:
    """helm keeps its cache and config out of the user's home."""
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(tmp / var.lower())
    return env


def run_helm_template(
    helm: Path,
    tmp: Path,
    values: Sequence[Path] = (),
    sets: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(helm),
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
    ]
    for path in values:
        cmd += ["--values", str(path)]
    for item in sets:
        cmd += ["--set", item]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=helm_env(tmp), timeout=60, check=False
    )


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: YAML parsers keep
    either one, and the API server's strict field validation refuses the object."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse(stdout: str) -> list[Manifest]:
    return [doc for doc in yaml.load_all(stdout, Loader=StrictLoader) if doc]


def of_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [o for o in objects if o["kind"] == kind]


def component(obj: Manifest) -> str:
    labels: dict[str, str] = obj["metadata"]["labels"]
    return labels["app.kubernetes.io/component"]
