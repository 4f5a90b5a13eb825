"""The dashboard's multi-label helpers on small tables checked by hand and against scikit-learn:
wrong calls per finding (unknown findings never count), counts per split, ROC curves, colours."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medcl.app import findings as fnd
from medcl.app.figures import UNLABELLED

NAMES = ["a", "b"]


def table() -> pd.DataFrame:
    rows = [  # image, split, findings, p(a), p(b); patient = "p" + image
        ("t1", "test", "a", 0.2, 0.6),
        ("t2", "test", "?a|b", 0.9, 0.1),
        ("t3", "test", "-", 0.7, 0.3),
        ("t4", "test", "a|b", 0.8, 0.9),
        ("v1", "val", "a", 0.1, 0.9),
        ("r1", "train", "", 0.9, 0.9),
    ]
    df = pd.DataFrame(rows, columns=["image_id", "split", "label", "prob_a", "prob_b"])
    return df.assign(patient_key="p" + df["image_id"])


def test_wrong_calls_skip_unknown_findings_and_come_most_confident_first():
    out = fnd.finding_errors(table(), NAMES, {"a": 0.5, "b": 0.5})
    # t1: a present at 0.2 (missed), b absent at 0.6 (false alarm); t2: a unknown (not counted),
    # b present at 0.1 (missed); t3: a absent at 0.7 (false alarm); t4: right on both
    got = [(r.image_id, r.finding, r.status) for r in out.itertuples()]
    assert got == [
        ("t2", "b", "missed"),  # |0.1 − 0.5| = 0.4
        ("t1", "a", "missed"),  # 0.3
        ("t3", "a", "false alarm"),  # 0.2
        ("t1", "b", "false alarm"),  # 0.1
    ]
    assert list(out.columns) == list(fnd.ERROR_COLUMNS)
    only_b = fnd.finding_errors(table(), NAMES, {"a": 0.5, "b": 0.05}, only=["b"])
    assert list(only_b["image_id"]) == ["t1", "t3"]  # b called on every image: absent ones wrong


def test_counts_per_split_and_thresholds_default():
    counts = fnd.finding_counts(table(), NAMES)
    assert counts.loc["a", "test (present/absent/unknown)"] == "2/1/1"
    assert counts.loc["b", "test (present/absent/unknown)"] == "2/2/0"
    assert counts.loc["(unlabelled images)", "train (present/absent/unknown)"] == "1"
    metrics = {"findings": {"a": {"threshold": 0.3}, "b": {"threshold": None}}}
    assert fnd.thresholds(metrics, NAMES) == {"a": 0.3, "b": 0.5}


def test_roc_curves_match_sklearn_on_the_known_test_images():
    rng = np.random.default_rng(0)
    n = 60
    y = rng.integers(0, 2, (n, 2))
    y[rng.random((n, 2)) < 0.2] = -1
    labels = [
        "|".join(f"?{c}" if y[i, k] < 0 else c for k, c in enumerate(NAMES) if y[i, k] != 0) or "-"
        for i in range(n)
    ]
    s = np.round(rng.random((n, 2)), 1)  # ties
    df = pd.DataFrame({"split": "test", "label": labels, "prob_a": s[:, 0], "prob_b": s[:, 1]})
    curves = fnd.roc_curves(df, NAMES)
    for k, name in enumerate(NAMES):
        fpr, tpr = curves[name]
        known = y[:, k] >= 0
        assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(y[known, k], s[known, k]))


def test_colour_by_finding():
    colours = fnd.colour_by_finding(table(), "a", NAMES)
    assert colours.tolist() == ["present", "unknown", "absent", "present", "present", UNLABELLED]


def test_run_is_multilabel_by_its_manifest_model_or_metrics():
    assert fnd.is_multilabel(None, "multilabel")
    assert fnd.is_multilabel({}, "", "multilabel")
    assert fnd.is_multilabel({"task": "multilabel"})
    assert not fnd.is_multilabel({"balanced_accuracy": 0.5}, "multiclass")
