"""How a risk model is judged: the money its decisions cost, and the usual ranking and
calibration measures beside it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_curve


@dataclass(frozen=True)
class Costs:
    margin_rate: float  # share of a genuine order's amount lost when it is declined
    chargeback_fee_minor: int  # on top of the fraudulent amount, when fraud is approved


def decision_costs(
    scores: Sequence[float],
    labels: Sequence[int],
    amounts: Sequence[int],
    costs: Costs,
    thresholds: Sequence[float],
) -> np.ndarray:
    """The expected cost (minor units) of declining at or above each threshold: the
    fraud that passes (amount and fee) plus the margin of the genuine orders declined."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    a = np.asarray(amounts, dtype=np.float64)
    # Riskiest first: declining at a threshold declines a prefix of this order, so one
    # cumulative sum answers every threshold (no orders x thresholds matrix).
    order = np.argsort(-s, kind="stable")
    fraud_cost = np.where(y, a + costs.chargeback_fee_minor, 0.0)[order]
    margin = np.where(y, 0.0, a * costs.margin_rate)[order]
    caught = np.concatenate(([0.0], np.cumsum(fraud_cost)))
    lost = np.concatenate(([0.0], np.cumsum(margin)))
    declined = len(s) - np.searchsorted(np.sort(s), np.asarray(thresholds), side="left")
    result: np.ndarray = (caught[-1] - caught[declined]) + lost[declined]
    return result


def candidate_thresholds(scores: Sequence[float]) -> list[float]:
    """Every distinct score (each is where a decision changes), plus one above them all
    (approve everything)."""
    distinct = sorted(set(scores))
    return [*distinct, (distinct[-1] + 1.0) if distinct else 1.0]


def cheapest_threshold(
    scores: Sequence[float], labels: Sequence[int], amounts: Sequence[int], costs: Costs
) -> float:
    thresholds = candidate_thresholds(scores)
    spent = decision_costs(scores, labels, amounts, costs, thresholds)
    return float(thresholds[int(np.argmin(spent))])


def recall_at_fpr(scores: Sequence[float], labels: Sequence[int], fpr: float = 0.01) -> float:
    """The largest share of fraud caught while declining at most ``fpr`` of genuine orders."""
    if not any(labels) or all(labels):
        return 0.0
    false_rates, true_rates, _ = roc_curve(labels, scores)
    return float(max(t for f, t in zip(false_rates, true_rates, strict=True) if f <= fpr))


def evaluate_scores(
    scores: Sequence[float],
    labels: Sequence[int],
    amounts: Sequence[int],
    costs: Costs,
    threshold: float,
) -> dict[str, float]:
    y = np.asarray(labels, dtype=bool)
    declined = np.asarray(scores) >= threshold
    [cost] = decision_costs(scores, labels, amounts, costs, [threshold])
    [approve_all] = decision_costs(scores, labels, amounts, costs, [float("inf")])
    genuine = max(1, int((~y).sum()))
    fraud = max(1, int(y.sum()))
    return {
        "orders": len(labels),
        "fraud": int(y.sum()),
        "expected_cost_minor": float(cost),
        "approve_all_cost_minor": float(approve_all),
        "pr_auc": float(average_precision_score(y, scores)) if y.any() else 0.0,
        "recall_at_1pct_fpr": recall_at_fpr(scores, labels, 0.01),
        "brier": float(brier_score_loss(y, np.clip(scores, 0.0, 1.0))),
        "threshold": float(threshold),
        "decline_rate": float(declined.mean()) if len(labels) else 0.0,
        "false_decline_rate": float((declined & ~y).sum() / genuine),
        "recall": float((declined & y).sum() / fraud),
    }
