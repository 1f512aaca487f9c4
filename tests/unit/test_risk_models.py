"""The risk models: trained on simulated data, compared by cost on a time-based holdout,
saved as artifacts that load without running code and refuse what they cannot score."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from ordermesh_cli.main import app
from ordermesh_payment.risk.dataset import Labelled
from ordermesh_payment.risk.fairness import SegmentRates, rates_of_report, worst_ratio
from ordermesh_payment.risk.gate import GateSettings, check_promotion
from ordermesh_payment.risk.metrics import (
    Costs,
    cheapest_threshold,
    decision_costs,
    recall_at_fpr,
)
from ordermesh_payment.risk.models import (
    BASELINE_RULES,
    Artifact,
    ArtifactError,
    LogisticModel,
    Rule,
    RulesModel,
    load_artifact,
)
from ordermesh_payment.risk.settings import RiskSettings
from ordermesh_payment.risk.simulate import SimulationSettings, simulate
from ordermesh_payment.risk.training import (
    TrainingSettings,
    fit_logistic,
    load_log,
    time_split,
    training_data,
)

COSTS = Costs(margin_rate=0.25, chargeback_fee_minor=1500)
DEFINITION = RiskSettings().feature_definition()
# Short chargeback delays so that a month of orders has matured labels.
SIMULATION = SimulationSettings(
    orders=3000, fraud_share=0.05, seed=7, days=30, chargeback_delay_days=(3.0, 10.0)
)
MATURITY = ["--maturity-days", "10"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated log, the three models trained on it, and their evaluation."""
    root = tmp_path_factory.mktemp("risk")
    simulate(SIMULATION, root / "sim")
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["risk", "train", "--events", str(root / "sim"), "--out", str(root / "models"), *MATURITY],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        ["risk", "evaluate", "--events", str(root / "sim"), "--models", str(root / "models"),
         "--out", str(root / "evaluation"), *MATURITY],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return root


def _metrics(root: Path) -> dict[str, dict[str, Any]]:
    lines = json.loads((root / "evaluation" / "evaluation.json").read_text())
    return {line["kind"]: line for line in lines}


def test_the_costs_of_a_threshold_add_fraud_passed_and_margin_lost() -> None:
    scores, labels, amounts = [0.9, 0.5, 0.5, 0.1], [1, 0, 1, 0], [1000, 2000, 3000, 4000]
    spent = decision_costs(scores, labels, amounts, COSTS, [0.0, 0.5, 0.9, 2.0])
    # decline all: two genuine margins; at 0.5: one margin; at 0.9: fraud of 3000
    # passes; above all: both frauds pass, each with its fee.
    assert spent.tolist() == [1500.0, 500.0, 4500.0, 7000.0]
    assert cheapest_threshold(scores, labels, amounts, COSTS) == 0.5


def test_recall_at_one_percent_false_positives_counts_only_what_stays_under_it() -> None:
    labels = [1] * 10 + [0] * 200
    scores = [0.9] * 5 + [0.4] * 5 + [0.5] * 3 + [0.1] * 197  # 1.5% of genuine above 0.4
    assert recall_at_fpr(scores, labels, 0.01) == 0.5
    assert recall_at_fpr(scores, labels, 0.02) == 1.0


def test_the_trees_beat_the_rules_baseline_on_expected_cost_and_pr_auc(trained: Path) -> None:
    metrics = _metrics(trained)
    assert set(metrics) == {"rules", "logistic", "lightgbm"}
    rules, trees = metrics["rules"], metrics["lightgbm"]
    assert trees["fraud"] > 5
    assert trees["expected_cost_minor"] < rules["expected_cost_minor"]
    assert trees["expected_cost_minor"] < trees["approve_all_cost_minor"]
    assert trees["pr_auc"] > rules["pr_auc"]
    assert 0 <= trees["brier"] < rules["brier"]


def test_evaluate_reproduces_the_metrics_train_recorded_and_draws_the_plots(
    trained: Path,
) -> None:
    evaluated = _metrics(trained)
    for kind in ("rules", "logistic", "lightgbm"):
        artifact = load_artifact(trained / "models" / f"{kind}.json", DEFINITION.schema_hash)
        assert artifact.metrics["expected_cost_minor"] == evaluated[kind]["expected_cost_minor"]
        assert artifact.metrics["pr_auc"] == evaluated[kind]["pr_auc"]
        segments = {(s["segmentation"], s["segment"]) for s in evaluated[kind]["segments"]}
        assert ("customer", "returning") in segments
    pictures = ("pr_curve.png", "cost_vs_threshold.png", "calibration.png", "segments.png")
    for picture in (*pictures, "drift.png"):
        assert (trained / "evaluation" / picture).read_bytes()[:4] == b"\x89PNG"


def test_an_artifact_carries_its_version_window_schema_and_metrics(trained: Path) -> None:
    data = json.loads((trained / "models" / "lightgbm.json").read_text())
    assert data["format"] == "ordermesh-risk-model/1"
    assert data["version"].startswith("lightgbm-")
    assert data["feature_schema_hash"] == DEFINITION.schema_hash
    assert data["feature_names"] == list(DEFINITION.names)
    assert set(data["training_window"]) == {"since", "until", "labels_as_of"}
    assert {"expected_cost_minor", "pr_auc", "recall_at_1pct_fpr", "brier"} <= set(data["metrics"])
    assert data["model"]["model_text"].startswith("tree")  # LightGBM's text format
    assert set(data["reference"]) == {"score", "features"}  # for drift (PSI)
    assert set(data["reference"]["features"]) == set(DEFINITION.names)
    assert "score" in data["metrics"]["psi_holdout"]


def test_an_artifact_carries_the_fairness_report_evaluate_reproduces(trained: Path) -> None:
    """Train records each model's per-segment rates on the holdout; evaluating the same
    artifact on the same log finds the same rates."""
    evaluated = _metrics(trained)
    for kind in ("rules", "logistic", "lightgbm"):
        fairness = load_artifact(trained / "models" / f"{kind}.json").fairness
        assert fairness["segments"] == evaluated[kind]["segments"], kind
        assert fairness["min_segment_genuine"] == 100
        assert fairness["false_decline_ratio"] == worst_ratio(rates_of_report(fairness))
        judged = {s["segmentation"] for s in fairness["segments"]}
        assert judged == {"billing_country", "customer", "payment_token"}


def test_an_artifact_of_another_feature_schema_is_refused(trained: Path) -> None:
    with pytest.raises(ArtifactError, match="feature schema"):
        load_artifact(trained / "models" / "logistic.json", expected_schema_hash="0" * 16)


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # truncated
        lambda text: text.replace('"threshold": ', '"threshold": 1', 1),  # edited
        lambda text: json.dumps({**json.loads(text), "model": {"model_text": "garbage"}}),
        lambda text: "\x80\x04pickle",
    ],
)
def test_a_damaged_artifact_is_refused_not_scored(
    trained: Path, tmp_path: Path, damage: object
) -> None:
    text = (trained / "models" / "lightgbm.json").read_text()
    broken = tmp_path / "lightgbm.json"
    broken.write_text(damage(text))  # type: ignore[operator]
    with pytest.raises(ArtifactError):
        load_artifact(broken, DEFINITION.schema_hash)


def test_the_logistic_artifact_scores_as_scikit_learn_does(trained: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    data, _ = training_data(
        load_log(trained / "sim"), DEFINITION, TrainingSettings(maturity_days=10)
    )
    fit = time_split(data, 0.2, 0.2).fit
    ours = fit_logistic(fit)
    x = np.asarray([r.vector for r in fit.rows])
    theirs = LogisticRegression()
    theirs.classes_ = np.array([0, 1])
    theirs.coef_ = np.asarray([ours.coefficients]) / np.asarray(ours.scales)
    theirs.intercept_ = np.array(
        [ours.intercept - float(np.sum(theirs.coef_[0] * np.asarray(ours.means)))]
    )
    expected = theirs.predict_proba(x[:200])[:, 1]
    assert np.allclose(ours.scores(x[:200].tolist()), expected, rtol=1e-9, atol=1e-12)
    saved = LogisticModel.from_payload(json.loads(json.dumps(ours.payload())))
    assert saved.scores(x[:50].tolist()) == ours.scores(x[:50].tolist())


def test_train_says_plainly_when_there_is_too_little_data(tmp_path: Path) -> None:
    simulate(SimulationSettings(orders=50, fraud_share=0.0, days=3), tmp_path / "sim")
    result = CliRunner().invoke(
        app, ["risk", "train", "--events", str(tmp_path / "sim"), "--out", str(tmp_path / "m")]
    )
    assert result.exit_code == 1
    assert "error:" in result.output


def _holdout(trained: Path) -> Labelled:
    settings = TrainingSettings(maturity_days=10)
    data, _ = training_data(load_log(trained / "sim"), DEFINITION, settings)
    return time_split(data, settings.validation_share, settings.holdout_share).holdout


def _biased() -> Artifact:
    """The baseline plus a rule that declines every new customer."""
    rules = (*BASELINE_RULES, Rule("new_customer", 0.9, (("customer_seen_before", "==", 0),)))
    return Artifact(
        RulesModel(rules, DEFINITION.names), DEFINITION.names, DEFINITION.schema_hash, 0.4, {}, {}
    )


# Few orders per segment in a test-sized holdout: a looser bound than the default.
GATE = GateSettings(max_false_decline_ratio=20.0, min_segment_genuine=20)


def test_the_gate_lets_the_trees_replace_the_rules(trained: Path) -> None:
    rules = load_artifact(trained / "models" / "rules.json")
    trees = load_artifact(trained / "models" / "lightgbm.json")
    report = check_promotion(rules, trees, _holdout(trained), COSTS, GATE)
    assert report.accepted, report.reasons
    assert report.saving_interval[0] > 0
    assert {s.segmentation for s in report.segments} == {
        "billing_country",
        "customer",
        "payment_token",
    }


def test_the_gate_refuses_a_challenger_biased_against_new_customers(trained: Path) -> None:
    rules = load_artifact(trained / "models" / "rules.json")
    report = check_promotion(rules, _biased(), _holdout(trained), COSTS, GATE)
    assert not report.accepted
    assert report.false_decline_ratio > GATE.max_false_decline_ratio
    assert any("unevenly" in reason for reason in report.reasons)
    new = [s for s in report.segments if (s.segmentation, s.segment) == ("customer", "new")]
    assert new[0].false_decline_rate == 1.0


def test_the_gate_refuses_a_challenger_that_costs_more_than_the_champion(trained: Path) -> None:
    rules = load_artifact(trained / "models" / "rules.json")
    trees = load_artifact(trained / "models" / "lightgbm.json")
    report = check_promotion(trees, rules, _holdout(trained), COSTS, GATE)
    assert not report.accepted
    assert report.cost_saving_minor < 0
    assert any("does not beat the champion" in reason for reason in report.reasons)


def test_the_worst_ratio_floors_tiny_rates_and_compares_within_a_segmentation() -> None:
    rates = [
        SegmentRates("country", "DE", 100, 100, 0.0, 1.0),
        SegmentRates("country", "FR", 100, 100, 0.004, 1.0),  # both under the floor
        SegmentRates("customer", "new", 100, 100, 0.05, 0.9),
        SegmentRates("customer", "returning", 100, 100, 0.01, 0.99),
    ]
    assert worst_ratio(rates[:2], floor=0.005) == 1.0
    assert worst_ratio(rates, floor=0.005) == pytest.approx(5.0)


def test_an_artifact_with_another_threshold_is_another_version_that_never_declines_above_1(
    tmp_path: Path,
) -> None:
    from ordermesh_payment.risk.tools import with_threshold

    n = len(DEFINITION.names)
    model = LogisticModel([0.0] * n, [1.0] * n, [0.0] * n, 5.0)  # scores 0.993 for any row
    original = Artifact(model, DEFINITION.names, DEFINITION.schema_hash, 0.5, {}, {})
    original.save(tmp_path / "model.json")
    made = with_threshold(tmp_path / "model.json", 2.0, tmp_path / "scoring-only.json")
    scoring_only = load_artifact(tmp_path / "scoring-only.json", DEFINITION.schema_hash)
    assert made["version"] == scoring_only.version != original.version
    [score] = scoring_only.model.scores([[0.0] * n])
    assert score >= original.threshold  # the original declines it
    assert score < scoring_only.threshold  # this one does not
