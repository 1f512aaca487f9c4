"""The promotion gate: a challenger becomes champion only when, on the same holdout,
it costs less than the champion with confidence, and no customer segment bears its
false declines far more than another (the segments: ``risk/fairness.py``)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from ordermesh_payment.risk.dataset import Labelled
from ordermesh_payment.risk.fairness import RATE_FLOOR, SegmentRates, scored_rates, worst_ratio
from ordermesh_payment.risk.metrics import Costs
from ordermesh_payment.risk.models import Artifact


@dataclass(frozen=True)
class GateSettings:
    max_false_decline_ratio: float = 3.0
    rate_floor: float = RATE_FLOOR
    min_segment_genuine: int = 100
    confidence: float = 0.95
    bootstrap_rounds: int = 400
    seed: int = 7


@dataclass
class GateReport:
    accepted: bool
    reasons: list[str]
    cost_saving_minor: float  # champion's cost minus the challenger's, on the holdout
    saving_interval: tuple[float, float]  # its bootstrap confidence interval
    false_decline_ratio: float
    segments: list[SegmentRates] = field(default_factory=list)


def paired_saving_interval(
    champion: Sequence[float],
    challenger: Sequence[float],
    settings: GateSettings,
) -> tuple[float, float]:
    """A bootstrap interval of the total saving: orders resampled with replacement,
    both models judged on the same resample."""
    n = len(champion)
    rng = random.Random(settings.seed)
    totals = []
    for _ in range(settings.bootstrap_rounds):
        picks = [rng.randrange(n) for _ in range(n)]
        totals.append(sum(champion[i] - challenger[i] for i in picks))
    totals.sort()
    tail = (1 - settings.confidence) / 2
    low = totals[int(tail * (len(totals) - 1))]
    high = totals[int((1 - tail) * (len(totals) - 1))]
    return low, high


def _per_order_costs(
    scores: Sequence[float], data: Labelled, threshold: float, costs: Costs
) -> list[float]:
    """Each order's cost under the decisions (see metrics.decision_costs)."""
    spent = []
    for score, fraud, amount in zip(scores, data.labels, data.amounts, strict=True):
        declined = score >= threshold
        if fraud and not declined:
            spent.append(float(amount + costs.chargeback_fee_minor))
        elif declined and not fraud:
            spent.append(amount * costs.margin_rate)
        else:
            spent.append(0.0)
    return spent


def check_promotion(
    champion: Artifact | None,
    challenger: Artifact,
    holdout: Labelled,
    costs: Costs,
    settings: GateSettings,
) -> GateReport:
    """Whether ``challenger`` may replace ``champion``, judged on ``holdout``."""
    vectors = [r.vector for r in holdout.rows]
    challenger_scores = challenger.model.scores(vectors)
    segments = scored_rates(
        holdout,
        challenger.feature_names,
        challenger_scores,
        challenger.threshold,
        settings.min_segment_genuine,
    )
    ratio = worst_ratio(segments, settings.rate_floor)
    reasons = []
    if ratio > settings.max_false_decline_ratio:
        reasons.append(
            f"false declines fall unevenly: worst segment {ratio:.1f}x the best "
            f"(bound {settings.max_false_decline_ratio:.1f}x)"
        )
    saving, interval = 0.0, (0.0, 0.0)
    if champion is not None:
        theirs = _per_order_costs(
            champion.model.scores(vectors), holdout, champion.threshold, costs
        )
        ours = _per_order_costs(challenger_scores, holdout, challenger.threshold, costs)
        saving = sum(theirs) - sum(ours)
        interval = paired_saving_interval(theirs, ours, settings)
        if interval[0] <= 0:
            reasons.append(
                f"does not beat the champion's cost with {settings.confidence:.0%} "
                f"confidence: saving {saving / 100:.2f}, interval "
                f"[{interval[0] / 100:.2f}, {interval[1] / 100:.2f}]"
            )
    return GateReport(not reasons, reasons, saving, interval, ratio, segments)
