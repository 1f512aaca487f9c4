"""Latency (HDR histogram) and outcomes of one measured run."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

MAX_LATENCY_US = 120_000_000  # two minutes: anything slower is clamped


@dataclass
class Run:
    """What one run of the load generator measured."""

    name: str
    histogram: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, MAX_LATENCY_US, 3))
    outcomes: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.perf_counter)
    ended: float = 0.0

    def record(self, latency_s: float, outcome: str) -> None:
        self.histogram.record_value(min(MAX_LATENCY_US, max(1, int(latency_s * 1_000_000))))
        self.outcomes[outcome] += 1

    def finish(self) -> None:
        self.ended = time.perf_counter()

    @property
    def count(self) -> int:
        return sum(self.outcomes.values())

    @property
    def elapsed_s(self) -> float:
        return max(1e-9, (self.ended or time.perf_counter()) - self.started)

    def percentile_ms(self, p: float) -> float:
        return float(self.histogram.get_value_at_percentile(p)) / 1000.0

    def summary(self, throughput_count: int | None = None) -> dict[str, Any]:
        count = self.count if throughput_count is None else throughput_count
        return {
            "throughput_per_s": round(count / self.elapsed_s, 2),
            "p50_ms": round(self.percentile_ms(50), 3),
            "p95_ms": round(self.percentile_ms(95), 3),
            "p99_ms": round(self.percentile_ms(99), 3),
            "max_ms": round(float(self.histogram.get_max_value()) / 1000.0, 3),
            "count": count,
            "elapsed_s": round(self.elapsed_s, 3),
            "outcomes": dict(self.outcomes),
        }
