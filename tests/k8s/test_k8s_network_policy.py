"""The NetworkPolicies allow exactly the edges of the mesh, no more, no less.

The rendered policies are turned into edges (source, destination, protocol, port):
pods of the release are named after their workload (order, ..., migrate-order, ...,
test), outside peers after the value that configured them. The expected edges are
written down below as data.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from ordermesh_platform.service_names import SERVICE_NAMES
from tests.k8s.chart import EDGES_VALUES, Manifest, Render

SERVICES = SERVICE_NAMES  # the chart deploys each service of the mesh
MIGRATIONS = tuple(f"migrate-{s}" for s in SERVICES)
GRPC, METRICS, POSTGRES, KAFKA, OTLP, DNS = 50051, 9464, 5432, 9092, 4317, 53

Edge = tuple[str, str, str, int | str]

# Outside peers the mesh talks to, whichever values are used.
BASE_EGRESS: set[Edge] = {
    *((w, "dns", proto, DNS) for w in (*SERVICES, *MIGRATIONS, "test") for proto in ("UDP", "TCP")),
    *((s, f"db-{s}", "TCP", POSTGRES) for s in SERVICES),
    *((f"migrate-{s}", f"db-{s}", "TCP", POSTGRES) for s in SERVICES),
    *((s, "kafka", "TCP", KAFKA) for s in SERVICES),
    *((w, "otlp", "TCP", OTLP) for w in (*SERVICES, *MIGRATIONS)),
    ("order", "inventory", "TCP", GRPC),
    ("order", "payment", "TCP", GRPC),
    *(("test", s, "TCP", GRPC) for s in SERVICES),
}
# Internet destinations: only when their CIDR lists are set (empty by default).
EXTERNAL_EGRESS: set[Edge] = {
    ("payment", "payment-provider", "TCP", 443),
    ("notification", "smtp", "TCP", 587),
    ("notification", "webhooks", "TCP", 443),
}
# The risk retraining CronJob (on in values-edges.yaml): payment's database.
RETRAINING = "risk-retraining"
RETRAINING_EGRESS: set[Edge] = {
    *((RETRAINING, "dns", proto, DNS) for proto in ("UDP", "TCP")),
    (RETRAINING, "db-payment", "TCP", POSTGRES),
    (RETRAINING, "otlp", "TCP", OTLP),
}
EXPECTED_INGRESS: set[Edge] = {
    ("order-clients", "order", "TCP", GRPC),
    ("order", "inventory", "TCP", GRPC),
    ("order", "payment", "TCP", GRPC),
    *(("test", s, "TCP", GRPC) for s in SERVICES),
    *(("prometheus", s, "TCP", METRICS) for s in SERVICES),
}


def canonical(peer: dict[str, Any]) -> str:
    return json.dumps(peer, sort_keys=True)


def cidr_peers(cidrs: list[Any]) -> list[dict[str, Any]]:
    return [{"ipBlock": {"cidr": c} if isinstance(c, str) else c} for c in cidrs]


def outside_peers(values: dict[str, Any]) -> dict[str, str]:
    """Canonical peer -> the name of the value that configured it."""
    np = values["networkPolicy"]
    named: list[tuple[str, list[dict[str, Any]]]] = [
        ("dns", np["dns"]["to"]),
        ("order-clients", np["orderClients"]["from"]),
        ("prometheus", np["prometheus"]["from"]),
        ("kafka", np["kafka"]["to"]),
        ("otlp", np["otlp"]["to"]),
        ("identity-provider", np["identityProvider"]["to"]),
        ("payment-provider", cidr_peers(np["paymentProvider"]["cidrs"])),
        ("smtp", cidr_peers(np["smtp"]["cidrs"])),
        ("webhooks", cidr_peers(np["webhooks"]["cidrs"])),
        *((f"db-{s}", np["databases"][s]["to"]) for s in SERVICES),
    ]
    out: dict[str, str] = {}
    for name, peers in named:
        for peer in peers:
            assert canonical(peer) not in out, f"peer {peer} is used for two values"
            out[canonical(peer)] = name
    return out


def merged_values(chart_values: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    return merge(chart_values, override)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, vals = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in vals,
            "NotIn": key not in labels or labels[key] not in vals,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def workloads(objects: list[Manifest]) -> dict[str, dict[str, str]]:
    """Every pod the release can run, by name, with its labels."""
    out: dict[str, dict[str, str]] = {}
    for obj in objects:
        kind = obj["kind"]
        if kind in ("Deployment", "Job"):
            labels = obj["spec"]["template"]["metadata"]["labels"]
        elif kind == "CronJob":
            labels = obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        elif kind == "Pod":
            labels = obj["metadata"]["labels"]
        else:
            continue
        out[labels["app.kubernetes.io/component"]] = labels
    return out


def peer_names(
    peer: dict[str, Any], pods: dict[str, dict[str, str]], outside: dict[str, str]
) -> set[str]:
    if canonical(peer) in outside:
        return {outside[canonical(peer)]}
    if set(peer) == {"podSelector"}:
        inside = {name for name, labels in pods.items() if selects(peer["podSelector"], labels)}
        return inside or {f"UNMATCHED {canonical(peer)}"}
    return {f"UNKNOWN {canonical(peer)}"}


def edges(objects: list[Manifest], outside: dict[str, str]) -> tuple[set[Edge], set[Edge]]:
    """(egress, ingress) edges the rendered NetworkPolicies allow."""
    pods = workloads(objects)
    egress: set[Edge] = set()
    ingress: set[Edge] = set()
    for policy in (o for o in objects if o["kind"] == "NetworkPolicy"):
        spec = policy["spec"]
        selected = [n for n, labels in pods.items() if selects(spec["podSelector"], labels)]
        for direction, key, out in (("egress", "to", egress), ("ingress", "from", ingress)):
            for rule in spec.get(direction) or []:
                # A rule without peers or ports allows every peer or port: "*" here.
                names: set[str] = set()
                for peer in rule.get(key) or [{"*": "*"}]:
                    names |= {"*"} if peer == {"*": "*"} else peer_names(peer, pods, outside)
                ports = [(p.get("protocol", "TCP"), p["port"]) for p in rule.get("ports") or []]
                for pod in selected:
                    for other in names:
                        for proto, port in ports or [("*", "*")]:
                            out.add(
                                (pod, other, proto, port)
                                if direction == "egress"
                                else (other, pod, proto, port)
                            )
    return egress, ingress


def test_the_edges_are_exactly_those_of_the_mesh(
    edges_objects: list[Manifest], chart_values: dict[str, Any]
) -> None:
    values = merged_values(chart_values, yaml.safe_load(EDGES_VALUES.read_text()))
    egress, ingress = edges(edges_objects, outside_peers(values))
    expected_egress = BASE_EGRESS | EXTERNAL_EGRESS | RETRAINING_EGRESS
    assert egress - expected_egress == set(), "egress allowed beyond the mesh's edges"
    assert expected_egress - egress == set(), "egress edges of the mesh missing"
    assert ingress - EXPECTED_INGRESS == set(), "ingress allowed beyond the mesh's edges"
    assert EXPECTED_INGRESS - ingress == set(), "ingress edges of the mesh missing"


def test_default_values_allow_no_internet_destination(
    default_objects: list[Manifest], chart_values: dict[str, Any]
) -> None:
    egress, ingress = edges(default_objects, outside_peers(chart_values))
    assert egress == BASE_EGRESS
    # The default callers are two peers (same namespace, labelled namespaces), one value.
    assert ingress == EXPECTED_INGRESS


@pytest.mark.parametrize(
    "objects_fixture", ["default_objects", "production_objects", "edges_objects"]
)
def test_every_pod_is_default_denied_both_ways(
    objects_fixture: str, request: pytest.FixtureRequest
) -> None:
    objects: list[Manifest] = request.getfixturevalue(objects_fixture)
    pods = workloads(objects)
    retraining = {RETRAINING} if objects_fixture == "edges_objects" else set()
    assert set(pods) == {*SERVICES, *MIGRATIONS, "test", *retraining}
    for direction in ("Ingress", "Egress"):
        covered = {
            name
            for policy in objects
            if policy["kind"] == "NetworkPolicy" and direction in policy["spec"]["policyTypes"]
            for name, labels in pods.items()
            if selects(policy["spec"]["podSelector"], labels)
        }
        assert covered == set(pods), f"pods without an {direction} policy: {set(pods) - covered}"


def test_internal_edges_are_allowed_on_both_ends(
    edges_objects: list[Manifest], chart_values: dict[str, Any]
) -> None:
    """A call between two pods of the release needs the caller's egress and the callee's ingress."""
    values = merged_values(chart_values, yaml.safe_load(EDGES_VALUES.read_text()))
    egress, ingress = edges(edges_objects, outside_peers(values))
    pods = set(workloads(edges_objects))
    assert {e for e in egress if e[1] in pods} == {e for e in ingress if e[0] in pods}


def test_no_rule_allows_everyone(production_objects: list[Manifest], render: Render) -> None:
    for objects in (production_objects, render()):
        for policy in (o for o in objects if o["kind"] == "NetworkPolicy"):
            for direction, key in (("egress", "to"), ("ingress", "from")):
                for rule in policy["spec"].get(direction) or []:
                    assert rule.get(key), (
                        f"{policy['metadata']['name']}: a {direction} rule without peers"
                    )
                    assert rule.get("ports"), (
                        f"{policy['metadata']['name']}: a {direction} rule without ports"
                    )
