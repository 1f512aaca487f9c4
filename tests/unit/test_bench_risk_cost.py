"""The bench's reading of payment's scoring histogram: percentiles as bucket bounds."""

from __future__ import annotations

import math

from ordermesh_bench.risk_cost import merge, percentile_ms, scoring_summary

# Cumulative counts by upper bound (seconds), as Prometheus exposes a histogram.
RUN = {0.0005: 50.0, 0.001: 90.0, 0.005: 99.0, 0.01: 100.0, math.inf: 100.0}


def test_a_percentile_is_the_bound_of_the_bucket_it_falls_in() -> None:
    assert percentile_ms(RUN, 0.5) == 0.5
    assert percentile_ms(RUN, 0.9) == 1.0
    assert percentile_ms(RUN, 0.99) == 5.0
    assert percentile_ms(RUN, 1.0) == 10.0


def test_no_batch_or_a_tail_past_the_last_bound_has_no_percentile() -> None:
    assert percentile_ms({}, 0.99) is None
    assert percentile_ms({0.01: 0.0, math.inf: 0.0}, 0.99) is None
    assert percentile_ms({0.01: 90.0, math.inf: 100.0}, 0.99) is None


def test_runs_add_up_and_each_source_is_counted() -> None:
    assert merge([RUN, RUN])[math.inf] == 200.0
    summary = scoring_summary(
        [{"model": RUN}, {"model": RUN, "rules": {0.0005: 3.0, math.inf: 3.0}}]
    )
    assert summary["batches_by_source"] == {"model": 200, "rules": 3}
    assert summary["model_p99_ms_per_batch"] == 5.0
    assert summary["model_p50_ms_per_batch"] == 0.5
