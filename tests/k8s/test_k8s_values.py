"""Values switch features on and off, and values.schema.json rejects bad values."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.k8s.chart import (
    PLATFORM_VALUES,
    PRODUCTION_VALUES,
    Manifest,
    Render,
    RenderError,
    of_kind,
)

# (value that turns a feature off, kind of the objects that go with it). The base
# is the production values with the platform overlay, where every feature is on
# (test_k8s_platform.py switches off the options that add to other objects).
FEATURE_SWITCHES: list[tuple[str, str]] = [
    ("defaults.autoscaling.enabled=false", "HorizontalPodAutoscaler"),
    ("defaults.pdb.enabled=false", "PodDisruptionBudget"),
    ("networkPolicy.enabled=false", "NetworkPolicy"),
    ("serviceMonitor.enabled=false", "ServiceMonitor"),
    ("kafka.topics.mode=startup", "KafkaTopic"),
    ("migrations.enabled=false", "Job"),
    ("tests.enabled=false", "Pod"),
    ("notification.keda.enabled=false", "ScaledObject"),
    ("prometheusRule.enabled=false", "PrometheusRule"),
    ("grafanaDashboard.enabled=false", "ConfigMap"),
    ("ingress.enabled=false", "Ingress"),
    ("grpcRoute.enabled=false", "GRPCRoute"),
]

# (values file content, what helm's schema error names)
BAD_VALUES: list[tuple[str, str]] = [
    ("defaults:\n  replicas: two\n", "defaults.replicas"),
    ("services:\n  order:\n    replicas: 1.5\n", "services.order.replicas"),
    ("services:\n  order:\n    replica: 3\n", "replica"),
    ("services:\n  search: {}\n", "search"),
    ("unknownSetting: true\n", "unknownSetting"),
    ("kafka:\n  topics:\n    mode: zookeeper\n", "kafka.topics.mode"),
    ("kafka:\n  topics:\n    partitions: 0\n", "kafka.topics.partitions"),
    ("telemetry:\n  sampler: sometimes\n", "telemetry.sampler"),
    ("telemetry:\n  samplerArg: 2\n", "telemetry.samplerArg"),
    ("networkPolicy:\n  enabled: 'yes'\n", "networkPolicy.enabled"),
    ("networkPolicy:\n  paymentProvider:\n    cidrs: [everywhere]\n    ports: [443]\n", "cidrs"),
    ("ports:\n  grpc: 70000\n", "ports.grpc"),
    ("defaults:\n  logLevel: LOUD\n", "defaults.logLevel"),
    ("defaults:\n  resources:\n    limits:\n      memory: lots\n", "memory"),
    ("defaults:\n  image:\n    pullPolicy: Sometimes\n", "pullPolicy"),
    ("serviceMonitor:\n  interval: soon\n", "serviceMonitor.interval"),
    ("notification:\n  keda:\n    minReplicas: 0\n", "notification.keda.minReplicas"),
    ("prometheusRule:\n  alerts:\n    errorRate:\n      for: a while\n", "for"),
    ("ingress:\n  hosts: [Orders_Example]\n", "ingress.hosts"),
    ("grpcRoute:\n  parentRefs: [{namespace: gw}]\n", "name"),
    ("defaults:\n  extraEnvFrom: [{secret: {name: s}}]\n", "secret"),
    ("defaults:\n  autoscaling:\n    extraMetrics: [{type: Prometheus}]\n", "type"),
    ("migrations:\n  ttlSecondsAfterFinished: -1\n", "ttlSecondsAfterFinished"),
    ("commonLabels:\n  team: 7\n", "commonLabels.team"),
    ("enabled: 'yes'\n", "enabled"),
]


def kinds(objects: list[Manifest]) -> set[str]:
    """Kinds of the chart's own objects (extraObjects carry no chart label)."""
    return {o["kind"] for o in objects if "helm.sh/chart" in (o["metadata"].get("labels") or {})}


@pytest.mark.parametrize(("switch", "kind"), FEATURE_SWITCHES)
def test_switching_a_feature_off_removes_its_objects(
    switch: str, kind: str, render: Render
) -> None:
    every = (PRODUCTION_VALUES, PLATFORM_VALUES)
    assert kind in kinds(render(*every)), f"{kind} is not rendered with every feature on"
    assert kind not in kinds(render(*every, sets=[switch]))


def test_without_the_migration_jobs_the_services_migrate_at_start(render: Render) -> None:
    objects = render(PRODUCTION_VALUES, sets=["migrations.enabled=false"])
    hooks = [o for o in objects if (o["metadata"].get("annotations") or {}).get("helm.sh/hook")]
    assert [o["kind"] for o in hooks] == ["Pod"]  # only the helm-test pod is left
    for deploy in of_kind(objects, "Deployment"):
        env = {
            e["name"]: e.get("value")
            for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["ORDERMESH_MIGRATE_ON_START"] == "true"
    policies = {p["metadata"]["name"] for p in of_kind(objects, "NetworkPolicy")}
    assert not [p for p in policies if "migrate" in p]


def test_an_existing_service_account_is_used_and_none_is_created(render: Render) -> None:
    objects = render(sets=["serviceAccount.create=false", "serviceAccount.name=platform-sa"])
    assert of_kind(objects, "ServiceAccount") == []
    for workload in [*of_kind(objects, "Deployment"), *of_kind(objects, "Job")]:
        assert workload["spec"]["template"]["spec"]["serviceAccountName"] == "platform-sa"


def test_topology_spread_can_be_switched_off(render: Render) -> None:
    for deploy in of_kind(render(sets=["defaults.topologySpread.enabled=false"]), "Deployment"):
        assert "topologySpreadConstraints" not in deploy["spec"]["template"]["spec"]


@pytest.mark.parametrize(("content", "names"), BAD_VALUES)
def test_schema_rejects_bad_values(
    content: str, names: str, schema_error: Callable[[str], str]
) -> None:
    assert names in schema_error(content)


def test_enabled_and_global_are_accepted_for_parent_charts(render: Render, tmp_path: Path) -> None:
    values = tmp_path / "parent.yaml"
    values.write_text("enabled: true\nglobal:\n  imageRegistry: registry.example.com\n")
    assert of_kind(render(values), "Deployment")


def test_a_service_without_a_database_is_rejected(helm_template_error: RenderError) -> None:
    err = helm_template_error(["services.payment.database.existingSecret="])
    assert "services.payment.database: set url or existingSecret" in err
