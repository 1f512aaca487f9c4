"""Population stability (PSI): how far today's features and scores have moved from the
ones a model was trained on.

A model's artifact keeps a reference: for the score and for each feature, bin edges
(deciles of the training data) and the share of training rows in each bin. PSI sums,
over the bins, (actual - expected) x ln(actual / expected). Rule of thumb, and the
alert thresholds docs/risk.md documents: below 0.1 stable, 0.1 to 0.25 moving, above
0.25 shifted (retrain, or find what broke upstream)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

BINS = 10
# An empty bin would make ln(0): shares are floored at this.
SHARE_FLOOR = 1e-4
PSI_MOVING = 0.1
PSI_SHIFTED = 0.25


def bin_edges(values: Sequence[float], bins: int = BINS) -> list[float]:
    """Inner edges at the quantiles of ``values`` (duplicates removed: a feature that is
    mostly 0 has few bins)."""
    ordered = sorted(values)
    if not ordered:
        return []
    edges = {ordered[min(len(ordered) - 1, (len(ordered) * i) // bins)] for i in range(1, bins)}
    return sorted(edges)


def shares(values: Sequence[float], edges: Sequence[float]) -> list[float]:
    """The share of ``values`` in each of the len(edges) + 1 bins: (-inf, e1], (e1, e2],
    ..., (ek, inf). The last bin holds what lies above everything seen in training, so
    a feature that was constant there still shows when it moves."""
    counts = [0] * (len(edges) + 1)
    for value in values:
        counts[bisect.bisect_left(edges, value)] += 1
    total = max(1, len(values))
    return [c / total for c in counts]


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, SHARE_FLOOR), max(a, SHARE_FLOOR)
        total += (a - e) * math.log(a / e)
    return total


def reference(
    names: Sequence[str], vectors: Sequence[Sequence[float]], scores: Sequence[float]
) -> dict[str, Any]:
    """What an artifact keeps to measure drift against: edges and shares of the score
    and of every feature, on the rows it was trained on."""
    columns = list(zip(*vectors, strict=True)) if vectors else [() for _ in names]
    features = {}
    for name, column in zip(names, columns, strict=True):
        edges = bin_edges(column)
        features[name] = {"edges": edges, "shares": shares(column, edges)}
    score_edges = bin_edges(scores)
    return {
        "score": {"edges": score_edges, "shares": shares(scores, score_edges)},
        "features": features,
    }


def drift(
    ref: dict[str, Any],
    names: Sequence[str],
    vectors: Sequence[Sequence[float]],
    scores: Sequence[float],
) -> dict[str, Any]:
    """PSI of the score and of every feature of ``vectors`` against ``ref``."""
    score = ref["score"]
    result: dict[str, Any] = {"score": psi(score["shares"], shares(scores, score["edges"]))}
    columns = list(zip(*vectors, strict=True)) if vectors else [() for _ in names]
    result["features"] = {
        name: psi(ref["features"][name]["shares"], shares(column, ref["features"][name]["edges"]))
        for name, column in zip(names, columns, strict=True)
        if name in ref["features"]
    }
    return result


def level(value: float) -> str:
    if value > PSI_SHIFTED:
        return "shifted"
    return "moving" if value > PSI_MOVING else "stable"
