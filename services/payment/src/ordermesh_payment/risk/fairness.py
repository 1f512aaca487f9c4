"""Per-segment fairness: who bears a policy's false declines, and who it approves.

Segments are what a fairness review asks about and the data has: billing country, new
or returning customer, and the payment method as the attempt knows it (a new or a known
token). None of them is a feature; billing country is watched precisely because country
can stand in for nationality. The rates come from fairlearn's ``MetricFrame``, one frame
per segmentation: the gate, ``train`` (each artifact's report), ``evaluate`` and
``report`` all read them from here."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ordermesh_payment.risk.dataset import Labelled
from ordermesh_payment.risk.events import Attempt

SEGMENTATIONS = ("billing_country", "customer", "payment_token")
# Rates below this count as this when comparing segments: a segment with no false
# decline must not make every ratio infinite, and among rates that small the
# differences are noise, not unfairness.
RATE_FLOOR = 0.005

Segmenter = Callable[[Attempt, Sequence[float]], dict[str, str]]


def segmenter(feature_names: Sequence[str]) -> Segmenter:
    """The segment of each segmentation an attempt (and its feature vector) falls in."""
    customer_seen = feature_names.index("customer_seen_before")
    token_seen = feature_names.index("token_seen_before")

    def segments(attempt: Attempt, vector: Sequence[float]) -> dict[str, str]:
        return {
            "billing_country": attempt.billing_country or "unknown",
            "customer": "returning" if vector[customer_seen] else "new",
            "payment_token": "known" if vector[token_seen] else "new",
        }

    return segments


@dataclass(frozen=True)
class SegmentRates:
    segmentation: str
    segment: str
    orders: int
    genuine: int
    false_decline_rate: float  # of its genuine orders, the share declined
    approval_rate: float  # of its orders, the share approved


def _genuine(y_true: Any, y_pred: Any) -> int:
    return int((y_true == 0).sum())


def _false_decline_rate(y_true: Any, y_pred: Any, sample_weight: Any = None) -> float:
    from fairlearn.metrics import false_positive_rate

    return float(false_positive_rate(y_true, y_pred, pos_label=1, sample_weight=sample_weight))


def _approval_rate(y_true: Any, y_pred: Any, sample_weight: Any = None) -> float:
    from fairlearn.metrics import selection_rate

    return 1.0 - float(selection_rate(y_true, y_pred, pos_label=1, sample_weight=sample_weight))


def segment_rates(
    segments: Sequence[Mapping[str, str]],
    labels: Sequence[int],
    declined: Sequence[bool],
    min_genuine: int,
    weights: Sequence[float] | None = None,
) -> list[SegmentRates]:
    """Per segment with at least ``min_genuine`` genuine orders: its false-decline rate
    and approval rate. ``weights`` (e.g. inverse propensities) weigh the rates; the
    counts stay counts of orders."""
    import numpy as np
    from fairlearn.metrics import MetricFrame, count

    if not labels:
        return []
    y_true = np.asarray(labels, dtype=np.int64)
    y_pred = np.asarray(declined, dtype=np.int64)
    weighted = {} if weights is None else {"sample_weight": np.asarray(weights, dtype=np.float64)}
    rates = []
    for segmentation in SEGMENTATIONS:
        frame = MetricFrame(
            metrics={
                "orders": count,
                "genuine": _genuine,
                "false_decline_rate": _false_decline_rate,
                "approval_rate": _approval_rate,
            },
            y_true=y_true,
            y_pred=y_pred,
            sensitive_features={segmentation: [s[segmentation] for s in segments]},
            sample_params={"false_decline_rate": weighted, "approval_rate": weighted},
        )
        for segment, row in frame.by_group.iterrows():
            if row["genuine"] < min_genuine:
                continue
            rates.append(
                SegmentRates(
                    segmentation,
                    str(segment),
                    int(row["orders"]),
                    int(row["genuine"]),
                    float(row["false_decline_rate"]),
                    float(row["approval_rate"]),
                )
            )
    return rates


def scored_rates(
    data: Labelled,
    feature_names: Sequence[str],
    scores: Sequence[float],
    threshold: float,
    min_genuine: int,
) -> list[SegmentRates]:
    """The rates of declining ``data``'s orders scored at or above ``threshold``."""
    segments = segmenter(feature_names)
    return segment_rates(
        [segments(r.attempt, r.vector) for r in data.rows],
        data.labels,
        [score >= threshold for score in scores],
        min_genuine,
    )


def worst_ratio(rates: Sequence[SegmentRates], floor: float = RATE_FLOOR) -> float:
    """Within each segmentation, the worst false-decline rate over the best (rates below
    ``floor`` count as ``floor``); the largest of those."""
    worst = 1.0
    for segmentation in {r.segmentation for r in rates}:
        within = [r.false_decline_rate for r in rates if r.segmentation == segmentation]
        if len(within) > 1:
            worst = max(worst, max(max(within), floor) / max(min(within), floor))
    return worst


def fairness_report(
    rates: Sequence[SegmentRates], min_genuine: int, floor: float = RATE_FLOOR
) -> dict[str, Any]:
    """The report an artifact carries: every judged segment's rates and the worst ratio."""
    return {
        "false_decline_ratio": worst_ratio(rates, floor),
        "rate_floor": floor,
        "min_segment_genuine": min_genuine,
        "segments": [asdict(r) for r in rates],
    }


def rates_of_report(report: Mapping[str, Any]) -> list[SegmentRates]:
    return [SegmentRates(**r) for r in report.get("segments", [])]
