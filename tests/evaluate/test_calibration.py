"""ECE and reliability curve against an explicit-loop reference and known constructions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medcl.evaluate.calibration import expected_calibration_error, reliability_curve
from medcl.evaluate.metrics import classification_metrics


def loop_bins(y: np.ndarray, p: np.ndarray, n_bins: int) -> list[list[tuple[float, int]]]:
    """(confidence, correct) of the images in each right-closed bin (m/M, (m+1)/M]."""
    bins: list[list[tuple[float, int]]] = [[] for _ in range(n_bins)]
    for i in range(len(y)):
        pred = max(range(p.shape[1]), key=lambda k: (p[i, k], -k))  # first maximum
        conf = p[i, pred]
        for m in range(n_bins):
            if m / n_bins < conf <= (m + 1) / n_bins or (m == 0 and conf == 0):
                bins[m].append((conf, int(pred == y[i])))
                break
    return bins


def loop_ece(y: np.ndarray, p: np.ndarray, n_bins: int) -> float:
    """Guo et al. (2017), eq. 3, written out: sum_m |B_m|/n |acc(B_m) - conf(B_m)|."""
    total = 0.0
    for members in loop_bins(y, p, n_bins):
        if members:
            acc = sum(c for _, c in members) / len(members)
            conf = sum(s for s, _ in members) / len(members)
            total += len(members) / len(y) * abs(acc - conf)
    return total


def random_predictions(n: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    logits = rng.normal(size=(n, n_classes)) * 2
    logits[np.arange(n), y] += 1.0
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(("n_classes", "n_bins", "seed"), [(2, 15, 0), (4, 15, 1), (3, 7, 2)])
def test_ece_matches_loop_reference(n_classes: int, n_bins: int, seed: int):
    y, p = random_predictions(400, n_classes, seed)
    got = expected_calibration_error(y, p, n_bins=n_bins)
    assert got == pytest.approx(loop_ece(y, p, n_bins), abs=1e-12)
    assert 0.0 < got < 1.0


def test_confidences_on_bin_edges_fall_in_the_lower_bin():
    # Confidence exactly k/10 belongs to bin (k-1)/10 < c <= k/10.
    conf = np.array([0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.3 + 0.7 / 2])
    p = np.stack([conf, 1 - conf], axis=1)
    y = np.array([0, 1, 0, 0, 1, 0, 0])
    curve = reliability_curve(y, p, n_bins=10)
    expected_counts = [0, 0, 0, 0, 1, 1, 2, 1, 1, 1]  # 0.65 joins 0.7 in (0.6, 0.7]
    assert curve["counts"] == expected_counts
    assert [len(b) for b in loop_bins(y, p, 10)] == expected_counts
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(loop_ece(y, p, 10))


def test_perfectly_calibrated_construction_has_zero_ece():
    # In every bin the share of correct images equals the (single) confidence of that bin.
    ys, ps = [], []
    for conf, n_correct in [(0.55, 11), (0.7, 14), (0.85, 17), (0.95, 19), (1.0, 20)]:
        correct = np.arange(20) < n_correct
        ys.append(np.where(correct, 0, 1))
        ps.append(np.tile([conf, 1 - conf], (20, 1)))
    y, p = np.concatenate(ys), np.concatenate(ps)
    assert expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-12)
    assert classification_metrics(y, p, ["a", "b"])["ece"] == pytest.approx(0.0, abs=1e-12)


def test_sampled_calibrated_model_has_small_ece():
    # Labels drawn from the predicted distribution: calibrated in expectation.
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(3, 0.5), size=20000)
    y = (rng.random(20000)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    assert expected_calibration_error(y, p) < 0.02
    # The same probabilities against labels that ignore them are far from calibrated.
    assert expected_calibration_error(rng.integers(0, 3, 20000), p) > 0.2


def test_overconfident_known_value():
    # Confidence 0.9 everywhere, half correct: ECE = |0.5 - 0.9| = 0.4.
    p = np.tile([0.9, 0.1], (10, 1))
    y = np.array([0, 1] * 5)
    assert expected_calibration_error(y, p) == pytest.approx(0.4)


def test_reliability_curve_matches_loop_and_ece():
    y, p = random_predictions(300, 3, seed=3)
    curve = reliability_curve(y, p, n_bins=10)
    ref = loop_bins(y, p, 10)
    assert curve["counts"] == [len(b) for b in ref]
    assert sum(curve["counts"]) == curve["n"] == 300
    for m, members in enumerate(ref):
        if members:
            assert curve["accuracy"][m] == pytest.approx(np.mean([c for _, c in members]))
            assert curve["confidence"][m] == pytest.approx(np.mean([s for s, _ in members]))
        else:
            assert curve["accuracy"][m] is None and curve["confidence"][m] is None
    assert None in curve["accuracy"]  # with 3 classes no confidence is below 1/3
    np.testing.assert_allclose(curve["bin_centers"], np.arange(10) / 10 + 0.05)
    np.testing.assert_allclose(curve["bin_edges"], np.arange(11) / 10)
    assert curve["ece"] == pytest.approx(expected_calibration_error(y, p, n_bins=10))
    assert json.loads(json.dumps(curve, allow_nan=False)) == curve


def test_classification_metrics_uses_15_bins():
    y, p = random_predictions(200, 4, seed=6)
    ece = classification_metrics(y, p, list("abcd"))["ece"]
    assert ece == pytest.approx(loop_ece(y, p, 15), abs=1e-12)
    assert ece != pytest.approx(loop_ece(y, p, 10), abs=1e-9)


@pytest.mark.parametrize("n_bins", [0, -3, 2.5, True])
def test_invalid_n_bins(n_bins):
    y, p = random_predictions(10, 2, seed=0)
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(y, p, n_bins=n_bins)
    with pytest.raises(ValueError, match="n_bins"):
        reliability_curve(y, p, n_bins=n_bins)


def test_empty_input_raises():
    with pytest.raises(ValueError, match="empty"):
        expected_calibration_error(np.zeros(0, int), np.zeros((0, 3)))
