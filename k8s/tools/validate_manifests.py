"""Validate rendered manifests offline, for `make k8s-check`.

Built-in kinds are validated with kubernetes-validate (strict: unknown fields are
errors) against every Kubernetes version given. Unlike the kubernetes-validate
command, a kind/apiVersion without a schema for a version is an error here (the
command only warns), so an API removed in a later Kubernetes fails the check.
Custom resources (KafkaTopic, ServiceMonitor, PrometheusRule, Certificate,
ScaledObject, GRPCRoute) are validated against the schemas
bundled in k8s/tools/crd-schemas/, and a PrometheusRule's expressions must parse as
PromQL. Objects are also checked for duplicates, and mappings for a key given twice.

Run with the tools' Python: .tools/k8s/bin/python k8s/tools/validate_manifests.py
    -k 1.29.0 -k 1.33.0 rendered.yaml [more.yaml ...]
Prints one line per file on success; errors, and exit status 1, otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import promql_parser
import yaml
from kubernetes_validate import utils as kv

CRD_SCHEMA_DIR = Path(__file__).resolve().parent / "crd-schemas"


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


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> schema, from files named <kind>-<group>-<version>.json."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRD_SCHEMA_DIR.glob("*.json")):
        schema = json.loads(path.read_text())
        props = schema["properties"]
        schemas[(props["apiVersion"]["const"], props["kind"]["const"])] = schema
    return schemas


def describe(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('name')} ({obj.get('apiVersion')})"


def promql_errors(obj: dict[str, Any]) -> list[str]:
    """Every rule expression of a PrometheusRule that is not PromQL."""
    errors: list[str] = []
    for group in (obj.get("spec") or {}).get("groups") or []:
        for rule in group.get("rules") or []:
            name = rule.get("alert") or rule.get("record")
            try:
                promql_parser.parse(str(rule.get("expr", "")))
            except ValueError as err:
                errors.append(f"{describe(obj)}: rule {name}: not PromQL: {err}")
    return errors


def validate_file(path: Path, versions: list[str], crds: dict[tuple[str, str], Any]) -> list[str]:
    errors: list[str] = []
    try:
        objects = [o for o in yaml.load_all(path.read_text(), Loader=StrictLoader) if o]
    except yaml.YAMLError as exc:
        return [f"{path}: not YAML: {exc}"]
    if not objects:
        return [f"{path}: no objects"]
    seen: set[tuple[str, str, str]] = set()
    n_crd = 0
    for obj in objects:
        if not isinstance(obj, dict) or "apiVersion" not in obj or "kind" not in obj:
            errors.append(f"{path}: not a Kubernetes object: {str(obj)[:80]}")
            continue
        meta = obj.get("metadata") or {}
        key = (obj["kind"], meta.get("namespace", ""), meta.get("name", ""))
        if key in seen:
            errors.append(f"{path}: duplicate {describe(obj)}")
        seen.add(key)
        crd = crds.get((obj["apiVersion"], obj["kind"]))
        if crd is not None:
            n_crd += 1
            validator = jsonschema.Draft202012Validator(crd)
            for err in sorted(validator.iter_errors(obj), key=lambda e: list(e.path)):
                where = ".".join(str(p) for p in err.path) or "<root>"
                errors.append(
                    f"{path}: {describe(obj)}: {where}: {err.message} (bundled CRD schema)"
                )
            if obj["kind"] == "PrometheusRule":
                errors += [f"{path}: {e}" for e in promql_errors(obj)]
            continue
        for version in versions:
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as err:
                where = ".".join(str(p) for p in err.path) or "<root>"
                errors.append(
                    f"{path}: {describe(obj)} on Kubernetes {version}: {where}: {err.message}"
                )
            except kv.SchemaNotFoundError:
                errors.append(
                    f"{path}: {describe(obj)}: no such kind/apiVersion in Kubernetes {version} "
                    f"(and no bundled schema in {CRD_SCHEMA_DIR.name}/)"
                )
    if not errors:
        n_core = len(objects) - n_crd
        crd_note = f" + {n_crd} custom resources (bundled CRD schemas)" if n_crd else ""
        print(
            f"ok  {path.name}: {n_core} objects valid (strict) on Kubernetes "
            f"{', '.join(versions)}{crd_note}"
        )
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", "--kube-version", action="append", required=True)
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    supported = kv.all_versions()
    for version in args.kube_version:
        if not any(kv.major_minor(v) == kv.major_minor(version) for v in supported):
            print(
                f"kubernetes-validate has no schemas for Kubernetes {version} "
                f"(it has {supported[0]} .. {supported[-1]})",
                file=sys.stderr,
            )
            return 2
    crds = crd_schemas()
    errors: list[str] = []
    for path in args.files:
        errors += validate_file(path, args.kube_version, crds)
    for line in errors:
        print(f"ERROR {line}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
