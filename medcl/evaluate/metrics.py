"""Multi-class classification metrics from predicted probabilities.

Notation: ``N`` images, ``C`` classes, true indices ``y_i``, probabilities ``p_ik`` (rows sum to 1),
prediction ``yhat_i = argmax_k p_ik`` (first maximum on ties). The confusion matrix ``M`` has
``M[t, q] = #{i : y_i = t, yhat_i = q}`` (rows true, columns predicted, all ``C`` classes in
order). For class ``k``, one-vs-rest: ``TP = M[k, k]``, ``support = P = sum_q M[k, q]``,
``predicted = sum_t M[t, k]``, ``FP = predicted - TP``, ``FN = P - TP``, ``TN = N - P - FP``.

- sensitivity (recall) ``TP / P``; specificity ``TN / (N - P)``; precision ``TP / (TP + FP)``;
  F1 ``2 TP / (2 TP + FP + FN)`` (equal to ``2 PR / (P + R)`` whenever that is defined).
  A ratio whose denominator is 0 is *undefined* and reported as ``None``: sensitivity of a class
  absent from ``y_true``, specificity of a class that is all of ``y_true``, precision of a class
  never predicted, F1 of a class neither present nor predicted.
- accuracy ``trace(M) / N``.
- balanced accuracy: the mean sensitivity over the classes present in ``y_true`` (Brodersen et
  al., ICPR 2010; scikit-learn's ``balanced_accuracy_score``).
- macro F1: the mean F1 over the classes with a defined F1, i.e. present in ``y_true`` or
  predicted (an absent class that is predicted scores 0); scikit-learn's
  ``f1_score(average="macro")`` with its default labels.
- AUROC of class ``k``: the area under the ROC curve of score ``p_.k`` for ``y == k`` vs
  ``y != k``, computed as the Mann-Whitney statistic (Hanley & McNeil, Radiology 1982)
  ``AUC = (1 / (P * Q)) sum_{i: y_i = k} sum_{j: y_j != k} (1[p_ik > p_jk] + 0.5 * 1[p_ik = p_jk])``
  with ``Q = N - P``; undefined unless the class has both positives and negatives in ``y_true``.
- macro AUROC: one-vs-rest macro average (Fawcett, Pattern Recognit. Lett. 2006; scikit-learn's
  ``roc_auc_score(multi_class="ovr", average="macro")``) over the classes whose AUROC is defined;
  ``None`` when none is (a single class in ``y_true``). When some classes are absent this averages
  fewer classes than scikit-learn, which refuses such input.
- AUROC of a binary task (two classes): the AUROC of the positive class, the second declared class
  (:data:`BINARY_POSITIVE`), scikit-learn's ``roc_auc_score(y, p[:, 1])``. It equals the macro
  AUROC (the first class's curve is the second's mirrored), but is named for what it is.
- ECE: :func:`medcl.evaluate.calibration.expected_calibration_error` with 15 bins.

The helpers :func:`confusion_rates` and :class:`OvrAuroc` work on batches of *weighted* data (a
sample weight per image and per batch row); :mod:`medcl.evaluate.bootstrap` uses them with the
bootstrap multiplicities as weights, which gives exactly the metrics of the resampled sets.
"""

from __future__ import annotations

import numpy as np

from medcl.evaluate.calibration import _as_predictions, expected_calibration_error

ECE_BINS = 15

BINARY_POSITIVE = 1
"""The positive class of a binary task: the second declared class (column 1)."""


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` elementwise, NaN where ``den == 0``, without warnings."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def nan_mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean of the non-NaN entries along ``axis``; NaN where all are NaN (and no warning)."""
    ok = ~np.isnan(x)
    return _ratio(np.where(ok, x, 0.0).sum(axis=axis), ok.sum(axis=axis))


def confusion_rates(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class rates and summary metrics of a batch of (possibly weighted) confusion matrices.

    Args:
        cm: Shape ``(B, C, C)``, ``cm[b, t, q]`` = total weight of images with true class ``t``
            predicted as ``q`` in batch row ``b``; each row must have a positive total.

    Returns:
        Arrays with NaN for undefined values (see the module docstring): per class, shape
        ``(B, C)``: ``sensitivity``, ``specificity``, ``precision``, ``f1``, ``support``; per row,
        shape ``(B,)``: ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``n``.
    """
    cm = np.asarray(cm, dtype=np.float64)
    n = cm.sum(axis=(1, 2))
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support = cm.sum(axis=2)
    predicted = cm.sum(axis=1)
    fp = predicted - tp
    negatives = n[:, None] - support
    tn = negatives - fp
    sensitivity = _ratio(tp, support)
    f1 = _ratio(2 * tp, support + predicted)
    return {
        "sensitivity": sensitivity,
        "specificity": _ratio(tn, negatives),
        "precision": _ratio(tp, predicted),
        "f1": f1,
        "support": support,
        "accuracy": _ratio(tp.sum(axis=1), n),
        "balanced_accuracy": nan_mean(sensitivity),
        "macro_f1": nan_mean(f1),
        "n": n,
    }


class OvrAuroc:
    """One-vs-rest AUROC of every class under batches of per-image weights.

    The scores of each class are sorted once; a call with weights ``W`` of shape ``(B, N)``
    evaluates, for every row ``b`` and class ``k``, the weighted Mann-Whitney statistic

        AUC_bk = sum_{i pos, j neg} W_bi W_bj (1[s_i > s_j] + 0.5 * 1[s_i = s_j]) / (P_bk Q_bk)

    with ``P_bk`` / ``Q_bk`` the total positive / negative weight, in ``O(B N)`` per class: ties
    are grouped, and each group contributes ``pos_g * (neg_below_g + neg_g / 2)``. With integer
    weights (bootstrap multiplicities) this equals the plain AUROC of the data set in which image
    ``i`` appears ``W_bi`` times.

    Args:
        y_true: Validated true class indices, shape ``(N,)``.
        proba: Validated probabilities, shape ``(N, C)``.
    """

    def __init__(self, y_true: np.ndarray, proba: np.ndarray) -> None:
        self.n_classes = proba.shape[1]
        self._order: list[np.ndarray] = []
        self._positive: list[np.ndarray] = []
        self._tie_starts: list[np.ndarray | None] = []
        for k in range(self.n_classes):
            order = np.argsort(proba[:, k], kind="stable")
            s = proba[order, k]
            new_group = np.r_[True, s[1:] != s[:-1]]
            self._order.append(order)
            self._positive.append(y_true[order] == k)
            self._tie_starts.append(None if new_group.all() else np.flatnonzero(new_group))

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        """AUROC per row and class, shape ``(B, C)``; NaN where a class lacks positive or negative
        weight.

        Args:
            weights: Non-negative per-image weights, shape ``(B, N)``.
        """
        w = np.asarray(weights, dtype=np.float64)
        out = np.empty((w.shape[0], self.n_classes))
        for k in range(self.n_classes):
            ws = w[:, self._order[k]]
            pos = np.where(self._positive[k], ws, 0.0)
            neg = ws - pos
            starts = self._tie_starts[k]
            if starts is not None:
                pos = np.add.reduceat(pos, starts, axis=1)
                neg = np.add.reduceat(neg, starts, axis=1)
            neg_below = np.cumsum(neg, axis=1) - neg
            u = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
            out[:, k] = _ratio(u, pos.sum(axis=1) * neg.sum(axis=1))
        return out


def _num(x: float) -> float | None:
    """A Python float, or ``None`` for NaN (JSON has no NaN)."""
    return None if np.isnan(x) else float(x)


def _check_classes(classes: list[str], n_classes: int | None = None) -> list[str]:
    names = [str(c) for c in classes]
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique, got {names}")
    if n_classes is not None and len(names) != n_classes:
        raise ValueError(f"{len(names)} class names for {n_classes} probability columns")
    return names


def confusion_matrix(y_true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Integer confusion matrix ``(C, C)``, rows true, columns predicted, labels ``0..C-1``."""
    flat = np.asarray(y_true, dtype=np.int64) * n_classes + np.asarray(pred, dtype=np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, balanced accuracy, macro AUROC / F1, per-class rates, ECE and confusion matrix.

    Definitions are in the module docstring; predictions are ``argmax`` of ``proba``.

    Args:
        y_true: True class indices, shape ``(N,)``, in ``[0, C)``.
        proba: Class probabilities, shape ``(N, C)``, rows summing to 1.
        classes: The ``C`` class names, in column order.

    Returns:
        A JSON-serialisable dict: ``accuracy``, ``balanced_accuracy``, ``macro_auroc`` (``None``
        when no class has both positives and negatives), ``macro_f1``, ``ece`` (15 bins),
        ``per_class`` = ``{name: {"sensitivity", "specificity", "precision", "f1", "auroc",
        "support"}}`` (``None`` for undefined values, ``support`` an int), ``confusion_matrix``
        (list of ``C`` lists of ``C`` ints, rows true, columns predicted) and ``n``; with two
        classes also ``auroc``, the positive (second) class's AUROC (``None`` when undefined).

    Raises:
        ValueError: On ``N = 0``, mismatched shapes, labels outside ``[0, C)``, invalid
            probabilities or duplicate / miscounted class names.
    """
    y, p = _as_predictions(y_true, proba)
    names = _check_classes(classes, p.shape[1])
    n_classes = p.shape[1]
    cm = confusion_matrix(y, np.argmax(p, axis=1), n_classes)
    rates = {k: v[0] for k, v in confusion_rates(cm[None]).items()}
    auroc = OvrAuroc(y, p)(np.ones((1, y.shape[0])))[0]
    per_class = {
        name: {
            "sensitivity": _num(rates["sensitivity"][k]),
            "specificity": _num(rates["specificity"][k]),
            "precision": _num(rates["precision"][k]),
            "f1": _num(rates["f1"][k]),
            "auroc": _num(auroc[k]),
            "support": int(cm[k].sum()),
        }
        for k, name in enumerate(names)
    }
    out = {
        "accuracy": float(rates["accuracy"]),
        "balanced_accuracy": float(rates["balanced_accuracy"]),
        "macro_auroc": _num(nan_mean(auroc)),
        "macro_f1": float(rates["macro_f1"]),
        "per_class": per_class,
        "ece": expected_calibration_error(y, p, n_bins=ECE_BINS),
        "confusion_matrix": cm.astype(int).tolist(),
        "n": int(y.shape[0]),
    }
    if n_classes == 2:
        out["auroc"] = _num(auroc[BINARY_POSITIVE])
    return out
