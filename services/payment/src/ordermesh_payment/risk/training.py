"""Training and comparing the risk models on a time-based holdout.

The labelled rows (``dataset``) are split by time: the oldest part fits the models, the
next picks each model's threshold (the one that costs least there), the newest is the
holdout every model is judged on, as it would have been judged had it gone live then."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ordermesh_payment.risk.dataset import Labelled, Row, labelled, replay
from ordermesh_payment.risk.drift import drift, reference
from ordermesh_payment.risk.events import EVENTS_FILE, Event, read_events
from ordermesh_payment.risk.fairness import fairness_report, scored_rates
from ordermesh_payment.risk.features import FeatureDefinition
from ordermesh_payment.risk.metrics import Costs, cheapest_threshold, evaluate_scores
from ordermesh_payment.risk.models import (
    BASELINE_RULES,
    Artifact,
    LightGBMModel,
    LogisticModel,
    Model,
    RulesModel,
)

DAY_MS = 86_400_000


@dataclass(frozen=True)
class TrainingSettings:
    since: datetime | None = None  # the oldest order to learn from
    until: datetime | None = None  # labels as known then; default: the log's last event
    maturity_days: float = 45.0  # an order younger than this at ``until`` has no label yet
    validation_share: float = 0.2
    holdout_share: float = 0.2
    seed: int = 7
    boosting_rounds: int = 300
    min_segment_genuine: int = 100  # fairness: smaller segments are not reported


@dataclass(frozen=True)
class Split:
    fit: Labelled
    validation: Labelled
    holdout: Labelled


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _part(data: Labelled, start: int, stop: int) -> Labelled:
    return Labelled(data.rows[start:stop], data.labels[start:stop])


def time_split(data: Labelled, validation_share: float, holdout_share: float) -> Split:
    n = len(data.rows)
    fit_end = int(n * (1 - validation_share - holdout_share))
    validation_end = int(n * (1 - holdout_share))
    return Split(
        _part(data, 0, fit_end),
        _part(data, fit_end, validation_end),
        _part(data, validation_end, n),
    )


def _matrix(rows: Sequence[Row]) -> np.ndarray:
    return np.asarray([r.vector for r in rows], dtype=np.float64)


def fit_logistic(fit: Labelled) -> LogisticModel:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = _matrix(fit.rows)
    scaler = StandardScaler().fit(x)
    scales = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    regression = LogisticRegression(C=0.5, max_iter=2000)
    regression.fit((x - scaler.mean_) / scales, np.asarray(fit.labels))
    return LogisticModel(
        [float(m) for m in scaler.mean_],
        [float(s) for s in scales],
        [float(c) for c in regression.coef_[0]],
        float(regression.intercept_[0]),
    )


def fit_lightgbm(
    fit: Labelled, validation: Labelled, names: Sequence[str], settings: TrainingSettings
) -> LightGBMModel:
    import lightgbm

    params = {
        "objective": "binary",
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_data_in_leaf": 20,
        "feature_fraction": 0.9,
        "lambda_l2": 1.0,
        "seed": settings.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 1,  # small data: threads cost more than they give
        "verbose": -1,
    }
    train = lightgbm.Dataset(_matrix(fit.rows), np.asarray(fit.labels), feature_name=list(names))
    valid = lightgbm.Dataset(
        _matrix(validation.rows), np.asarray(validation.labels), reference=train
    )
    booster = lightgbm.train(
        params,
        train,
        num_boost_round=settings.boosting_rounds,
        valid_sets=[valid],
        callbacks=[lightgbm.early_stopping(30, verbose=False)],
    )
    return LightGBMModel(booster.model_to_string(num_iteration=booster.best_iteration))


def load_log(folder: Path) -> list[Event]:
    return list(read_events(folder / EVENTS_FILE))


def training_data(
    events: Sequence[Event], definition: FeatureDefinition, settings: TrainingSettings
) -> tuple[Labelled, dict[str, str]]:
    """The matured, labelled rows in time order, and the window they cover."""
    rows = replay(events, definition)
    as_of = _ms(settings.until) if settings.until else max(e.at_ms for e in events)
    since = _ms(settings.since) if settings.since else None
    data = labelled(rows, events, as_of, int(settings.maturity_days * DAY_MS), since)
    if not data.rows:
        raise ValueError("no matured, authorized payment in the training window")
    window = {
        "since": _iso(data.rows[0].attempt.at_ms),
        "until": _iso(data.rows[-1].attempt.at_ms),
        "labels_as_of": _iso(as_of),
    }
    return data, window


def train(
    events: Sequence[Event],
    definition: FeatureDefinition,
    costs: Costs,
    settings: TrainingSettings,
) -> list[Artifact]:
    """The rules baseline, logistic regression and LightGBM, each with its threshold
    picked on the validation part and its metrics measured on the holdout."""
    data, window = training_data(events, definition, settings)
    split = time_split(data, settings.validation_share, settings.holdout_share)
    if sum(split.fit.labels) == 0 or sum(split.validation.labels) == 0:
        raise ValueError("too few chargebacks to train on: simulate more orders or more fraud")
    names = definition.names
    models: list[Model] = [
        RulesModel(BASELINE_RULES, names),
        fit_logistic(split.fit),
        fit_lightgbm(split.fit, split.validation, names, settings),
    ]
    holdout_window = {
        "since": _iso(split.holdout.rows[0].attempt.at_ms),
        "until": _iso(split.holdout.rows[-1].attempt.at_ms),
    }
    artifacts = []
    for model in models:
        valid_scores = model.scores([r.vector for r in split.validation.rows])
        threshold = cheapest_threshold(
            valid_scores, split.validation.labels, split.validation.amounts, costs
        )
        holdout_scores = model.scores([r.vector for r in split.holdout.rows])
        metrics: dict[str, Any] = evaluate_scores(
            holdout_scores, split.holdout.labels, split.holdout.amounts, costs, threshold
        )
        metrics["holdout_window"] = holdout_window
        metrics["costs"] = {
            "margin_rate": costs.margin_rate,
            "chargeback_fee_minor": costs.chargeback_fee_minor,
        }
        fit_vectors = [r.vector for r in split.fit.rows]
        ref = reference(names, fit_vectors, model.scores(fit_vectors))
        metrics["psi_holdout"] = _psi_summary(
            drift(ref, names, [r.vector for r in split.holdout.rows], holdout_scores)
        )
        fairness = fairness_report(
            scored_rates(
                split.holdout, names, holdout_scores, threshold, settings.min_segment_genuine
            ),
            settings.min_segment_genuine,
        )
        artifacts.append(
            Artifact(
                model, names, definition.schema_hash, threshold, window, metrics, ref, fairness
            )
        )
    return artifacts


def _psi_summary(measured: dict[str, Any], top: int = 5) -> dict[str, Any]:
    """The score's PSI and the features that moved most."""
    features = sorted(measured["features"].items(), key=lambda kv: -kv[1])[:top]
    return {"score": measured["score"], "top_features": dict(features)}


def comparison(artifacts: Sequence[Artifact]) -> list[dict[str, Any]]:
    """One line per model: the holdout numbers the docs table shows."""
    keys = (
        "expected_cost_minor", "approve_all_cost_minor", "pr_auc", "recall_at_1pct_fpr",
        "brier", "threshold", "decline_rate", "false_decline_rate", "recall", "orders", "fraud",
    )  # fmt: skip
    return [
        {"kind": a.kind, "version": a.version, **{k: a.metrics.get(k) for k in keys}}
        for a in artifacts
    ]


def train_to_folder(
    events: Sequence[Event],
    out: Path,
    definition: FeatureDefinition,
    costs: Costs,
    settings: TrainingSettings,
) -> list[dict[str, Any]]:
    """Train on ``events`` (a log folder's events.jsonl, or payment's records); write
    ``<kind>.json`` artifacts and ``comparison.json`` into ``out``; returns the
    comparison."""
    if not events:
        raise ValueError("no payment recorded to train on")
    artifacts = train(events, definition, costs, settings)
    out.mkdir(parents=True, exist_ok=True)
    for artifact in artifacts:
        artifact.save(out / f"{artifact.kind}.json")
    table = comparison(artifacts)
    (out / "comparison.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    return table
