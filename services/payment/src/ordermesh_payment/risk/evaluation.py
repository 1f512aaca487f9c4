"""``ordermesh risk evaluate``: saved artifacts judged on the holdout of an event log,
with the pictures: precision against recall, cost against threshold, calibration."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ordermesh_payment.risk.dataset import Labelled
from ordermesh_payment.risk.drift import PSI_MOVING, PSI_SHIFTED, drift, psi, shares
from ordermesh_payment.risk.fairness import SegmentRates, scored_rates
from ordermesh_payment.risk.features import FeatureDefinition
from ordermesh_payment.risk.metrics import Costs, decision_costs, evaluate_scores
from ordermesh_payment.risk.models import Artifact, load_artifact
from ordermesh_payment.risk.training import (
    TrainingSettings,
    load_log,
    time_split,
    training_data,
)


@dataclass(frozen=True)
class Scored:
    artifact: Artifact
    scores: list[float]
    metrics: dict[str, Any]


def load_artifacts(folder: Path, definition: FeatureDefinition) -> list[Artifact]:
    """Every artifact in ``folder`` (``*.json`` but the comparison), refusing any trained
    on another feature schema."""
    paths = sorted(p for p in folder.glob("*.json") if p.stem not in ("comparison", "evaluation"))
    if not paths:
        raise FileNotFoundError(f"no model artifact in {folder}")
    return [load_artifact(p, definition.schema_hash) for p in paths]


def evaluate_folder(
    events_folder: Path,
    models_folder: Path,
    out: Path,
    definition: FeatureDefinition,
    costs: Costs,
    settings: TrainingSettings,
    min_segment_genuine: int = 100,
) -> list[dict[str, Any]]:
    """Score the holdout of ``events_folder`` with each artifact at its own threshold
    (and every week of the log, for drift);
    write evaluation.json (with per-segment rates) and the plots into ``out``; returns
    one line per model."""
    artifacts = load_artifacts(models_folder, definition)
    data, _ = training_data(load_log(events_folder), definition, settings)
    holdout = time_split(data, settings.validation_share, settings.holdout_share).holdout
    vectors = [r.vector for r in holdout.rows]
    scored = []
    for artifact in artifacts:
        scores = artifact.model.scores(vectors)
        metrics = evaluate_scores(
            scores, holdout.labels, holdout.amounts, costs, artifact.threshold
        )
        scored.append(Scored(artifact, scores, metrics))
    out.mkdir(parents=True, exist_ok=True)
    plot_pr_curves(scored, holdout.labels, out / "pr_curve.png")
    plot_cost_by_threshold(
        scored, holdout.labels, holdout.amounts, costs, out / "cost_vs_threshold.png"
    )
    plot_calibration(scored, holdout.labels, out / "calibration.png")
    segments = {
        s.artifact.kind: scored_rates(
            holdout, s.artifact.feature_names, s.scores, s.artifact.threshold, min_segment_genuine
        )
        for s in scored
    }
    plot_segments(segments, out / "segments.png")
    weekly = {
        s.artifact.kind: weekly_score_psi(s.artifact, data) for s in scored if s.artifact.reference
    }
    plot_drift(weekly, out / "drift.png")
    psi = {
        s.artifact.kind: drift(s.artifact.reference, s.artifact.feature_names, vectors, s.scores)
        for s in scored
        if s.artifact.reference
    }
    table = [
        {
            "kind": s.artifact.kind,
            "version": s.artifact.version,
            **s.metrics,
            "segments": [asdict(r) for r in segments[s.artifact.kind]],
            "psi": psi.get(s.artifact.kind, {}),
        }
        for s in scored
    ]
    (out / "evaluation.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    return table


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curves(scored: Sequence[Scored], labels: Sequence[int], path: Path) -> None:
    from sklearn.metrics import precision_recall_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for s in scored:
        precision, recall, _ = precision_recall_curve(labels, s.scores)
        ax.plot(recall, precision, label=f"{s.artifact.kind} (PR-AUC {s.metrics['pr_auc']:.3f})")
    ax.set(
        xlabel="recall (share of fraud declined)",
        ylabel="precision",
        title="Holdout: precision against recall",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cost_by_threshold(
    scored: Sequence[Scored],
    labels: Sequence[int],
    amounts: Sequence[int],
    costs: Costs,
    path: Path,
) -> None:
    plt = _pyplot()
    thresholds = np.linspace(0.0, 1.0, 201)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for s in scored:
        spent = decision_costs(s.scores, labels, amounts, costs, thresholds.tolist()) / 100.0
        (line,) = ax.plot(thresholds, spent, label=s.artifact.kind)
        chosen = s.metrics["expected_cost_minor"] / 100.0
        ax.plot([s.artifact.threshold], [chosen], "o", color=line.get_color())
    ax.set(
        xlabel="threshold (decline at or above)",
        ylabel="expected cost on the holdout (major units)",
        title="Cost against threshold (dot: the threshold chosen)",
    )
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_calibration(scored: Sequence[Scored], labels: Sequence[int], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    y = np.asarray(labels, dtype=np.float64)
    for s in scored:
        scores = np.asarray(s.scores)
        bins = np.minimum((scores * 10).astype(int), 9)  # ten equal-width bins
        # A bin of a handful of orders says nothing: only those of ten or more are drawn.
        full = [b for b in range(10) if (bins == b).sum() >= 10]
        mean_score = [scores[bins == b].mean() for b in full]
        fraud_rate = [y[bins == b].mean() for b in full]
        ax.plot(
            mean_score,
            fraud_rate,
            "o-",
            label=f"{s.artifact.kind} (Brier {s.metrics['brier']:.4f})",
        )
    ax.set(
        xlabel="mean score in bin",
        ylabel="observed fraud rate",
        title="Holdout: calibration (bins of 10+ orders)",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_segments(segments: dict[str, list[SegmentRates]], path: Path) -> None:
    """Per-segment false-decline rates, one bar per model: who bears the declines."""
    plt = _pyplot()
    labels = sorted({(r.segmentation, r.segment) for rates in segments.values() for r in rates})
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(1, len(segments))
    x = np.arange(len(labels))
    for i, (kind, rates) in enumerate(segments.items()):
        by = {(r.segmentation, r.segment): r.false_decline_rate * 100 for r in rates}
        ax.bar(x + i * width, [by.get(label, 0.0) for label in labels], width, label=kind)
    ax.set_xticks(x + width * (len(segments) - 1) / 2)
    short = {"billing_country": "country", "payment_token": "token"}
    ax.set_xticklabels([f"{seg}\n{short.get(name, name)}" for name, seg in labels], fontsize=8)
    ax.set(ylabel="false-decline rate (%)", title="Holdout: false declines by segment")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


WEEK_MS = 7 * 86_400_000


def weekly_score_psi(artifact: Artifact, data: Labelled) -> list[tuple[int, float]]:
    """(week number since the first order, score PSI against the training reference)
    for every week of the labelled log."""
    ref = artifact.reference["score"]
    if not data.rows:
        return []
    first = data.rows[0].attempt.at_ms
    weeks: dict[int, list[list[float]]] = {}
    for row in data.rows:
        weeks.setdefault((row.attempt.at_ms - first) // WEEK_MS, []).append(row.vector)
    return [
        (week, psi(ref["shares"], shares(artifact.model.scores(vectors), ref["edges"])))
        for week, vectors in sorted(weeks.items())
    ]


def plot_drift(weekly: dict[str, list[tuple[int, float]]], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for kind, points in weekly.items():
        ax.plot([w for w, _ in points], [v for _, v in points], "o-", label=kind)
    ax.axhline(PSI_MOVING, color="orange", linestyle=":", label=f"moving ({PSI_MOVING})")
    ax.axhline(PSI_SHIFTED, color="red", linestyle=":", label=f"shifted ({PSI_SHIFTED})")
    ax.set(
        xlabel="week of the log",
        ylabel="score PSI against training",
        title="Score drift by week",
    )
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
