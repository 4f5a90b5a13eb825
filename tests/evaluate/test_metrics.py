"""classification_metrics against scikit-learn, a hand-computed example, and edge cases."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from medcl.evaluate.metrics import OvrAuroc, classification_metrics


def random_predictions(
    n: int, n_classes: int, seed: int, ties: bool = False, absent: tuple[int, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and informative probabilities; ``ties`` draws them from a coarse grid."""
    rng = np.random.default_rng(seed)
    present = [k for k in range(n_classes) if k not in absent]
    y = rng.choice(present, size=n)
    if ties:
        k = rng.integers(0, 4, size=(n, n_classes)).astype(float) + 0.5
        k[np.arange(n), y] += rng.integers(0, 3, size=n)
        return y, k / k.sum(axis=1, keepdims=True)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), y] += 1.0
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


def none_to_nan(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


@pytest.mark.parametrize(
    ("n_classes", "seed", "ties"), [(2, 0, False), (3, 1, False), (5, 2, False), (4, 3, True)]
)
def test_matches_sklearn_on_random_data(n_classes: int, seed: int, ties: bool):
    y, p = random_predictions(300, n_classes, seed, ties)
    classes = [f"class{k}" for k in range(n_classes)]
    m = classification_metrics(y, p, classes)
    pred = np.argmax(p, axis=1)
    labels = list(range(n_classes))

    assert m["n"] == 300
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-12)
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)
    sk_auc = (
        roc_auc_score(y, p[:, 1])
        if n_classes == 2
        else roc_auc_score(y, p, multi_class="ovr", average="macro")
    )
    assert m["macro_auroc"] == pytest.approx(sk_auc, abs=1e-12)
    cm = sk_confusion_matrix(y, pred, labels=labels)
    assert m["confusion_matrix"] == cm.tolist()

    recall = recall_score(y, pred, labels=labels, average=None)
    precision = precision_score(y, pred, labels=labels, average=None)
    f1 = f1_score(y, pred, labels=labels, average=None)
    for k, name in enumerate(classes):
        pc = m["per_class"][name]
        tp = cm[k, k]
        fp = cm[:, k].sum() - tp
        fn = cm[k].sum() - tp
        tn = cm.sum() - tp - fp - fn
        assert pc["sensitivity"] == pytest.approx(recall[k], abs=1e-12)
        assert pc["specificity"] == pytest.approx(tn / (tn + fp), abs=1e-12)
        assert pc["precision"] == pytest.approx(precision[k], abs=1e-12)
        assert pc["f1"] == pytest.approx(f1[k], abs=1e-12)
        assert pc["auroc"] == pytest.approx(roc_auc_score(y == k, p[:, k]), abs=1e-12)
        assert pc["support"] == int((y == k).sum())


def test_hand_computed_example():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array(
        [
            [0.7, 0.2, 0.1],  # true a, pred a
            [0.3, 0.6, 0.1],  # true a, pred b
            [0.3, 0.4, 0.3],  # true b, pred b  (ties a-score of image 1)
            [0.1, 0.8, 0.1],  # true b, pred b
            [0.5, 0.1, 0.4],  # true c, pred a
            [0.1, 0.2, 0.7],  # true c, pred c
        ]
    )
    m = classification_metrics(y, p, ["a", "b", "c"])
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    # a: TP 1 FP 1 FN 1 TN 3; b: TP 2 FP 1 FN 0 TN 3; c: TP 1 FP 0 FN 1 TN 4.
    expected = {
        "a": dict(sensitivity=1 / 2, specificity=3 / 4, precision=1 / 2, f1=2 / 4),
        "b": dict(sensitivity=1.0, specificity=3 / 4, precision=2 / 3, f1=4 / 5),
        "c": dict(sensitivity=1 / 2, specificity=1.0, precision=1.0, f1=2 / 3),
    }
    # AUROC a: positives 0.7 (beats 4 negatives), 0.3 (beats 0.1, 0.1, ties 0.3, loses to 0.5):
    # (4 + 2.5) / 8; b: 0.4 beats 3 of 4, 0.8 beats 4: 7 / 8; c: 0.4 and 0.7 beat all: 1.
    auroc = {"a": 6.5 / 8, "b": 7 / 8, "c": 1.0}
    for name, exp in expected.items():
        for key, value in exp.items():
            assert m["per_class"][name][key] == pytest.approx(value), (name, key)
        assert m["per_class"][name]["auroc"] == pytest.approx(auroc[name])
        assert m["per_class"][name]["support"] == 2
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert m["macro_auroc"] == pytest.approx((6.5 / 8 + 7 / 8 + 1) / 3)
    # ECE (15 bins): confidences .7 ok, .6 no, .4 ok, .8 ok, .5 no, .7 ok; the two .7 share a bin:
    # (|1-.4| + |0-.5| + |0-.6| + |2-1.4| + |1-.8|) / 6.
    assert m["ece"] == pytest.approx(2.5 / 6)


def test_class_absent_from_y_true():
    y, p = random_predictions(200, 4, seed=5, absent=(2,))
    m = classification_metrics(y, p, ["n", "s", "m", "x"])
    pred = np.argmax(p, axis=1)
    assert (pred == 2).any()  # the absent class is predicted, so it enters macro F1 with F1 = 0
    absent = m["per_class"]["m"]
    assert absent["sensitivity"] is None and absent["auroc"] is None and absent["support"] == 0
    assert absent["f1"] == 0.0 and absent["precision"] == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
        assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
        sens = recall_score(y, pred, labels=range(4), average=None, zero_division=np.nan)
    got = none_to_nan([m["per_class"][c]["sensitivity"] for c in ["n", "s", "m", "x"]])
    np.testing.assert_allclose(got, sens)
    present = [0, 1, 3]
    ref = np.mean([roc_auc_score(y == k, p[:, k]) for k in present])
    assert m["macro_auroc"] == pytest.approx(ref)
    json.dumps(m, allow_nan=False)


def test_single_class_in_y_true():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=20)
    y = np.ones(20, dtype=int)
    m = classification_metrics(y, p, ["a", "b", "c"])
    assert m["macro_auroc"] is None
    assert all(m["per_class"][c]["auroc"] is None for c in "abc")
    assert m["per_class"]["b"]["specificity"] is None  # no negatives
    assert m["per_class"]["a"]["sensitivity"] is None
    assert m["per_class"]["b"]["sensitivity"] == pytest.approx(np.mean(p.argmax(1) == 1))
    assert m["balanced_accuracy"] == pytest.approx(m["accuracy"])
    json.dumps(m, allow_nan=False)


def test_class_never_predicted_has_undefined_precision():
    y = np.array([0, 1, 1, 0])
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.7, 0.3]])
    m = classification_metrics(y, p, ["neg", "pos"])
    assert m["per_class"]["pos"]["precision"] is None
    assert m["per_class"]["pos"]["f1"] == 0.0
    assert m["per_class"]["neg"]["specificity"] == 0.0
    assert m["macro_auroc"] == pytest.approx(roc_auc_score(y, p[:, 1]))


def test_output_is_plain_json():
    y, p = random_predictions(50, 3, seed=9)
    m = classification_metrics(y, p, ["a", "b", "c"])
    assert json.loads(json.dumps(m, allow_nan=False)) == m
    assert set(m) == {
        "accuracy",
        "balanced_accuracy",
        "macro_auroc",
        "macro_f1",
        "per_class",
        "ece",
        "confusion_matrix",
        "n",
    }
    assert set(m["per_class"]["a"]) == {
        "sensitivity",
        "specificity",
        "precision",
        "f1",
        "auroc",
        "support",
    }


def test_weighted_auroc_equals_auroc_of_repeated_data():
    y, p = random_predictions(60, 3, seed=4, ties=True)
    w = np.random.default_rng(1).integers(0, 4, size=(5, 60))
    got = OvrAuroc(y, p)(w)
    for b in range(5):
        idx = np.repeat(np.arange(60), w[b])
        for k in range(3):
            assert got[b, k] == pytest.approx(roc_auc_score(y[idx] == k, p[idx, k]), abs=1e-12)


@pytest.mark.parametrize(
    ("y", "p", "classes", "match"),
    [
        (np.zeros(0, int), np.zeros((0, 2)), ["a", "b"], "empty"),
        (np.array([0, 1]), np.array([[0.5, 0.5]]), ["a", "b"], "rows"),
        (np.array([0, 2]), np.array([[0.5, 0.5], [0.5, 0.5]]), ["a", "b"], "outside"),
        (np.array([0, 1]), np.array([[2.0, -1.0], [0.5, 0.5]]), ["a", "b"], "negative"),
        (np.array([0, 1]), np.array([[2.0, 1.0], [0.5, 0.5]]), ["a", "b"], "sum to 1"),
        (np.array([0, 1]), np.array([[np.nan, 0.5], [0.5, 0.5]]), ["a", "b"], "NaN"),
        (np.array([0, 1]), np.array([[0.5, 0.5], [0.5, 0.5]]), ["a", "b", "c"], "3 class"),
        (np.array([0, 1]), np.array([[0.5, 0.5], [0.5, 0.5]]), ["a", "a"], "unique"),
        (np.array([0.5, 1]), np.array([[0.5, 0.5], [0.5, 0.5]]), ["a", "b"], "integer"),
    ],
)
def test_invalid_inputs_raise(y, p, classes, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(y, p, classes)
