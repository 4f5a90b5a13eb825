"""Patient-level percentile bootstrap confidence intervals for classification metrics.

Images of one patient are correlated, so the resampling unit is the patient, not the image
(cluster bootstrap; Davison & Hinkley, "Bootstrap Methods and their Application", 1997, sec. 3.8;
Field & Welsh, JRSS-B 2007). With ``P`` distinct patients in ``groups``, each replicate ``b``
draws ``P`` patients uniformly with replacement and takes all images of every drawn patient; a
patient drawn ``m`` times contributes its images ``m`` times. The metric of the replicate is
``theta*_b``; the ``1 - alpha`` interval is the percentile interval (Efron & Tibshirani, "An
Introduction to the Bootstrap", 1993, ch. 13)

    [ q_{alpha/2}(theta*), q_{1 - alpha/2}(theta*) ]

with ``q`` the empirical quantile (``numpy.quantile``, linear interpolation) over the replicates
where the metric is defined. Replicates where it is undefined (e.g. macro AUROC when the drawn
patients carry a single class) are skipped and the number kept is reported as ``n_boot_valid``;
the interval is then conditional on the metric being defined. In a replicate missing some
classes, balanced accuracy, macro F1 and macro AUROC average over the classes available in that
replicate, exactly as :func:`~medcl.evaluate.metrics.classification_metrics` would on that set.

Fast path (exact, not an approximation): replicate ``b`` is represented by patient multiplicities
``m_b`` (length ``P``). Every confusion-matrix metric is a function of the weighted confusion
counts ``m_b @ K`` with ``K[p]`` the flattened confusion matrix of patient ``p``; the ECE is
``sum_bins |m_b @ G| / (m_b @ n_img)`` with ``G[p, bin] = sum (correct - confidence)`` over the
patient's images in that bin; the AUROC is the weighted Mann-Whitney statistic with image
weights ``m_b[patient(i)]`` (:class:`~medcl.evaluate.metrics.OvrAuroc`). These equal the metrics
of the materialised resampled set; the tests check this against an explicit resampling loop.

Random stream: ``numpy.random.default_rng(seed)``, then for each replicate in order one call
``rng.integers(0, P, size=P)`` indexing the patients sorted by id (``numpy.unique``). The draws
depend only on ``seed`` and the set of patient ids, so two models evaluated on the same test set
with the same seed see the same replicates (usable for paired comparisons).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from medcl.evaluate.calibration import _as_predictions, confidence_bins, top_label
from medcl.evaluate.metrics import (
    BINARY_POSITIVE,
    ECE_BINS,
    OvrAuroc,
    _check_classes,
    _num,
    classification_metrics,
    confusion_rates,
    nan_mean,
)

DEFAULT_METRICS = ("accuracy", "balanced_accuracy", "macro_auroc", "macro_f1", "ece")
SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "macro_auroc", "macro_f1", "ece", "auroc")
BINARY_METRICS = ("auroc",)
"""Summary metrics of a binary task only (``auroc``: the positive, second class's AUROC)."""
PER_CLASS_METRICS = ("sensitivity", "specificity", "precision", "f1", "auroc")

# Upper bound on the elements of one (replicates x images) weight block used for the AUROC.
_BLOCK_ELEMENTS = 1 << 22


def _patients(groups: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct patient ids and, per image, the index of its patient."""
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] != n:
        raise ValueError(f"groups must have shape ({n},) (one patient id per image), got {g.shape}")
    if pd.isna(g).any():
        raise ValueError("groups holds missing patient ids")
    try:
        ids, inverse = np.unique(g, return_inverse=True)
    except TypeError as e:
        raise ValueError(f"patient ids in groups must be mutually sortable: {e}") from e
    return ids, inverse.reshape(-1)


def _parse_metrics(metric_names: Sequence[str], names: list[str]) -> list[tuple[str, str, int]]:
    """``(name, metric, class index or -1)`` per requested metric."""
    if isinstance(metric_names, str):
        metric_names = (metric_names,)
    parsed = []
    for full in metric_names:
        if full in BINARY_METRICS and len(names) != 2:
            raise ValueError(
                f"unknown metric {full!r} for {len(names)} classes: it is a binary task's "
                "(use macro_auroc)"
            )
        if full in SUMMARY_METRICS:
            parsed.append((full, full, -1))
            continue
        metric, _, cls = full.partition(":")
        if metric in PER_CLASS_METRICS and cls in names:
            parsed.append((full, metric, names.index(cls)))
            continue
        raise ValueError(
            f"unknown metric {full!r}: use one of {list(SUMMARY_METRICS)} or "
            f"'<metric>:<class>' with <metric> in {list(PER_CLASS_METRICS)} and <class> in {names}"
        )
    if len({p[0] for p in parsed}) != len(parsed):
        raise ValueError(f"duplicate metric names in {list(metric_names)}")
    return parsed


def _check_n_boot(n_boot: int) -> int:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    return int(n_boot)


def _check_alpha(alpha: float) -> float:
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return float(alpha)


def bootstrap_replicates(
    y_true: np.ndarray,
    proba: np.ndarray,
    groups: np.ndarray,
    classes: list[str],
    metric_names: Sequence[str] = DEFAULT_METRICS,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Metric values on ``n_boot`` patient-level bootstrap replicates (module docstring).

    Args:
        y_true: True class indices, shape ``(N,)``.
        proba: Class probabilities, shape ``(N, C)``, rows summing to 1.
        groups: Patient id of each image, shape ``(N,)`` (strings or integers).
        classes: The ``C`` class names.
        metric_names: Any of ``accuracy``, ``balanced_accuracy``, ``macro_auroc``, ``macro_f1``,
            ``ece`` (15 bins), ``auroc`` (binary tasks only: the second class's AUROC), or a
            per-class ``"<metric>:<class name>"`` with ``<metric>`` one of ``sensitivity``,
            ``specificity``, ``precision``, ``f1``, ``auroc``.
        n_boot: Number of replicates.
        seed: Seed of ``numpy.random.default_rng``.

    Returns:
        ``{name: float array (n_boot,)}``, NaN where the metric is undefined in a replicate.

    Raises:
        ValueError: On invalid predictions, groups, metric names or ``n_boot``.
    """
    y, p = _as_predictions(y_true, proba)
    names = _check_classes(classes, p.shape[1])
    wanted = _parse_metrics(metric_names, names)
    n_boot = _check_n_boot(n_boot)
    _, patient = _patients(groups, y.shape[0])
    n_img, n_cls = p.shape
    n_pat = int(patient.max()) + 1

    conf, correct = top_label(p, y)
    pred = np.argmax(p, axis=1)
    # Per-patient sufficient statistics: confusion counts (P, C*C) and ECE bin gaps (P, bins).
    cell = y * n_cls + pred
    per_patient_cm = np.bincount(
        patient * n_cls * n_cls + cell, minlength=n_pat * n_cls * n_cls
    ).reshape(n_pat, n_cls * n_cls)
    need_ece = any(m == "ece" for _, m, _ in wanted)
    need_auroc = any(m in ("auroc", "macro_auroc") for _, m, _ in wanted)
    if need_ece:
        bins = confidence_bins(conf, ECE_BINS)
        gaps = np.bincount(
            patient * ECE_BINS + bins, weights=correct - conf, minlength=n_pat * ECE_BINS
        ).reshape(n_pat, ECE_BINS)
        images_per_patient = np.bincount(patient, minlength=n_pat)
    auroc = OvrAuroc(y, p) if need_auroc else None

    out = {name: np.empty(n_boot) for name, _, _ in wanted}
    rng = np.random.default_rng(seed)
    block = max(1, min(n_boot, _BLOCK_ELEMENTS // max(n_img, n_pat)))
    for start in range(0, n_boot, block):
        stop = min(start + block, n_boot)
        draws = np.stack([rng.integers(0, n_pat, size=n_pat) for _ in range(start, stop)])
        offsets = np.arange(stop - start)[:, None] * n_pat
        mult = np.bincount((draws + offsets).ravel(), minlength=(stop - start) * n_pat)
        mult = mult.reshape(stop - start, n_pat).astype(np.float64)
        rates = confusion_rates((mult @ per_patient_cm).reshape(-1, n_cls, n_cls))
        auc = auroc(mult[:, patient]) if auroc is not None else None
        for name, metric, k in wanted:
            if metric == "ece":
                value = np.abs(mult @ gaps).sum(axis=1) / (mult @ images_per_patient)
            elif metric == "macro_auroc":
                value = nan_mean(auc)
            elif metric == "auroc":  # per class, or a binary task's positive class
                value = auc[:, BINARY_POSITIVE if k < 0 else k]
            elif k >= 0:  # a per-class rate
                value = rates[metric][:, k]
            else:
                value = rates[metric]
            out[name][start:stop] = value
    return out


def _point_value(full: dict, metric: str, cls: str | None) -> float | None:
    return full[metric] if cls is None else full["per_class"][cls][metric]


def _summarise(
    reps: dict[str, np.ndarray],
    full: dict,
    wanted: list[tuple[str, str, int]],
    names: list[str],
    alpha: float,
) -> dict[str, dict]:
    result = {}
    for name, metric, k in wanted:
        values = reps[name][~np.isnan(reps[name])]
        low = high = None
        if values.size:
            low, high = (float(q) for q in np.quantile(values, [alpha / 2, 1 - alpha / 2]))
        value = _point_value(full, metric, names[k] if k >= 0 else None)
        result[name] = {
            "value": None if value is None else _num(value),
            "low": low,
            "high": high,
            "n_boot_valid": int(values.size),
        }
    return result


def metrics_with_intervals(
    y_true: np.ndarray,
    proba: np.ndarray,
    groups: np.ndarray,
    classes: list[str],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    metric_names: Sequence[str] = DEFAULT_METRICS,
) -> dict:
    """:func:`~medcl.evaluate.metrics.classification_metrics` plus patient-level percentile
    bootstrap intervals (Efron & Tibshirani 1993, ch. 13; module docstring).

    Args:
        y_true: True class indices, shape ``(N,)``.
        proba: Class probabilities, shape ``(N, C)``, rows summing to 1.
        groups: Patient id of each image, shape ``(N,)``.
        classes: The ``C`` class names.
        n_boot: Number of bootstrap replicates.
        seed: Random seed of the bootstrap; the result is a deterministic function of the inputs
            and the seed.
        alpha: Miscoverage; the interval is ``[q_{alpha/2}, q_{1-alpha/2}]`` (95 % for 0.05).
        metric_names: The metrics to give intervals for (see :func:`bootstrap_replicates`).

    Returns:
        The ``classification_metrics`` dict plus ``intervals``, ``n_patients`` and ``bootstrap``
        (``method``, ``n_boot``, ``alpha``, ``seed``, for the report). ``intervals`` is
        ``{name: {"value", "low", "high", "n_boot_valid"}}``: ``value`` the metric on the full
        set (``None`` if undefined there), ``low`` / ``high`` the percentile bounds over the
        ``n_boot_valid`` replicates where the metric is defined (``None`` if there are none).
        ``low <= value <= high`` usually holds but is not guaranteed. JSON-serialisable.

    Raises:
        ValueError: On invalid inputs, metric names, ``n_boot`` or ``alpha``.
    """
    alpha = _check_alpha(alpha)
    out = classification_metrics(y_true, proba, classes)
    names = _check_classes(classes)
    wanted = _parse_metrics(metric_names, names)
    reps = bootstrap_replicates(y_true, proba, groups, classes, metric_names, n_boot, seed)
    out["intervals"] = _summarise(reps, out, wanted, names, alpha)
    out["n_patients"] = int(len(_patients(groups, out["n"])[0]))
    out["bootstrap"] = {
        "method": "patient-level percentile bootstrap",
        "n_boot": int(n_boot),
        "alpha": alpha,
        "seed": int(seed),
    }
    return out
