"""Calibration of the top-label confidence: expected calibration error and reliability curves.

For ``N`` images with true class ``y_i`` and predicted probabilities ``p_i`` (a row of ``C``
probabilities summing to 1), the prediction is ``yhat_i = argmax_k p_ik`` (first maximum on ties),
the confidence is ``c_i = max_k p_ik`` and the image is correct when ``yhat_i == y_i``.

The unit interval is cut into ``M`` equal-width, right-closed bins with edges
``e_m = m / M`` (``numpy.arange(M + 1) / M``, so that a confidence written as ``0.3`` lies on the
edge ``3 / 10``): bin ``m`` (0-based) holds the confidences in ``(e_m, e_{m+1}]``, and a confidence
of exactly 0 joins bin 0. With ``B_m`` the images of bin ``m``,
``acc(B_m) = mean_{i in B_m} 1[yhat_i == y_i]`` and ``conf(B_m) = mean_{i in B_m} c_i``, the
expected calibration error (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017,
eq. 3; after Naeini et al., AAAI 2015) is

    ECE = sum_m (|B_m| / N) * |acc(B_m) - conf(B_m)|
        = (1 / N) * sum_m | sum_{i in B_m} (1[yhat_i == y_i] - c_i) |.

It lies in [0, 1]; 0 means that, within every bin, accuracy equals mean confidence. The second
form is what :mod:`medcl.evaluate.bootstrap` evaluates with per-patient bin sums.
"""

from __future__ import annotations

import numpy as np

_ROW_SUM_ATOL = 1e-3


def _as_predictions(
    y_true: np.ndarray, proba: np.ndarray, n_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert ``(y_true, proba)`` to ``int64 (N,)`` and ``float64 (N, C)`` arrays.

    Shared by the whole ``medcl.evaluate`` package.

    Args:
        y_true: True class indices, shape ``(N,)``; integers, or floats holding whole numbers.
        proba: Class probabilities, shape ``(N, C)``; finite, non-negative, rows summing to 1
            (absolute tolerance 1e-3).
        n_classes: Expected ``C``, if known (e.g. ``len(classes)``).

    Raises:
        ValueError: On an empty set, wrong shapes or dtypes, labels outside ``[0, C)``,
            non-finite or negative probabilities, or rows not summing to 1 (logits passed by
            mistake, for instance).
    """
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D (N,), got shape {y.shape}")
    if p.ndim != 2:
        raise ValueError(f"proba must be 2-D (N, C), got shape {p.shape}")
    if y.shape[0] == 0:
        raise ValueError("cannot compute metrics on an empty set (N = 0)")
    if p.shape[0] != y.shape[0]:
        raise ValueError(f"y_true has {y.shape[0]} rows but proba has {p.shape[0]}")
    if n_classes is not None and p.shape[1] != n_classes:
        raise ValueError(f"proba has {p.shape[1]} columns but there are {n_classes} classes")
    if p.shape[1] < 1:
        raise ValueError("proba must have at least one column")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError("y_true must hold integer class indices")
    elif y.dtype.kind not in "iub":
        raise ValueError(f"y_true must hold integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(
            f"y_true holds class indices outside [0, {p.shape[1]}): min {y.min()}, max {y.max()}"
        )
    if not np.all(np.isfinite(p)):
        raise ValueError("proba holds NaN or infinite values")
    if p.min() < 0:
        raise ValueError("proba holds negative values; pass probabilities, not logits")
    worst = float(np.max(np.abs(p.sum(axis=1) - 1.0)))
    if worst > _ROW_SUM_ATOL:
        raise ValueError(
            f"proba rows must sum to 1 (worst deviation {worst:.3g}); apply softmax to logits"
        )
    return y, p


def _check_n_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)


def confidence_bins(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index in ``[0, n_bins)`` of each confidence, for right-closed equal-width bins.

    Bin ``m`` is ``(m / M, (m + 1) / M]`` with edges ``np.arange(M + 1) / M``; a confidence of 0
    goes to bin 0.

    Args:
        confidence: Values in [0, 1], any shape.
        n_bins: Number of bins ``M``.
    """
    n_bins = _check_n_bins(n_bins)
    edges = np.arange(n_bins + 1) / n_bins
    idx = np.searchsorted(edges, confidence, side="left") - 1
    return np.clip(idx, 0, n_bins - 1)


def top_label(proba: np.ndarray, y_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confidence ``max_k p_ik`` and correctness ``1[argmax_k p_ik == y_i]`` (as float)."""
    pred = np.argmax(proba, axis=1)
    return proba[np.arange(proba.shape[0]), pred], (pred == y_true).astype(np.float64)


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error of the top-label confidence (Guo et al., 2017).

    ``ECE = sum_m (|B_m| / N) |acc(B_m) - conf(B_m)|`` over ``n_bins`` equal-width, right-closed
    confidence bins (see the module docstring for the exact binning).

    Args:
        y_true: True class indices, shape ``(N,)``.
        proba: Class probabilities, shape ``(N, C)``, rows summing to 1.
        n_bins: Number of bins; 15 as in Guo et al.

    Returns:
        The ECE, in [0, 1].

    Raises:
        ValueError: On invalid inputs (see :func:`_as_predictions`) or ``n_bins < 1``.
    """
    y, p = _as_predictions(y_true, proba)
    n_bins = _check_n_bins(n_bins)
    conf, correct = top_label(p, y)
    gap = np.bincount(confidence_bins(conf, n_bins), weights=correct - conf, minlength=n_bins)
    return float(np.abs(gap).sum() / y.shape[0])


def reliability_curve(y_true: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> dict:
    """Per-bin accuracy and mean confidence of the top label, for a reliability diagram.

    Uses the same bins as :func:`expected_calibration_error` (Guo et al., 2017, Fig. 1). A
    perfectly calibrated model has ``accuracy == confidence`` in every non-empty bin.

    Args:
        y_true: True class indices, shape ``(N,)``.
        proba: Class probabilities, shape ``(N, C)``, rows summing to 1.
        n_bins: Number of equal-width bins on [0, 1].

    Returns:
        A JSON-serialisable dict with, per bin (lists of length ``n_bins``): ``bin_centers``
        (``(m + 0.5) / M``), ``accuracy`` (fraction correct; ``None`` for an empty bin),
        ``confidence`` (mean top-label probability; ``None`` for an empty bin), ``counts``
        (number of images); plus ``bin_edges`` (``n_bins + 1`` values), ``n`` (images) and
        ``ece`` (the ECE with these ``n_bins`` bins).

    Raises:
        ValueError: On invalid inputs or ``n_bins < 1``.
    """
    y, p = _as_predictions(y_true, proba)
    n_bins = _check_n_bins(n_bins)
    conf, correct = top_label(p, y)
    b = confidence_bins(conf, n_bins)
    counts = np.bincount(b, minlength=n_bins)
    sum_correct = np.bincount(b, weights=correct, minlength=n_bins)
    sum_conf = np.bincount(b, weights=conf, minlength=n_bins)
    edges = np.arange(n_bins + 1) / n_bins
    accuracy = [float(s / k) if k else None for s, k in zip(sum_correct, counts, strict=True)]
    confidence = [float(s / k) if k else None for s, k in zip(sum_conf, counts, strict=True)]
    return {
        "bin_edges": edges.tolist(),
        "bin_centers": ((edges[:-1] + edges[1:]) / 2).tolist(),
        "accuracy": accuracy,
        "confidence": confidence,
        "counts": counts.astype(int).tolist(),
        "n": int(y.shape[0]),
        "ece": float(np.abs(sum_correct - sum_conf).sum() / y.shape[0]),
    }
