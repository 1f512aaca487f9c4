"""Population stability: zero for the training distribution, large when it moves."""

from __future__ import annotations

import random

import pytest

from ordermesh_payment.risk.drift import bin_edges, drift, level, psi, reference, shares

NAMES = ("amount", "flag")


def _rows(n: int, shift: float, seed: int) -> tuple[list[list[float]], list[float]]:
    rng = random.Random(seed)
    vectors = [[rng.gauss(100 + shift, 20), float(rng.random() < 0.1)] for _ in range(n)]
    scores = [min(1.0, max(0.0, rng.gauss(0.1 + shift / 400, 0.05))) for _ in range(n)]
    return vectors, scores


def test_the_training_distribution_itself_does_not_drift() -> None:
    vectors, scores = _rows(4000, 0, seed=1)
    ref = reference(NAMES, vectors, scores)
    again, again_scores = _rows(4000, 0, seed=2)  # the same distribution, new draws
    measured = drift(ref, NAMES, again, again_scores)
    assert measured["score"] < 0.05
    assert all(value < 0.05 for value in measured["features"].values())
    assert level(measured["score"]) == "stable"


def test_a_shifted_feature_and_score_cross_the_alert_threshold() -> None:
    vectors, scores = _rows(4000, 0, seed=1)
    ref = reference(NAMES, vectors, scores)
    moved, moved_scores = _rows(4000, 30, seed=3)  # amounts 1.5 standard deviations up
    measured = drift(ref, NAMES, moved, moved_scores)
    assert measured["features"]["amount"] > 0.25
    assert measured["features"]["flag"] < 0.05  # untouched
    assert level(measured["features"]["amount"]) == "shifted"


def test_bins_follow_the_quantiles_and_shares_add_up() -> None:
    edges = bin_edges([float(i) for i in range(100)])
    assert edges == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]
    assert sum(shares([float(i) for i in range(100)], edges)) == pytest.approx(1.0)
    assert bin_edges([0.0] * 50 + [1.0] * 50) == [0.0, 1.0]  # few distinct values, few bins
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert psi([0.5, 0.5], [1.0, 0.0]) > 1  # an empty bin is floored, not infinite
