"""The bench's reading of payment's scoring histogram: percentiles as bucket bounds."""

from __future__ import annotations

import math

from prometheus_client.samples import Sample

from ordermesh_bench.risk_cost import (
    PAYMENT_EVENTS_TOPIC,
    declined_share,
    merge,
    payment_events_behind,
    percentile_ms,
    scoring_summary,
    since,
)

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


def test_a_run_counts_only_the_batches_after_its_start() -> None:
    warm_up = {
        "rules": {0.0005: 7.0, math.inf: 7.0},
        "model": {0.0005: 2.0, 0.001: 2.0, math.inf: 2.0},
    }
    after = {
        "rules": {0.0005: 7.0, math.inf: 7.0},
        "model": {0.0005: 52.0, 0.001: 92.0, math.inf: 102.0},
    }
    run = since(warm_up, after)
    assert run["rules"][math.inf] == 0.0
    assert run["model"] == {0.0005: 50.0, 0.001: 90.0, math.inf: 100.0}
    assert scoring_summary([run])["batches_by_source"] == {"model": 100, "rules": 0}


def _lag(topic: str, partition: int, value: float) -> Sample:
    labels = {"consumer": "payment", "topic": topic, "partition": str(partition)}
    return Sample("ordermesh_consumer_lag", labels, value)


def test_the_lag_on_the_payment_events_is_summed_over_all_their_partitions_only() -> None:
    assert payment_events_behind([], 2) is None  # not polled yet: not known to be caught up
    assert payment_events_behind([_lag("ordermesh.psp.chargebacks.v1", 0, 5.0)], 2) is None
    first = [_lag(PAYMENT_EVENTS_TOPIC, 1, 12.0), _lag("ordermesh.psp.chargebacks.v1", 0, 7.0)]
    # One partition of two polled: the other may hold the whole backlog.
    assert payment_events_behind(first, 2) is None
    assert payment_events_behind([*first, _lag(PAYMENT_EVENTS_TOPIC, 0, 4000.0)], 2) == 4012.0


def test_the_declined_share_counts_the_decisions_of_the_run_only() -> None:
    before = {"approve": 100.0, "decline": 50.0}
    after = {"approve": 190.0, "decline": 60.0, "explore": 0.0}
    assert declined_share(before, after) == 0.1
    assert declined_share(after, after) is None
