"""A labelled metric's children looked up once: the same child for the same values, and
what is counted through them lands in the metric, under its labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from ordermesh_platform.metrics import Children


def test_each_set_of_label_values_has_one_child_and_counts_under_its_labels() -> None:
    registry = CollectorRegistry()
    metric = Counter("things_total", "Things.", ["kind", "result"], registry=registry)
    children = Children(metric)

    assert children("a", "ok") is children("a", "ok")
    assert children("a", "ok") is not children("a", "failed")
    children("a", "ok").inc()
    children("a", "ok").inc()
    children("b", "ok").inc(3)

    def value(kind: str, result: str) -> float | None:
        return registry.get_sample_value("things_total", {"kind": kind, "result": result})

    assert value("a", "ok") == 2
    assert value("b", "ok") == 3
    assert value("a", "failed") == 0
