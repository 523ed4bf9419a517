"""Metric functions on hand-made arrays, where the right answer is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from leukocli.evaluation.metrics import (
    classification_metrics,
    expected_calibration_error,
    group_accuracy,
    row_percent,
    top_confusions,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        # Reference values: statsmodels proportion_confint(k, n, method="wilson"), and the
        # closed forms n/(n+z^2) (all right) and z^2/(n+z^2) (none right).
        (8, 10, 0.490162, 0.943318),
        (0, 10, 0.0, 0.277533),
        (71, 71, 0.948672, 1.0),
        (50, 100, 0.403832, 0.596168),
    ],
)
def test_wilson_interval_matches_reference(k: int, n: int, lo: float, hi: float) -> None:
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-5)


def test_wilson_interval_is_wider_for_fewer_cases() -> None:
    # The reason group accuracy reports its own CI: 71 cells say less than 2,487 images.
    lo_small, hi_small = wilson_interval(64, 71)
    lo_big, hi_big = wilson_interval(2240, 2487)
    assert hi_small - lo_small > 3 * (hi_big - lo_big)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_ece_zero_when_confidence_equals_accuracy() -> None:
    # Four predictions at confidence 0.75, three of them right: perfectly calibrated.
    probs = np.array([[0.75, 0.25]] * 4)
    y = np.array([0, 0, 0, 1])
    assert expected_calibration_error(probs, y) == pytest.approx(0.0, abs=1e-12)


def test_ece_is_weighted_gap_between_confidence_and_accuracy() -> None:
    # Bin A: 2 images at 0.9 confidence, both wrong (gap 0.9).
    # Bin B: 2 images at 0.6 confidence, both right (gap 0.4). ECE = (0.9 + 0.4) / 2.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    y = np.array([1, 1, 1, 1])
    assert expected_calibration_error(probs, y, n_bins=15) == pytest.approx(0.65)


def test_group_accuracy_uses_mean_probability_per_group() -> None:
    probs = np.array(
        [
            [0.9, 0.1],  # g1: one confident right, one mildly wrong -> mean right
            [0.4, 0.6],
            [0.3, 0.7],  # g2: wrong on average
            [0.6, 0.4],
            [0.2, 0.8],  # g3: right
        ]
    )
    y = np.array([0, 0, 0, 0, 1])
    out = group_accuracy(probs, y, ["g1", "g1", "g2", "g2", "g3"])
    assert out["n_groups"] == 3
    assert out["n_groups_correct"] == 2
    assert out["group_accuracy"] == pytest.approx(2 / 3)
    assert out["group_accuracy_ci"] == pytest.approx(list(wilson_interval(2, 3)))


def test_classification_metrics_are_consistent() -> None:
    rng = np.random.default_rng(0)
    n, labels = 200, ["A", "B", "C"]
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 2.0 * np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    m = classification_metrics(probs, y, labels)
    cm = np.array(m["confusion_matrix"])
    assert cm.sum() == m["n"] == n
    assert m["accuracy"] == pytest.approx(np.trace(cm) / n)
    assert m["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == y))
    for i, c in enumerate(labels):
        assert m["per_class"][c]["recall"] == pytest.approx(cm[i, i] / cm[i].sum())
        assert m["per_class"][c]["precision"] == pytest.approx(cm[i, i] / cm[:, i].sum())
        assert m["per_class"][c]["support"] == cm[i].sum()
    assert m["macro_avg"]["recall"] == pytest.approx(
        np.mean([m["per_class"][c]["recall"] for c in labels])
    )
    assert "group_accuracy" not in m
    assert np.allclose(np.array(m["confusion_matrix_row_percent"]).sum(axis=1), 100.0, atol=0.05)


def test_top_confusions_largest_first_and_row_percent() -> None:
    cm = np.array([[5, 3, 0], [1, 8, 0], [0, 4, 0]])
    top = top_confusions(cm, ["A", "B", "C"], k=2)
    assert [(t["true"], t["predicted"], t["count"]) for t in top] == [("C", "B", 4), ("A", "B", 3)]
    assert top[0]["percent_of_true"] == pytest.approx(100.0)
    assert row_percent(np.array([[0, 0], [1, 3]])).tolist() == [[0.0, 0.0], [25.0, 75.0]]


def test_ungrouped_images_count_as_their_own_group() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    m = classification_metrics(probs, np.array([0, 0, 1]), ["A", "B"], ["g", "g", None])
    assert m["n_groups"] == 2
    assert m["group_accuracy"] == 1.0
