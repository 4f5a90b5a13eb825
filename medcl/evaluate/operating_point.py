"""The operating point of a binary classifier: a threshold chosen on validation, read on test.

Notation: ``N`` images, ``y_i ∈ {0, 1}`` (1 = the positive class, the second declared class),
score ``s_i`` = the predicted probability of the positive class, threshold ``t``: an image is
called positive when ``s_i ≥ t``. With ``P = #{y = 1}`` and ``Q = #{y = 0}``,

    sensitivity(t) = #{i : y_i = 1, s_i ≥ t} / P,    specificity(t) = #{i : y_i = 0, s_i < t} / Q.

The candidate thresholds are the distinct validation scores (every other threshold calls the same
validation images positive as one of them, or none). The rules (``finetune.operating_point``,
:class:`medcl.config.OperatingPoint`):

- ``youden``: the candidate maximising Youden's J (Youden, Cancer 1950)
  ``J(t) = sensitivity(t) + specificity(t) − 1``, compared exactly as the integer
  ``P·Q·J(t) = TP(t)·Q − FP(t)·P``; ties go to the highest threshold (the most specific one).
  Needs both classes on validation.
- ``sensitivity=s``: the highest candidate with ``sensitivity(t) ≥ s`` (the most specific
  threshold that reaches the target on validation). Needs a positive on validation.

Without what a rule needs, the threshold is 0.5 (the argmax rule of two classes) and the rule says
so. The threshold is chosen on the validation predictions only; the test split is read at it, and
the test sensitivity and specificity get patient-bootstrap intervals (:func:`rates_on_test`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medcl.config import OperatingPoint
from medcl.evaluate.bootstrap import bootstrap_replicates
from medcl.evaluate.metrics import BINARY_POSITIVE

DEFAULT_THRESHOLD = 0.5
"""The threshold when validation cannot choose one (the argmax rule of two classes)."""


@dataclass(frozen=True)
class Threshold:
    """A threshold chosen on validation and what it gave there.

    Attributes:
        value: The threshold ``t`` on the positive class's probability.
        rule: The rule that chose it (``youden``, ``sensitivity=0.9``), or why the default was
            used.
        sensitivity: Validation sensitivity at ``t`` (``None`` without positives).
        specificity: Validation specificity at ``t`` (``None`` without negatives).
    """

    value: float
    rule: str
    sensitivity: float | None
    specificity: float | None


def _binary(y_pos: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_pos).astype(bool).reshape(-1)
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"{y.shape[0]} labels for {s.shape[0]} scores")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y, s


def roc_table(y_pos: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every candidate threshold with its true- and false-positive counts.

    Args:
        y_pos: Whether each image is positive, shape ``(N,)``.
        score: The positive class's probability of each image, shape ``(N,)``.

    Returns:
        ``(thresholds, tp, fp)``: the distinct scores in decreasing order and, at each,
        ``TP(t) = #{y = 1, s ≥ t}`` and ``FP(t) = #{y = 0, s ≥ t}`` (integers).
    """
    y, s = _binary(y_pos, score)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[s[1:] != s[:-1], True] if s.size else np.zeros(0, dtype=bool)
    tp = np.cumsum(y, dtype=np.int64)[last]
    fp = np.cumsum(~y, dtype=np.int64)[last]
    return s[last], tp, fp


def rates_at(
    y_pos: np.ndarray, score: np.ndarray, threshold: float
) -> tuple[float | None, float | None]:
    """``(sensitivity, specificity)`` when ``s ≥ threshold`` is called positive; ``None`` where a
    class is absent."""
    y, s = _binary(y_pos, score)
    called = s >= threshold
    sens = float(called[y].mean()) if y.any() else None
    spec = float((~called[~y]).mean()) if (~y).any() else None
    return sens, spec


def choose_threshold(y_pos: np.ndarray, score: np.ndarray, point: OperatingPoint) -> Threshold:
    """The threshold ``point`` chooses on these (validation) predictions (module docstring).

    Args:
        y_pos: Whether each validation image is positive, shape ``(N,)``.
        score: The positive class's validation probability of each image, shape ``(N,)``.
        point: The rule.

    Returns:
        The threshold and the validation sensitivity and specificity at it.
    """
    y, s = _binary(y_pos, score)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    thresholds, tp, fp = roc_table(y, s)
    if point.rule == "youden":
        if n_pos == 0 or n_neg == 0:
            return _default(y, s, "0.5: validation lacks a class, Youden's J is undefined")
        value = float(thresholds[int(np.argmax(tp * n_neg - fp * n_pos))])
    else:
        if n_pos == 0:
            return _default(y, s, "0.5: validation has no positive, sensitivity is undefined")
        target = float(point.target)  # type: ignore[arg-type]
        reached = tp / n_pos >= target  # k / n is correctly rounded: 9 / 10 == 0.9
        value = float(thresholds[int(np.argmax(reached))])  # the first (highest) that reaches it
    sens, spec = rates_at(y, s, value)
    return Threshold(value, str(point), sens, spec)


def _default(y: np.ndarray, s: np.ndarray, why: str) -> Threshold:
    sens, spec = rates_at(y, s, DEFAULT_THRESHOLD)
    return Threshold(DEFAULT_THRESHOLD, why, sens, spec)


def threshold_record(threshold: Threshold, positive_class: str, val_auroc: float | None) -> dict:
    """The ``operating_point`` entry of a binary model's metadata (JSON-serialisable)."""
    return {
        "positive_class": positive_class,
        "rule": threshold.rule,
        "threshold": threshold.value,
        "val_sensitivity": threshold.sensitivity,
        "val_specificity": threshold.specificity,
        "val_auroc": val_auroc,
    }


def rates_on_test(
    y_true: np.ndarray,
    proba: np.ndarray,
    record: dict[str, Any],
    groups: np.ndarray | None = None,
    n_boot: int = 0,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Test sensitivity and specificity of a binary model at its validation threshold, with
    patient-bootstrap intervals.

    The intervals resample the test patients as every other test interval does
    (:func:`medcl.evaluate.bootstrap.bootstrap_replicates`, the same ``seed`` drawing the same
    patients): the thresholded calls are the argmax of one-hot rows, so sensitivity is the
    positive class's recall and specificity the negative class's.

    Args:
        y_true: Test class indices (0 or 1), shape ``(N,)``.
        proba: Test probabilities, shape ``(N, 2)``.
        record: The model's ``operating_point`` (:func:`threshold_record`).
        groups: Patient id of each test image (for the intervals).
        n_boot: Bootstrap replicates (0 or no ``groups``: no intervals).
        seed: Seed of the bootstrap.
        alpha: Miscoverage of the intervals.

    Returns:
        ``{"threshold", "sensitivity", "specificity", "sensitivity_ci", "specificity_ci",
        "operating_point"}`` (``None`` where a class is absent from the test rows or no interval
        was asked; ``operating_point`` is ``record``), and with intervals ``intervals`` =
        ``{"sensitivity", "specificity": {"value", "low", "high", "n_boot_valid"}}`` as
        :func:`~medcl.evaluate.bootstrap.metrics_with_intervals` gives them.
    """
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=np.float64)
    t = float(record["threshold"])
    sens, spec = rates_at(y == BINARY_POSITIVE, p[:, BINARY_POSITIVE], t)
    out = {"threshold": t, "sensitivity": sens, "specificity": spec}
    out |= {"sensitivity_ci": None, "specificity_ci": None, "operating_point": record}
    if groups is None or n_boot <= 0:
        return out
    called = (p[:, BINARY_POSITIVE] >= t).astype(np.int64)
    names = ["negative", "positive"]  # placeholders: column order is what counts
    metric = {"sensitivity": "sensitivity:positive", "specificity": "sensitivity:negative"}
    reps = bootstrap_replicates(
        y, np.eye(2)[called], groups, names, list(metric.values()), n_boot, seed
    )
    out["intervals"] = {}
    for key, name in metric.items():
        valid = reps[name][~np.isnan(reps[name])]
        low = high = None
        if valid.size:
            low, high = (float(q) for q in np.quantile(valid, [alpha / 2, 1 - alpha / 2]))
            out[f"{key}_ci"] = [low, high]
        iv = {"value": out[key], "low": low, "high": high, "n_boot_valid": int(valid.size)}
        out["intervals"][key] = iv
    return out
