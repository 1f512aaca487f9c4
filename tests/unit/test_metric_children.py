"""The services' metrics look each labelled child up once: the same child for the same
values, what is counted through it lands under its labels, and a child removed or
cleared from the metric is looked up anew, so nothing is counted where no scrape sees
it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from ordermesh_platform.metrics import Counter


def test_the_child_looked_up_is_the_one_for_those_values_and_counts_under_them() -> None:
    registry = CollectorRegistry()
    metric = Counter("things", "Things.", ["kind", "result"], registry=registry)

    assert metric.labels("a", "ok") is metric.labels("a", "ok")
    assert metric.labels("a", "ok") is not metric.labels("a", "failed")
    assert metric.labels(kind="a", result="ok") is metric.labels("a", "ok")
    metric.labels("a", "ok").inc()
    metric.labels("a", "ok").inc()
    metric.labels("b", "ok").inc(3)

    def value(kind: str, result: str) -> float | None:
        return registry.get_sample_value("things_total", {"kind": kind, "result": result})

    assert value("a", "ok") == 2
    assert value("b", "ok") == 3
    assert value("a", "failed") == 0


def test_a_removed_or_cleared_child_is_looked_up_anew() -> None:
    registry = CollectorRegistry()
    metric = Counter("things", "Things.", ["kind"], registry=registry)
    metric.labels("a").inc()
    metric.clear()
    metric.labels("a").inc(2)
    assert registry.get_sample_value("things_total", {"kind": "a"}) == 2
    metric.remove("a")
    metric.labels("a").inc(5)
    assert registry.get_sample_value("things_total", {"kind": "a"}) == 5
