"""Patient-level bootstrap: fast path vs explicit resampling, patient-level width, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medcl.evaluate.bootstrap import bootstrap_replicates, metrics_with_intervals
from medcl.evaluate.metrics import classification_metrics

CLASSES = ["normal", "benign", "malignant"]
DEFAULT = ("accuracy", "balanced_accuracy", "macro_auroc", "macro_f1", "ece")


def intervals(
    y: np.ndarray,
    p: np.ndarray,
    groups: np.ndarray,
    classes: list[str],
    metric_names: tuple[str, ...] = DEFAULT,
    **kwargs: float,
) -> dict:
    """The ``intervals`` of :func:`metrics_with_intervals` (``n_boot``, ``seed``, ``alpha``)."""
    return metrics_with_intervals(y, p, groups, classes, metric_names=metric_names, **kwargs)[
        "intervals"
    ]


def cohort(
    n_patients: int, n_images: int, seed: int, n_classes: int = 3, ties: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, probabilities and string patient ids (every patient has at least one image)."""
    rng = np.random.default_rng(seed)
    groups = np.concatenate(
        [np.arange(n_patients), rng.integers(0, n_patients, n_images - n_patients)]
    )
    rng.shuffle(groups)
    y = rng.integers(0, n_classes, size=n_images)
    if ties:
        k = rng.integers(0, 3, size=(n_images, n_classes)) + 1.0
        k[np.arange(n_images), y] += rng.integers(0, 3, size=n_images)
        p = k / k.sum(axis=1, keepdims=True)
    else:
        logits = rng.normal(size=(n_images, n_classes))
        logits[np.arange(n_images), y] += 1.0
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, p, np.array([f"pat{g:04d}" for g in groups])


def slow_replicates(y, p, groups, classes, names, n_boot, seed) -> dict[str, np.ndarray]:
    """The documented algorithm, materialised: draw patients, concatenate their images."""
    ids = np.unique(groups)
    images_of = [np.flatnonzero(groups == g) for g in ids]
    rng = np.random.default_rng(seed)
    out = {name: [] for name in names}
    for _ in range(n_boot):
        draw = rng.integers(0, len(ids), size=len(ids))
        idx = np.concatenate([images_of[d] for d in draw])
        m = classification_metrics(y[idx], p[idx], classes)
        for name in names:
            metric, _, cls = name.partition(":")
            value = m["per_class"][cls][metric] if cls else m[metric]
            out[name].append(np.nan if value is None else value)
    return {name: np.array(v, dtype=float) for name, v in out.items()}


def assert_same_intervals(a: dict, b: dict) -> None:
    """Equal up to rounding: the ECE replicates come from a BLAS matmul, whose reduction order (and
    so the last bits) may depend on the buffers' alignment (e.g. MKL without CNR)."""
    assert a.keys() == b.keys()
    for name in a:
        assert a[name]["n_boot_valid"] == b[name]["n_boot_valid"], name  # exact: counts
        for key in ("value", "low", "high"):
            if a[name][key] is None:
                assert b[name][key] is None, (name, key)
            else:
                assert b[name][key] == pytest.approx(a[name][key], rel=1e-12, abs=1e-15), name


ALL_NAMES = DEFAULT + (
    "sensitivity:malignant",
    "specificity:malignant",
    "precision:benign",
    "f1:normal",
    "auroc:benign",
)


@pytest.mark.parametrize("ties", [False, True])
def test_fast_path_equals_explicit_resampling(ties: bool):
    y, p, groups = cohort(n_patients=25, n_images=120, seed=1, ties=ties)
    fast = bootstrap_replicates(y, p, groups, CLASSES, ALL_NAMES, n_boot=40, seed=7)
    slow = slow_replicates(y, p, groups, CLASSES, ALL_NAMES, n_boot=40, seed=7)
    for name in ALL_NAMES:
        np.testing.assert_allclose(fast[name], slow[name], atol=1e-12, err_msg=name)

    res = intervals(y, p, groups, CLASSES, ALL_NAMES, n_boot=40, seed=7)
    full = classification_metrics(y, p, CLASSES)
    for name in DEFAULT:
        valid = slow[name][~np.isnan(slow[name])]
        assert res[name]["value"] == pytest.approx(full[name])
        assert res[name]["low"] == pytest.approx(np.quantile(valid, 0.025))
        assert res[name]["high"] == pytest.approx(np.quantile(valid, 0.975))
        assert res[name]["n_boot_valid"] == valid.size
    # exact: both are classification_metrics on the same arrays, the same computation
    assert res["auroc:benign"]["value"] == full["per_class"]["benign"]["auroc"]


def test_blocks_of_replicates_do_not_change_the_result(monkeypatch):
    import medcl.evaluate.bootstrap as bs

    y, p, groups = cohort(n_patients=30, n_images=100, seed=2)
    whole = bootstrap_replicates(y, p, groups, CLASSES, n_boot=25, seed=3)
    monkeypatch.setattr(bs, "_BLOCK_ELEMENTS", 700)  # blocks of 7 replicates
    blocked = bootstrap_replicates(y, p, groups, CLASSES, n_boot=25, seed=3)
    for name in DEFAULT:
        # not exact: the ECE's matmul over patients may reduce in a different order per block shape
        np.testing.assert_allclose(whole[name], blocked[name], rtol=1e-12, atol=1e-15)


def test_interval_reflects_patients_not_images():
    # 1000 images from 10 patients of 100 images; a patient's images are all right or all wrong.
    rng = np.random.default_rng(0)
    n_pat, per = 10, 100
    groups = np.repeat(np.arange(n_pat), per)
    y = rng.integers(0, 2, size=n_pat * per)
    patient_correct = np.arange(n_pat) < 6  # 6 of 10 patients right: accuracy 0.6
    pred = np.where(patient_correct[groups], y, 1 - y)
    p = np.where(pred[:, None] == np.arange(2), 0.8, 0.2)
    patient = intervals(y, p, groups, ["a", "b"], ("accuracy",), n_boot=1000, seed=0)
    image = intervals(y, p, np.arange(n_pat * per), ["a", "b"], ("accuracy",), n_boot=1000, seed=0)
    acc_p, acc_i = patient["accuracy"], image["accuracy"]
    assert acc_p["value"] == pytest.approx(0.6) and acc_i["value"] == pytest.approx(0.6)
    width_p = acc_p["high"] - acc_p["low"]
    width_i = acc_i["high"] - acc_i["low"]
    # Patient-level: mean of 10 Bernoulli(0.6), width ~ 2 * 1.96 * sqrt(.24 / 10) = 0.61;
    # image-level: ~ 2 * 1.96 * sqrt(.24 / 1000) = 0.061.
    assert 0.45 < width_p < 0.75
    assert 0.045 < width_i < 0.08
    assert width_p > 6 * width_i
    # With equal-size patients the replicate accuracies are multiples of 1/10.
    reps = bootstrap_replicates(y, p, groups, ["a", "b"], ("accuracy",), n_boot=200, seed=0)
    np.testing.assert_allclose(reps["accuracy"] * 10, np.round(reps["accuracy"] * 10))


def test_two_patients_give_a_very_wide_interval():
    y, p, _ = cohort(n_patients=2, n_images=1000, seed=4)
    pred = p.argmax(axis=1)
    groups = np.where(np.arange(1000) < 500, "A", "B")
    y = np.where(groups == "A", pred, (pred + 1) % 3)  # patient A all right, patient B all wrong
    res = intervals(y, p, groups, CLASSES, ("accuracy",), n_boot=500, seed=0)["accuracy"]
    assert res["value"] == pytest.approx(0.5)
    assert res["low"] == pytest.approx(0.0) and res["high"] == pytest.approx(1.0)


def test_deterministic_given_seed_and_invariant_to_image_order():
    y, p, groups = cohort(n_patients=40, n_images=200, seed=5)
    a = intervals(y, p, groups, CLASSES, n_boot=200, seed=11)
    b = intervals(y, p, groups, CLASSES, n_boot=200, seed=11)
    c = intervals(y, p, groups, CLASSES, n_boot=200, seed=12)
    perm = np.random.default_rng(0).permutation(200)
    d = intervals(y[perm], p[perm], groups[perm], CLASSES, n_boot=200, seed=11)
    assert_same_intervals(a, b)
    assert_same_intervals(a, d)
    assert any(abs(a[n][k] - c[n][k]) > 1e-6 for n in DEFAULT for k in ("low", "high"))


def test_value_inside_interval_on_typical_data():
    y, p, groups = cohort(n_patients=200, n_images=1000, seed=6)
    res = intervals(y, p, groups, CLASSES, n_boot=300, seed=0)
    for name in DEFAULT:
        r = res[name]
        assert r["n_boot_valid"] == 300
        assert r["low"] <= r["value"] <= r["high"], name
        assert r["high"] - r["low"] > 0


def test_undefined_replicates_are_skipped_and_counted():
    # Three single-image patients: one class 0, two class 1. Macro AUROC is defined only in
    # replicates that draw the class-0 patient and at least one class-1 patient.
    y = np.array([0, 1, 1])
    p = np.array([[0.55, 0.45], [0.3, 0.7], [0.6, 0.4]])  # AUROC: 0.45 beats 0.4 only -> 1/2
    groups = np.array([10, 20, 30])
    n_boot, seed = 300, 2
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, 3, size=3) for _ in range(n_boot)]
    defined = np.array([(d == 0).any() and (d != 0).any() for d in draws])
    assert 0 < defined.sum() < n_boot

    reps = bootstrap_replicates(y, p, groups, ["a", "b"], n_boot=n_boot, seed=seed)
    # exact: whether AUROC is defined depends only on the integer draws
    np.testing.assert_array_equal(~np.isnan(reps["macro_auroc"]), defined)
    res = intervals(y, p, groups, ["a", "b"], n_boot=n_boot, seed=seed)
    assert res["macro_auroc"]["n_boot_valid"] == defined.sum()
    assert res["accuracy"]["n_boot_valid"] == n_boot
    valid = reps["macro_auroc"][defined]
    assert res["macro_auroc"]["low"] == pytest.approx(np.quantile(valid, 0.025))
    assert res["macro_auroc"]["value"] == pytest.approx(0.5)


def test_metric_undefined_everywhere():
    y = np.zeros(6, dtype=int)
    p = np.tile([0.7, 0.3], (6, 1))
    res = intervals(y, p, ["a", "a", "b", "b", "c", "c"], ["x", "y"], n_boot=50)
    assert res["macro_auroc"] == {"value": None, "low": None, "high": None, "n_boot_valid": 0}
    # exact: every image correct, accuracy is a count divided by itself
    assert res["accuracy"]["value"] == 1.0 and res["accuracy"]["n_boot_valid"] == 50
    json.dumps(res, allow_nan=False)


def test_metrics_with_intervals():
    y, p, groups = cohort(n_patients=50, n_images=300, seed=8)
    out = metrics_with_intervals(y, p, groups, CLASSES, n_boot=100, seed=1)
    full = classification_metrics(y, p, CLASSES)
    # exact: the same classification_metrics on the same arrays, no BLAS involved
    assert {k: out[k] for k in full} == full
    assert out["n_patients"] == 50
    assert set(out["intervals"]) == set(DEFAULT)
    reps = bootstrap_replicates(y, p, groups, CLASSES, n_boot=100, seed=1)
    for name in DEFAULT:
        valid = reps[name][~np.isnan(reps[name])]
        assert out["intervals"][name]["low"] == pytest.approx(np.quantile(valid, 0.025))
        assert out["intervals"][name]["high"] == pytest.approx(np.quantile(valid, 0.975))
    assert out["bootstrap"]["n_boot"] == 100
    json.dumps(out, allow_nan=False)


def test_alpha_sets_the_quantiles():
    y, p, groups = cohort(n_patients=30, n_images=150, seed=9)
    reps = bootstrap_replicates(y, p, groups, CLASSES, ("macro_f1",), n_boot=200, seed=0)
    res = intervals(y, p, groups, CLASSES, ("macro_f1",), n_boot=200, alpha=0.2)
    assert res["macro_f1"]["low"] == pytest.approx(np.quantile(reps["macro_f1"], 0.1))
    assert res["macro_f1"]["high"] == pytest.approx(np.quantile(reps["macro_f1"], 0.9))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"groups": ["a"] * 5}, "groups"),
        ({"groups": [None] * 10}, "missing"),
        ({"metric_names": ("auroc",)}, "unknown metric"),
        ({"metric_names": ("sensitivity:nope",)}, "unknown metric"),
        ({"n_boot": 0}, "n_boot"),
        ({"alpha": 1.0}, "alpha"),
    ],
)
def test_invalid_arguments(kwargs, match):
    y, p, groups = cohort(n_patients=3, n_images=10, seed=0)
    args = {"groups": groups, **kwargs}
    with pytest.raises(ValueError, match=match):
        metrics_with_intervals(y, p, classes=CLASSES, **args)


def test_long_run_starts_with_the_explicit_replicates():
    """At benchmark size (1000 images, 200 patients, 4 classes; the timing is in
    benchmarks/bootstrap_bench.py) the first of 1000 replicates are those of the explicit loop."""
    classes = ["a", "b", "c", "d"]
    y, p, groups = cohort(n_patients=200, n_images=1000, seed=0, n_classes=4)
    fast = bootstrap_replicates(y, p, groups, classes, n_boot=1000, seed=0)
    slow = slow_replicates(y, p, groups, classes, DEFAULT, n_boot=3, seed=0)
    for name in DEFAULT:
        assert np.isfinite(fast[name]).all(), name
        np.testing.assert_allclose(fast[name][:3], slow[name], atol=1e-12, err_msg=name)
