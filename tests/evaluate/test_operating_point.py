"""Binary tasks: the validation operating point (Youden / target sensitivity) against brute-force
searches, the positive class's AUROC and its patient bootstrap against scikit-learn and an
explicit resampling loop, paired AUROC differences and medcl's pick on validation AUROC."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from medcl.config import OperatingPoint, load_config
from medcl.errors import ConfigError
from medcl.evaluate.bootstrap import bootstrap_replicates, metrics_with_intervals
from medcl.evaluate.metrics import classification_metrics
from medcl.evaluate.operating_point import (
    DEFAULT_THRESHOLD,
    choose_threshold,
    rates_at,
    rates_on_test,
    roc_table,
)
from medcl.evaluate.paired import paired_difference
from medcl.evaluate.pick import BINARY_VAL_KEY, choose_picks

CLASSES = ["normal", "abnormal"]


def binary_cohort(n: int, seed: int, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Labels and positive-class scores; ``ties``: scores on a coarse grid (many equal)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * y)))
    if ties:
        s = np.round(s * 8) / 8
    return y, s


def explicit_rates(y: np.ndarray, s: np.ndarray, t: float) -> tuple[float, float]:
    """Sensitivity and specificity by counting, one image at a time."""
    tp = fn = tn = fp = 0
    for yi, si in zip(y, s, strict=True):
        if yi == 1:
            tp, fn = (tp + 1, fn) if si >= t else (tp, fn + 1)
        else:
            fp, tn = (fp + 1, tn) if si >= t else (fp, tn + 1)
    return tp / (tp + fn), tn / (tn + fp)


def brute_force_youden(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """The best J over a dense grid of thresholds (every score, every midpoint, a fine grid), and
    the highest observed score reaching it."""
    grid = np.unique(np.r_[s, (s[:-1] + s[1:]) / 2, np.linspace(0, 1, 2001)])
    best = max(sum(explicit_rates(y, s, t)) - 1 for t in grid)
    on_scores = [t for t in np.unique(s) if sum(explicit_rates(y, s, t)) - 1 >= best - 1e-12]
    return best, max(on_scores)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_youden_threshold_matches_a_brute_force_search(seed: int, ties: bool) -> None:
    y, s = binary_cohort(60, seed, ties)
    got = choose_threshold(y == 1, s, OperatingPoint("youden"))
    best_j, highest = brute_force_youden(y, s)
    sens, spec = explicit_rates(y, s, got.value)
    assert sens + spec - 1 == pytest.approx(best_j, abs=1e-12)
    assert got.value == highest  # ties: the most specific threshold (an observed score)
    assert got.sensitivity == pytest.approx(sens, abs=1e-12)
    assert got.specificity == pytest.approx(spec, abs=1e-12)
    assert got.rule == "youden"


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 1.0])
@pytest.mark.parametrize("ties", [False, True])
def test_target_sensitivity_is_the_highest_threshold_reaching_it(target: float, ties: bool) -> None:
    y, s = binary_cohort(50, 7, ties)
    y[:10] = 1  # at least 10 positives: 0.9 × P is not an integer
    got = choose_threshold(y == 1, s, OperatingPoint("sensitivity", target))
    reaching = [t for t in np.unique(s) if explicit_rates(y, s, t)[0] >= target - 1e-12]
    assert got.value == max(reaching)
    assert got.sensitivity >= target - 1e-12
    assert got.rule == f"sensitivity={target:g}"


def test_a_target_reached_exactly_counts() -> None:
    """9 of 10 positives is sensitivity 0.9: reached, not missed."""
    y = np.array([1] * 10 + [0] * 5)
    s = np.r_[np.linspace(0.9, 0.5, 10), np.full(5, 0.1)]
    got = choose_threshold(y == 1, s, OperatingPoint("sensitivity", 0.9))
    assert got.value == pytest.approx(s[8]) and got.sensitivity == pytest.approx(0.9)


def test_youden_ties_go_to_the_highest_threshold() -> None:
    """J = 0.5 at t = 0.9 (one positive, no negative called) and at t = 0.4 (both positives, one
    negative called); the more specific 0.9 is kept."""
    y = np.array([0, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.6, 0.9])
    got = choose_threshold(y == 1, s, OperatingPoint("youden"))
    assert got.value == 0.9
    assert (got.sensitivity, got.specificity) == (0.5, 1.0)


def test_roc_table_matches_sklearn_roc_curve() -> None:
    y, s = binary_cohort(80, 3, ties=True)
    thresholds, tp, fp = roc_table(y == 1, s)
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(thresholds, thr[1:])  # sklearn prepends +inf
    np.testing.assert_allclose(tp / y.sum(), tpr[1:], atol=1e-12)
    np.testing.assert_allclose(fp / (y == 0).sum(), fpr[1:], atol=1e-12)


def test_rates_at_count_like_an_explicit_loop() -> None:
    y, s = binary_cohort(40, 5, ties=True)
    for t in (0.0, 0.25, 0.5, float(s[3]), 1.0):
        assert rates_at(y == 1, s, t) == pytest.approx(explicit_rates(y, s, t), abs=1e-12)
    assert rates_at(np.zeros(3), np.array([0.1, 0.6, 0.9]), 0.5) == (None, pytest.approx(1 / 3))


def test_without_both_classes_on_validation_the_threshold_is_the_default() -> None:
    s = np.array([0.2, 0.7, 0.9])
    got = choose_threshold(np.ones(3, bool), s, OperatingPoint("youden"))
    assert got.value == DEFAULT_THRESHOLD and "lacks a class" in got.rule
    assert got.sensitivity == pytest.approx(2 / 3) and got.specificity is None
    got = choose_threshold(np.zeros(3, bool), s, OperatingPoint("sensitivity", 0.9))
    assert got.value == DEFAULT_THRESHOLD and "no positive" in got.rule
    # a target sensitivity needs no negatives
    assert choose_threshold(np.ones(3, bool), s, OperatingPoint("sensitivity", 0.6)).value == 0.7


def test_test_rates_are_read_at_the_validation_threshold() -> None:
    y_val, s_val = binary_cohort(60, 11)
    y_test, s_test = binary_cohort(70, 12)
    t = choose_threshold(y_val == 1, s_val, OperatingPoint("youden")).value
    got = rates_on_test(y_test, np.c_[1 - s_test, s_test], {"threshold": t})
    assert got["threshold"] == t
    sens, spec = explicit_rates(y_test, s_test, t)
    assert got["sensitivity"] == pytest.approx(sens, abs=1e-12)
    assert got["specificity"] == pytest.approx(spec, abs=1e-12)


def test_test_rates_have_patient_bootstrap_intervals() -> None:
    """Against materialised resampling: draw patients, count the rates at the fixed threshold."""
    y, s = binary_cohort(90, 13, ties=True)
    groups = np.random.default_rng(1).integers(0, 20, 90)
    t = 0.5
    got = rates_on_test(y, np.c_[1 - s, s], {"threshold": t}, groups, n_boot=80, seed=4)
    ids = np.unique(groups)
    images_of = [np.flatnonzero(groups == g) for g in ids]
    draws = np.random.default_rng(4)
    sens, spec = [], []
    for _ in range(80):
        idx = np.concatenate([images_of[d] for d in draws.integers(0, len(ids), len(ids))])
        yy, ss = y[idx], s[idx]
        if (yy == 1).any():
            sens.append(np.mean(ss[yy == 1] >= t))
        if (yy == 0).any():
            spec.append(np.mean(ss[yy == 0] < t))
    assert got["sensitivity_ci"] == pytest.approx(np.quantile(sens, [0.025, 0.975]), abs=1e-12)
    assert got["specificity_ci"] == pytest.approx(np.quantile(spec, [0.025, 0.975]), abs=1e-12)
    assert got["intervals"]["sensitivity"]["n_boot_valid"] == len(sens)
    assert got["intervals"]["specificity"]["value"] == got["specificity"]
    assert rates_on_test(y, np.c_[1 - s, s], {"threshold": t})["sensitivity_ci"] is None


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("youden", OperatingPoint("youden")),
        ("sensitivity=0.9", OperatingPoint("sensitivity", 0.9)),
        (" sensitivity = 1 ", OperatingPoint("sensitivity", 1.0)),
    ],
)
def test_operating_point_config_is_parsed(text: str, want: OperatingPoint) -> None:
    assert OperatingPoint.parse(text) == want
    assert load_config(None, [f"finetune.operating_point={text}"]).finetune.point == want


@pytest.mark.parametrize(
    "text", ["youdn", "sensitivity", "sensitivity=0", "sensitivity=1.5", "specificity=0.9", "x=y"]
)
def test_a_bad_operating_point_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^finetune\.operating_point: 'youden' or 'sensitiv"):
        load_config(None, [f"finetune.operating_point={text}"])


def test_binary_auroc_is_sklearns_roc_auc_of_the_second_class() -> None:
    y, s = binary_cohort(90, 4, ties=True)
    m = classification_metrics(y, np.c_[1 - s, s], CLASSES)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert "auroc" not in classification_metrics(np.array([0, 1, 2]), np.eye(3), ["a", "b", "c"])


def test_binary_auroc_bootstrap_matches_explicit_patient_resampling() -> None:
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 25, 100)
    y, s = binary_cohort(100, 6, ties=True)
    p = np.c_[1 - s, s]
    got = bootstrap_replicates(y, p, groups, CLASSES, ["auroc"], n_boot=60, seed=3)["auroc"]
    ids = np.unique(groups)
    images_of = [np.flatnonzero(groups == g) for g in ids]
    draws = np.random.default_rng(3)
    want = []
    for _ in range(60):
        idx = np.concatenate([images_of[d] for d in draws.integers(0, len(ids), len(ids))])
        want.append(roc_auc_score(y[idx], s[idx]) if len(set(y[idx])) == 2 else np.nan)
    np.testing.assert_allclose(got, want, atol=1e-12)
    out = metrics_with_intervals(
        y, p, groups, CLASSES, n_boot=60, seed=3, metric_names=["balanced_accuracy", "auroc"]
    )
    valid = np.array(want)[~np.isnan(want)]
    iv = out["intervals"]["auroc"]
    assert iv["value"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert [iv["low"], iv["high"]] == pytest.approx(np.quantile(valid, [0.025, 0.975]))


def test_auroc_is_refused_for_more_than_two_classes() -> None:
    y, p = np.array([0, 1, 2]), np.eye(3)
    with pytest.raises(ValueError, match="unknown metric 'auroc' for 3 classes"):
        bootstrap_replicates(y, p, np.arange(3), ["a", "b", "c"], ["auroc"], n_boot=5)


def test_paired_auroc_difference_is_the_mean_of_per_seed_sklearn_differences() -> None:
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(40), 2)
    y = np.repeat(rng.integers(0, 2, 40), 2)
    pa, pb, want = [], [], []
    for _ in range(3):
        a = 1 / (1 + np.exp(-(rng.normal(size=80) + 2.0 * y)))
        b = 1 / (1 + np.exp(-(rng.normal(size=80) + 0.5 * y)))
        pa.append(np.c_[1 - a, a])
        pb.append(np.c_[1 - b, b])
        want.append(roc_auc_score(y, a) - roc_auc_score(y, b))
    d = paired_difference(y, groups, pa, pb, CLASSES, metric="auroc", n_boot=200)
    assert d["per_seed"] == pytest.approx(want, abs=1e-12)
    assert d["mean"] == pytest.approx(np.mean(want), abs=1e-12)
    assert d["low"] <= d["mean"] <= d["high"]


def _rec(method: str, seed: int, bacc: float, auroc: float | None) -> dict:
    return {
        "run": f"{method}_f0.1_s{seed}",
        "method": method,
        "label_fraction": 0.1,
        "seed": seed,
        "val_balanced_accuracy": bacc,
        BINARY_VAL_KEY: auroc,
        "model_dir": f"/m/{method}/{seed}",
    }


def test_a_binary_pick_is_chosen_on_validation_auroc() -> None:
    recs = [
        _rec("supervised", 0, 0.9, 0.70),
        _rec("sscl", 0, 0.6, 0.95),  # worse balanced accuracy, better AUROC
        _rec("supervised", 1, 0.9, 0.80),
        _rec("sscl", 1, 0.6, None),  # AUROC undefined for one candidate: balanced accuracy
    ]
    picks = choose_picks(recs, BINARY_VAL_KEY)
    got = [(p["seed"], p["method"], p["val_metric"], p["val_score"]) for p in picks]
    assert got == [
        (0, "sscl", "val_auroc", 0.95),
        (1, "supervised", "val_balanced_accuracy", 0.9),
    ]
    assert [p["method"] for p in choose_picks(recs)] == ["supervised", "supervised"]


def test_the_headline_metric_follows_the_number_of_classes() -> None:
    from medcl.evaluate.efficiency import headline_metric

    assert headline_metric("auto", ["a", "b"]) == "auroc"
    assert headline_metric("auto", ["a", "b", "c"]) == "balanced_accuracy"
    assert headline_metric("macro_f1", ["a", "b"]) == "macro_f1"
    with pytest.raises(ConfigError, match=r"^efficiency\.metric: auroc is for binary tasks"):
        headline_metric("auroc", ["a", "b", "c"])


def test_an_auroc_headline_needs_both_classes_in_the_test_split(tmp_path) -> None:
    from medcl.data.manifest import read_manifest, write_manifest
    from medcl.evaluate.efficiency import check_experiment
    from tests.conftest import make_manifest

    path = make_manifest(tmp_path, n_patients=15, labelled_patients=9, test_patients=3, n_classes=2)
    cfg = load_config(None, ["efficiency.methods=[supervised]"])
    check_experiment(cfg, path)  # both classes in the test split
    m = read_manifest(path)
    m.df.loc[(m.df["split"] == "test") & (m.df["label"] == "c1"), "label"] = ""
    write_manifest(m, path)
    with pytest.raises(ConfigError, match=r"^efficiency\.metric: AUROC needs both classes"):
        check_experiment(cfg, path)
    check_experiment(load_config(None, ["efficiency.metric=balanced_accuracy"]), path)
