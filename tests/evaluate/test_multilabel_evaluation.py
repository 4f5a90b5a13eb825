"""The multi-label test record (per-finding AUROC intervals, Youden thresholds per finding chosen on
validation, the record layout), against explicit loops and scikit-learn; the evaluation through a
plain probabilities callable on a multi-label manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medcl.data.manifest import read_manifest
from medcl.errors import MedclError
from medcl.evaluate.evaluation import (
    evaluate_findings,
    finding_thresholds,
    model_thresholds,
    multilabel_record,
    multilabel_summary,
    patient_numbers,
)
from tests.conftest import FINDINGS, make_multilabel_manifest

NAMES = ["effusion", "nodule", "rare"]
FINDING_KEYS = {
    "auroc",
    "auroc_ci",
    "sensitivity_at_specificity",
    "prevalence",
    "threshold",
    "sensitivity",
    "specificity",
}


def cohort(n: int = 90, n_patients: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < [0.35, 0.5, 0.06]).astype(np.int64)
    y[rng.random((n, 3)) < 0.15] = -1
    s = 1 / (1 + np.exp(-(rng.normal(size=(n, 3)) + 1.5 * (y == 1))))
    groups = np.concatenate([np.arange(n_patients), rng.integers(0, n_patients, n - n_patients)])
    return y, s, groups


def test_each_findings_interval_matches_an_explicit_patient_resampling():
    y, s, groups = cohort()
    n_boot, seed = 300, 4
    out = multilabel_record(y, s, groups, NAMES, {n: 0.5 for n in NAMES}, n_boot=n_boot, seed=seed)
    rng = np.random.default_rng(seed)
    ids = np.unique(groups)
    images_of = [np.flatnonzero(groups == g) for g in ids]
    reps = np.full((n_boot, 3), np.nan)
    for b in range(n_boot):
        idx = np.concatenate([images_of[p] for p in rng.integers(0, len(ids), len(ids))])
        for k in range(3):
            yk, sk = y[idx, k], s[idx, k]
            known = yk >= 0
            if len(np.unique(yk[known])) == 2:
                reps[b, k] = roc_auc_score(yk[known], sk[known])
    for k, name in enumerate(NAMES):
        valid = reps[~np.isnan(reps[:, k]), k]
        want = np.quantile(valid, [0.025, 0.975])
        assert out["findings"][name]["auroc_ci"] == pytest.approx(want, abs=1e-9)
    macro = np.nanmean(reps, axis=1)
    want = np.quantile(macro[~np.isnan(macro)], [0.025, 0.975])
    assert out["macro_auroc_ci"] == pytest.approx(want, abs=1e-9)


def explicit_youden(y: np.ndarray, s: np.ndarray) -> float:
    """The highest score maximising sensitivity + specificity − 1 (every score tried)."""
    best, best_t = -2.0, None
    for t in sorted(set(s.tolist()), reverse=True):
        j = (s[y == 1] >= t).mean() + (s[y == 0] < t).mean() - 1
        if j > best + 1e-12:
            best, best_t = j, t
    return best_t


def test_thresholds_are_youden_per_finding_on_validation_and_rates_are_read_on_test():
    y_val, s_val, _ = cohort(seed=1)
    y, s, groups = cohort(seed=2)
    chosen = finding_thresholds(y_val, s_val, NAMES)
    out = multilabel_record(y, s, groups, NAMES, chosen, specificity=0.8, n_boot=0)
    for k, name in enumerate(NAMES):
        known = y_val[:, k] >= 0
        t = explicit_youden(y_val[known, k], s_val[known, k])
        f = out["findings"][name]
        assert f["threshold"] == t and f["threshold_rule"] == "youden"
        kt = y[:, k] >= 0
        pos, neg = s[kt & (y[:, k] == 1), k], s[kt & (y[:, k] == 0), k]
        assert f["sensitivity"] == pytest.approx((pos >= t).mean())
        assert f["specificity"] == pytest.approx((neg < t).mean())
        assert f["prevalence"] == pytest.approx(len(pos) / (len(pos) + len(neg)))
        assert FINDING_KEYS <= set(f)
    assert out["task"] == "multilabel" and out["fixed_specificity"] == 0.8
    assert out["macro_auroc_ci"] is None  # no replicates asked
    json.dumps(out)


def test_a_model_saved_thresholds_are_read_only_when_complete():
    op = {"findings": {"a": {"threshold": 0.3}, "b": {"threshold": 0.7}}}
    assert model_thresholds(op, ["a", "b"]) == {"a": 0.3, "b": 0.7}
    assert model_thresholds(op, ["a", "c"]) is None
    assert model_thresholds(None, ["a"]) is None


def _predict_from_findings(noise: float = 0.8, seed: int = 0):
    """A stand-in classifier: per image (by id) a score that tracks its true findings."""

    def predict(m):
        y = m.findings()
        rng = np.random.default_rng([seed, *[int(c) for c in "".join(m.df["image_id"]).encode()]])
        z = 2.0 * (y == 1) + noise * rng.normal(size=y.shape)
        return 1 / (1 + np.exp(-z))

    return predict


def test_evaluate_findings_scores_the_labelled_test_rows_and_masks_unknowns(tmp_path):
    path = make_multilabel_manifest(tmp_path, n_patients=22, labelled_patients=6, test_patients=6)
    m = read_manifest(path)
    predict = _predict_from_findings()
    out, preds = evaluate_findings(predict, m, split="test", n_boot=50, seed=0, specificity=0.9)
    rows = m.subset((m.df["split"] == "test") & (m.df["label"] != ""))
    y = rows.findings()
    assert preds["y"].shape == (len(rows), len(FINDINGS)) and (preds["y"] == y).all()
    assert (preds["patient"] == patient_numbers(rows)).all()
    want = []
    for k in range(len(FINDINGS)):
        known = y[:, k] >= 0
        want.append(roc_auc_score(y[known, k], preds["proba"][known, k]))
    assert out["macro_auroc"] == pytest.approx(np.mean(want), abs=1e-12)
    assert list(out["findings"]) == list(FINDINGS)
    assert out["split"] == "test" and out["findings"]["bright"]["threshold_rule"] == "youden"
    # an unknown finding is not an absent one: moving its score changes nothing
    unknown = y == -1
    assert unknown.any()

    def moved(mm):
        p = predict(mm)
        return np.where(mm.findings() == -1, 1.0, p)

    out2, _ = evaluate_findings(moved, m, split="test", n_boot=50, seed=0)
    assert out2["macro_auroc"] == pytest.approx(out["macro_auroc"], abs=1e-12)
    assert out2["macro_auroc_ci"] == pytest.approx(out["macro_auroc_ci"], abs=1e-12)


def test_evaluate_findings_refuses_a_wrong_shape_and_an_empty_split(tmp_path):
    m = read_manifest(make_multilabel_manifest(tmp_path))
    with pytest.raises(MedclError, match="shape"):
        evaluate_findings(lambda r: np.zeros((len(r), 2)), m, split="val", n_boot=0)
    with pytest.raises(MedclError, match="no labelled rows"):
        evaluate_findings(_predict_from_findings(), m, split="nosuch", n_boot=0)


def test_the_printed_summary_names_every_finding_with_its_interval():
    y, s, groups = cohort()
    out = multilabel_record(y, s, groups, NAMES, {n: 0.5 for n in NAMES}, n_boot=50)
    lines = multilabel_summary(out, "test")
    low, high = out["macro_auroc_ci"]
    assert lines[0] == f"test: macro AUROC {out['macro_auroc']:.3f} (95 % CI {low:.3f}–{high:.3f})"
    assert [ln.split(":")[0].strip() for ln in lines[1:]] == NAMES
