"""Multi-label metrics against scikit-learn and explicit loops: per-finding AUROC on the known
images, the macro AUROC's patient bootstrap against materialised resampling, and sensitivity at a
fixed specificity against a loop over every threshold."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from medcl.evaluate.multilabel import (
    macro_auroc_replicates,
    multilabel_metrics,
    sensitivity_at_specificity,
)

NAMES = ["effusion", "nodule", "cardiomegaly", "rare"]


def cohort(n: int = 120, n_patients: int = 30, seed: int = 0, ties: bool = False):
    """Findings with unknowns, scores that track them, patient ids; the last finding has a single
    positive (often undefined in a resample)."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 4)) < [0.3, 0.5, 0.2, 0.0]).astype(np.int64)
    y[5, 3] = 1
    y[rng.random((n, 4)) < 0.15] = -1
    y[5, 3] = 1
    s = 1 / (1 + np.exp(-(rng.normal(size=(n, 4)) + 1.5 * (y == 1))))
    if ties:
        s = np.round(s * 6) / 6
    groups = np.concatenate([np.arange(n_patients), rng.integers(0, n_patients, n - n_patients)])
    return y, s, np.array([f"p{g:03d}" for g in groups])


def sklearn_per_finding(y: np.ndarray, s: np.ndarray) -> list[float]:
    out = []
    for k in range(y.shape[1]):
        known = y[:, k] >= 0
        yk = y[known, k]
        out.append(roc_auc_score(yk, s[known, k]) if 0 < yk.sum() < yk.size else np.nan)
    return out


@pytest.mark.parametrize("ties", [False, True])
def test_per_finding_and_macro_auroc_match_sklearn_on_the_known_images(ties: bool) -> None:
    y, s, groups = cohort(seed=1, ties=ties)
    out = multilabel_metrics(y, s, groups, NAMES, n_boot=0)
    want = sklearn_per_finding(y, s)
    for name, w in zip(NAMES, want, strict=True):
        assert out["per_finding"][name]["auroc"] == pytest.approx(w, abs=1e-12)
    assert out["macro_auroc"] == pytest.approx(np.mean(want), abs=1e-12)
    assert out["per_finding"]["rare"]["n_positive"] == 1
    assert out["per_finding"]["nodule"]["n_unknown"] == int((y[:, 1] == -1).sum())
    assert out["macro_auroc_ci"] is None and out["n_patients"] == 30
    json.dumps(out, allow_nan=False)


def test_unknown_images_do_not_count() -> None:
    y, s, groups = cohort(seed=2)
    moved = s.copy()
    moved[y == -1] = np.random.default_rng(0).random(int((y == -1).sum()))
    a = multilabel_metrics(y, s, groups, NAMES, n_boot=0)
    b = multilabel_metrics(y, moved, groups, NAMES, n_boot=0)
    assert a["per_finding"] == b["per_finding"]


def test_an_undefined_finding_is_none_and_left_out_of_the_macro() -> None:
    y, s, groups = cohort(seed=3)
    y[:, 2] = np.where(y[:, 2] == 1, 0, y[:, 2])  # no positive left
    out = multilabel_metrics(y, s, groups, NAMES, n_boot=0)
    assert out["per_finding"]["cardiomegaly"]["auroc"] is None
    assert out["per_finding"]["cardiomegaly"]["sensitivity_at_specificity"] is None
    want = [w for w in sklearn_per_finding(y, s) if not np.isnan(w)]
    assert out["macro_auroc"] == pytest.approx(np.mean(want), abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_macro_auroc_bootstrap_matches_explicit_patient_resampling(ties: bool) -> None:
    y, s, groups = cohort(seed=4, ties=ties)
    got = macro_auroc_replicates(y, s, groups, n_boot=50, seed=9)
    ids = np.unique(groups)
    images_of = [np.flatnonzero(groups == g) for g in ids]
    rng = np.random.default_rng(9)
    want = []
    for _ in range(50):
        idx = np.concatenate([images_of[d] for d in rng.integers(0, len(ids), len(ids))])
        per = [v for v in sklearn_per_finding(y[idx], s[idx]) if not np.isnan(v)]
        want.append(np.mean(per) if per else np.nan)
    np.testing.assert_allclose(got, want, atol=1e-12)
    out = multilabel_metrics(y, s, groups, NAMES, n_boot=50, seed=9)
    valid = np.array(want)[~np.isnan(want)]
    iv = out["intervals"]["macro_auroc"]
    assert iv["n_boot_valid"] == valid.size
    assert out["macro_auroc_ci"] == pytest.approx(np.quantile(valid, [0.025, 0.975]))


def explicit_sensitivity_at_specificity(yk: np.ndarray, sk: np.ndarray, sigma: float) -> float:
    """Every threshold (each score and one above them all), counted image by image."""
    best = 0.0
    for t in [*np.unique(sk), np.inf]:
        tp = sum(1 for yi, si in zip(yk, sk, strict=True) if yi == 1 and si >= t)
        tn = sum(1 for yi, si in zip(yk, sk, strict=True) if yi == 0 and si < t)
        if tn / (yk == 0).sum() >= sigma:
            best = max(best, tp / (yk == 1).sum())
    return best


@pytest.mark.parametrize("sigma", [0.0, 0.5, 0.8, 0.9, 0.95, 1.0])
@pytest.mark.parametrize("ties", [False, True])
def test_sensitivity_at_specificity_matches_an_explicit_threshold_loop(
    sigma: float, ties: bool
) -> None:
    y, s, _ = cohort(seed=5, ties=ties)
    got = sensitivity_at_specificity(y, s, sigma)
    for k in range(4):
        known = y[:, k] >= 0
        want = explicit_sensitivity_at_specificity(y[known, k], s[known, k], sigma)
        assert got[k] == pytest.approx(want, abs=1e-12)
        fpr, tpr, _ = roc_curve(y[known, k], s[known, k], drop_intermediate=False)
        assert got[k] == pytest.approx(tpr[1 - fpr >= sigma].max(), abs=1e-12)


def test_bad_inputs_are_refused() -> None:
    y, s, groups = cohort()
    with pytest.raises(ValueError, match="findings must be integers"):
        multilabel_metrics(y * 2, s, groups, NAMES)
    with pytest.raises(ValueError, match="both be"):
        multilabel_metrics(y[:, :3], s, groups, NAMES)
    with pytest.raises(ValueError, match="unique finding names"):
        multilabel_metrics(y, s, groups, NAMES[:3])
    with pytest.raises(ValueError, match="specificity"):
        sensitivity_at_specificity(y, s, 1.5)
