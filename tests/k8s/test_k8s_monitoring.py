"""Monitoring as the chart renders it: the ServiceMonitor, the PrometheusRule's alerts
and the Grafana dashboard's ConfigMap. Every metric, label and label value an alert,
a dashboard query or an HPA metric names is one the services emit
(tests/support/metrics_catalog.py reads them from the code)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.k8s.chart import CHART, NAMESPACE, Manifest, Render, of_kind
from tests.support.metrics_catalog import all_series, problems

ALERTS = {
    "OrdermeshOutboxStalled",
    "OrdermeshConsumerLagHigh",
    "OrdermeshDeadLetters",
    "OrdermeshSagaFailures",
    "OrdermeshErrorRate",
    "OrdermeshBatchStalls",
    "OrdermeshNotificationsLate",
}


def rules(objects: list[Manifest]) -> list[dict[str, Any]]:
    (rule,) = of_kind(objects, "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels += panel.get("panels", []) if panel.get("type") == "row" else [panel]
    return [str(t["expr"]) for p in panels for t in p.get("targets", []) if t.get("expr")]


def test_the_alerts_cover_outbox_lag_dead_letters_failures_errors_stalls_late_notices(
    platform_objects: list[Manifest],
) -> None:
    (rule,) = of_kind(platform_objects, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = rules(platform_objects)
    assert {a["alert"] for a in alerts} == ALERTS
    for alert in alerts:
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["annotations"]["summary"]
        assert alert["for"]


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_every_alert_names_only_what_the_services_emit(
    alert: str, platform_objects: list[Manifest]
) -> None:
    (rule,) = [r for r in rules(platform_objects) if r["alert"] == alert]
    expr = rule["expr"]
    assert not problems(expr), problems(expr)
    # Scoped to the release's namespace, so that two releases do not alert for each other.
    assert f'namespace="{NAMESPACE}"' in expr


def test_alert_thresholds_come_from_the_values(render: Render) -> None:
    objects = render(
        sets=[
            "prometheusRule.enabled=true",
            "prometheusRule.alerts.outboxAge.threshold=120",
            "prometheusRule.alerts.errorRate.for=15m",
        ]
    )
    by_name = {r["alert"]: r for r in rules(objects)}
    assert by_name["OrdermeshOutboxStalled"]["expr"].endswith("> 120")
    assert by_name["OrdermeshErrorRate"]["for"] == "15m"


def test_the_metric_check_catches_what_the_code_does_not_emit() -> None:
    """The check the alerts pass is one that fails: on a misspelt metric, a label
    the metric lacks, a value the code never sets."""
    assert problems("ordermesh_outbox_age_seconds > 60")
    assert problems('ordermesh_consumer_lag{service="order"}')
    assert problems('ordermesh_saga_outcomes_total{outcome="failed"}')
    assert problems('ordermesh_rpc_requests_total{code=~"INTERNAL|BROKEN"}')
    assert problems("sum by (topic) (ordermesh_saga_outcomes_total)")
    assert not problems('ordermesh_saga_outcomes_total{outcome="rejected", reason="SAGA_TIMEOUT"}')


def test_the_dashboard_config_map_holds_the_dashboard_for_the_sidecar(
    platform_objects: list[Manifest],
) -> None:
    (config_map,) = of_kind(platform_objects, "ConfigMap")
    meta = config_map["metadata"]
    assert meta["labels"]["grafana_dashboard"] == "1"
    assert meta["annotations"]["grafana_folder"] == "ordermesh"
    assert meta["namespace"] == "monitoring"
    (data,) = config_map["data"].values()
    dashboard = json.loads(data)
    on_disk = json.loads((CHART / "dashboards" / "ordermesh-grafana.json").read_text())
    assert dashboard == on_disk
    expressions = dashboard_expressions(dashboard)
    assert expressions
    for expr in expressions:
        assert not problems(expr), problems(expr)


def test_hpa_metrics_are_metrics_the_services_emit(platform_objects: list[Manifest]) -> None:
    series = all_series()
    for hpa in of_kind(platform_objects, "HorizontalPodAutoscaler"):
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Pods":
                assert metric["pods"]["metric"]["name"] in series


def test_service_monitor_relabelings(platform_objects: list[Manifest]) -> None:
    (monitor,) = of_kind(platform_objects, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["relabelings"] == [{"targetLabel": "cluster", "replacement": "prod-eu-1"}]
    (drop,) = endpoint["metricRelabelings"]
    assert drop["action"] == "drop"
    assert drop["regex"] in series_names()


def series_names() -> set[str]:
    return set(all_series())
