"""Paired differences over seeds × test patients, against explicit references."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from medcl.evaluate.paired import paired_difference

CLASSES = ["a", "b", "c"]


def _onehot(pred: np.ndarray, n: int = 3) -> np.ndarray:
    p = np.full((pred.size, n), 0.1 / (n - 1))
    p[np.arange(pred.size), pred] = 0.9
    return p


def _cohort(n_patients: int = 60, per: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_patients), per)
    y = np.repeat(rng.integers(0, 3, n_patients), per)
    return rng, y, groups


def test_point_estimate_is_the_mean_of_per_seed_sklearn_differences():
    rng, y, groups = _cohort()
    pa, pb, want = [], [], []
    for _ in range(3):
        a = np.where(rng.random(y.size) < 0.8, y, rng.integers(0, 3, y.size))
        b = np.where(rng.random(y.size) < 0.6, y, rng.integers(0, 3, y.size))
        pa.append(_onehot(a))
        pb.append(_onehot(b))
        want.append(balanced_accuracy_score(y, a) - balanced_accuracy_score(y, b))
    d = paired_difference(y, groups, pa, pb, CLASSES, n_boot=200)
    assert d["per_seed"] == pytest.approx(want, abs=1e-12)
    assert d["mean"] == pytest.approx(np.mean(want), abs=1e-12)
    assert d["n_seeds"] == 3
    assert d["low"] <= d["mean"] <= d["high"]


def test_identical_methods_differ_by_exactly_nothing():
    rng, y, groups = _cohort()
    p = [_onehot(rng.integers(0, 3, y.size)) for _ in range(2)]
    d = paired_difference(y, groups, p, p, CLASSES, n_boot=100)
    assert d["mean"] == 0.0 and d["low"] == 0.0 and d["high"] == 0.0


def test_interval_matches_an_explicit_patient_bootstrap_for_one_seed():
    """A is always right; B is right on a random half of the patients: d = 1 − bacc(B)."""
    rng, y, groups = _cohort(n_patients=80, per=2, seed=3)
    right = np.repeat(rng.random(80) < 0.5, 2)
    b = np.where(right, y, (y + 1) % 3)
    d = paired_difference(y, groups, [_onehot(y)], [_onehot(b)], CLASSES, n_boot=2000, seed=5)
    # the reference: resample patients explicitly, recompute with scikit-learn
    ref = []
    images_of = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    for _ in range(2000):
        idx = np.concatenate([images_of[g] for g in rng.integers(0, len(images_of), 80)])
        if len(np.unique(y[idx])) < 3:
            continue
        yy, bb = y[idx], b[idx]
        recall = [np.mean(bb[yy == c] == c) for c in range(3)]  # balanced accuracy by hand
        ref.append(1.0 - float(np.mean(recall)))
    lo, hi = np.quantile(ref, [0.025, 0.975])
    assert d["mean"] == pytest.approx(1.0 - balanced_accuracy_score(y, b), abs=1e-12)
    # two independent Monte-Carlo estimates of the same quantiles (2000 draws each)
    assert d["low"] == pytest.approx(lo, abs=0.03)
    assert d["high"] == pytest.approx(hi, abs=0.03)


def test_pairing_gives_a_much_tighter_interval_than_the_marginal_spread():
    """B = A plus a few more correct images: the gain is small, certain and positive."""
    rng, y, groups = _cohort(n_patients=100, per=2, seed=1)
    a = np.where(rng.random(y.size) < 0.5, y, (y + 1) % 3)
    b = a.copy()
    wrong = np.flatnonzero(b != y)
    b[wrong[:6]] = y[wrong[:6]]
    d = paired_difference(y, groups, [_onehot(b)], [_onehot(a)], CLASSES, n_boot=1000)
    assert d["low"] > 0  # every resample of patients keeps B ≥ A
    marginal = paired_difference(
        y, groups, [_onehot(b)], [_onehot(np.full_like(y, 0))], CLASSES, n_boot=1000
    )
    assert (d["high"] - d["low"]) < 0.5 * (marginal["high"] - marginal["low"])


def test_seeds_are_resampled():
    """Two seeds with gains 0 and +0.2 on identical predictions per seed: replicates that draw
    one seed twice give 0 or 0.2, so the interval spans nearly [0, 0.2]."""
    _, y, groups = _cohort(n_patients=200, per=1, seed=2)
    base = _onehot(y)
    wrong = _onehot((y + 1) % 3)
    # seed 0: A = B; seed 1: A right on every image, B right except on a block of patients
    b1 = np.where(np.arange(y.size) < 60, (y + 1) % 3, y)
    d = paired_difference(
        y, groups, [base, base], [base, _onehot(b1)], CLASSES, n_boot=2000, seed=0
    )
    assert d["per_seed"][0] == 0.0 and d["per_seed"][1] > 0.2
    assert d["low"] < 0.05 and d["high"] > 0.2
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference(y, groups, [base], [base, wrong], CLASSES)


def test_paired_comparisons_do_not_depend_on_the_pseudonymous_keys(tmp_path):
    # The same predictions under another project secret (other patient keys, other key order)
    # must give the same paired intervals: the bootstrap groups by the secret-free "patient".
    from medcl.evaluate.comparisons import paired_comparisons

    rng = np.random.default_rng(0)
    n_pat, per = 30, 3
    patient = np.repeat(np.arange(n_pat), per)
    y = rng.integers(0, 3, n_pat * per)

    def records(keys: list[str], folder: str) -> list[dict]:
        out = []
        (tmp_path / folder).mkdir()
        for method, sharp in (("sscl", 3.0), ("supervised", 1.0)):
            logits = sharp * np.eye(3)[y] + rng_m[method].normal(size=(len(y), 3))
            proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
            path = tmp_path / folder / f"{method}.npz"
            np.savez(
                path,
                image_id=np.array([f"img{i}" for i in range(len(y))]),
                patient_key=np.array([keys[p] for p in patient]),
                patient=patient,
                y=y,
                proba=proba,
            )
            out.append(
                {"method": method, "label_fraction": 0.5, "seed": 0, "predictions": str(path)}
            )
        return out

    rng_m = {"sscl": np.random.default_rng(1), "supervised": np.random.default_rng(2)}
    a = paired_comparisons(
        records([f"a{p:03d}" for p in range(n_pat)], "a"), "balanced_accuracy", ["x", "y", "z"], 200
    )
    rng_m = {"sscl": np.random.default_rng(1), "supervised": np.random.default_rng(2)}
    b = paired_comparisons(
        records([f"b{n_pat - p:03d}" for p in range(n_pat)], "b"),
        "balanced_accuracy",
        ["x", "y", "z"],
        200,
    )
    assert len(a) == len(b) == 1
    assert a[0]["low"] == pytest.approx(b[0]["low"], abs=1e-12)
    assert a[0]["high"] == pytest.approx(b[0]["high"], abs=1e-12)
