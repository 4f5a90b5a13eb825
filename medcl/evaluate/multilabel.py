"""Metrics of multi-label findings: per-finding AUROC, macro AUROC with a patient-bootstrap
interval, and sensitivity at a fixed specificity.

Notation: ``N`` images, ``K`` findings, ``y_ik ∈ {1, 0, −1}`` (present, absent, unknown), scores
``s_ik`` (the predicted probability of finding ``k``; any monotone score works). Finding ``k`` is
scored on the images where it is known, ``P_k = #{y_ik = 1}`` positives against
``Q_k = #{y_ik = 0}`` negatives; an unknown image does not count for that finding.

- AUROC of finding ``k``: the Mann-Whitney statistic (Hanley & McNeil, Radiology 1982)
  ``(1 / (P_k Q_k)) Σ_{i pos} Σ_{j neg} (1[s_ik > s_jk] + ½·1[s_ik = s_jk])``, scikit-learn's
  ``roc_auc_score`` on the known images; undefined (``None``) without both a positive and a
  negative.
- macro AUROC: the mean over the findings whose AUROC is defined (``None`` when none is).
- sensitivity at specificity ``σ`` of finding ``k``: the largest sensitivity on the empirical ROC
  curve among the thresholds whose specificity is at least ``σ``,
  ``max {TP(t) / P_k : TN(t) / Q_k ≥ σ}`` over the thresholds ``t`` (an image is called positive
  when ``s ≥ t``; the threshold above every score, sensitivity 0 at specificity 1, included). It
  reads the curve at its own best threshold, so it describes the scores, not a deployed
  decision rule: for that, choose the threshold on validation
  (:mod:`medcl.evaluate.operating_point`).
- patient-bootstrap interval of the macro AUROC: each replicate draws the ``P`` patients with
  replacement (the stream of :func:`medcl.evaluate.bootstrap.bootstrap_replicates`:
  ``default_rng(seed)``, one ``integers(0, P, size=P)`` per replicate over the patients sorted by
  id, so the same seed draws the same patients), weights every image by its patient's
  multiplicity, and takes the macro AUROC of the findings defined in the replicate (the weighted
  Mann-Whitney statistic equals the AUROC of the materialised resample); replicates where no
  finding is defined are skipped and counted (``n_boot_valid``). The interval is the
  ``[α/2, 1 − α/2]`` percentile interval (Efron & Tibshirani 1993, ch. 13). Each finding's own
  AUROC interval is read from the same replicates (those where that finding is defined).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medcl.evaluate.bootstrap import _check_alpha, _check_n_boot, _patients
from medcl.evaluate.metrics import OvrAuroc, _num, nan_mean
from medcl.evaluate.operating_point import roc_table


def _as_findings(findings: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(N, K)`` int findings in ``{−1, 0, 1}`` and finite float scores."""
    y = np.asarray(findings)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 2 or y.shape != s.shape or y.shape[0] == 0:
        raise ValueError(
            f"findings and scores must both be (N, K) with N > 0, got {y.shape} and {s.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer) or not np.isin(y, (-1, 0, 1)).all():
        raise ValueError("findings must be integers 1 (present), 0 (absent) or -1 (unknown)")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y.astype(np.int64), s


class FindingAuroc:
    """The AUROC of every finding under batches of per-image weights.

    A call with weights ``W`` of shape ``(B, N)`` gives, for every row ``b`` and finding ``k``,
    the weighted Mann-Whitney statistic over the images where ``k`` is known (the others weigh
    0), in ``O(B N)`` per finding (:class:`~medcl.evaluate.metrics.OvrAuroc` on the two-column
    problem ``[1 − s_k, s_k]``, its second column). With integer weights (bootstrap
    multiplicities) this is the AUROC of the data set in which image ``i`` appears ``W_bi`` times.

    Args:
        findings: Validated ``(N, K)`` findings.
        scores: Validated ``(N, K)`` scores.
    """

    def __init__(self, findings: np.ndarray, scores: np.ndarray) -> None:
        self._known = (findings >= 0).astype(np.float64).T  # (K, N)
        self._per_finding = [
            OvrAuroc((findings[:, k] == 1).astype(np.int64), np.c_[-scores[:, k], scores[:, k]])
            for k in range(findings.shape[1])
        ]

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        """AUROC per row and finding, shape ``(B, K)``; NaN where a finding lacks positive or
        negative weight.

        Args:
            weights: Non-negative per-image weights, shape ``(B, N)``.
        """
        w = np.asarray(weights, dtype=np.float64)
        out = np.empty((w.shape[0], len(self._per_finding)))
        for k, auroc in enumerate(self._per_finding):
            out[:, k] = auroc(w * self._known[k])[:, 1]
        return out


def sensitivity_at_specificity(
    findings: np.ndarray, scores: np.ndarray, specificity: float
) -> np.ndarray:
    """Per finding, the largest empirical sensitivity at specificity ``≥ specificity`` (module
    docstring).

    Args:
        findings: ``(N, K)`` findings in ``{1, 0, −1}``.
        scores: ``(N, K)`` scores.
        specificity: ``σ`` in ``[0, 1]``.

    Returns:
        ``(K,)`` sensitivities, NaN where a finding lacks a known positive or negative.

    Raises:
        ValueError: On malformed inputs or ``σ`` outside ``[0, 1]``.
    """
    y, s = _as_findings(findings, scores)
    if not 0.0 <= float(specificity) <= 1.0:
        raise ValueError(f"specificity must be in [0, 1], got {specificity!r}")
    out = np.full(y.shape[1], np.nan)
    for k in range(y.shape[1]):
        known = y[:, k] >= 0
        n_pos, n_neg = int((y[known, k] == 1).sum()), int((y[known, k] == 0).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        _, tp, fp = roc_table(y[known, k] == 1, s[known, k])
        ok = (n_neg - fp) / n_neg >= specificity
        out[k] = float((tp[ok] / n_pos).max()) if ok.any() else 0.0  # else: call none positive
    return out


def finding_auroc_replicates(
    findings: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Every finding's AUROC on ``n_boot`` patient-bootstrap replicates (module docstring).

    Args:
        findings: ``(N, K)`` findings in ``{1, 0, −1}``.
        scores: ``(N, K)`` scores.
        groups: ``(N,)`` patient id of each image.
        n_boot: Number of replicates.
        seed: Seed of ``numpy.random.default_rng``.

    Returns:
        ``(n_boot, K)`` values, NaN where a finding lacks a known positive or negative in a
        replicate.
    """
    y, s = _as_findings(findings, scores)
    n_boot = _check_n_boot(n_boot)
    _, patient = _patients(groups, y.shape[0])
    n_pat = int(patient.max()) + 1
    auroc = FindingAuroc(y, s)
    rng = np.random.default_rng(seed)
    draws = np.stack([rng.integers(0, n_pat, size=n_pat) for _ in range(n_boot)])
    offsets = np.arange(n_boot)[:, None] * n_pat
    mult = np.bincount((draws + offsets).ravel(), minlength=n_boot * n_pat)
    mult = mult.reshape(n_boot, n_pat).astype(np.float64)
    return auroc(mult[:, patient])


def macro_auroc_replicates(
    findings: np.ndarray, scores: np.ndarray, groups: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> np.ndarray:
    """The macro AUROC on ``n_boot`` patient-bootstrap replicates (module docstring;
    arguments as :func:`finding_auroc_replicates`): ``(n_boot,)`` values, NaN where no finding
    is defined in a replicate."""
    return nan_mean(finding_auroc_replicates(findings, scores, groups, n_boot, seed))


def macro_auroc(findings: np.ndarray, scores: np.ndarray) -> float | None:
    """The macro AUROC of ``(N, K)`` scores over the findings where it is defined (``None`` when
    none is)."""
    y, s = _as_findings(findings, scores)
    return _num(nan_mean(FindingAuroc(y, s)(np.ones((1, y.shape[0])))[0]))


def _percentile(values: np.ndarray, alpha: float) -> tuple[float | None, float | None, int]:
    """``(low, high, n_valid)``: the percentile interval over the defined values."""
    valid = values[~np.isnan(values)]
    if not valid.size:
        return None, None, 0
    low, high = np.quantile(valid, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high), int(valid.size)


def multilabel_metrics(
    findings: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    names: Sequence[str],
    specificity: float = 0.9,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Per-finding AUROC and sensitivity at a fixed specificity, and the macro AUROC with its
    patient-bootstrap interval.

    Args:
        findings: ``(N, K)`` findings: 1 present, 0 absent, −1 unknown.
        scores: ``(N, K)`` predicted probabilities of the findings.
        groups: ``(N,)`` patient id of each image.
        names: The ``K`` finding names.
        specificity: ``σ`` of the sensitivity read-out.
        n_boot: Bootstrap replicates (0: no interval).
        seed: Seed of the bootstrap.
        alpha: Miscoverage of the interval.

    Returns:
        A JSON-serialisable dict: ``per_finding`` = ``{name: {"auroc", "auroc_ci" (the finding's
        own patient-bootstrap percentile interval, from the same replicates as the macro's),
        "sensitivity_at_specificity", "prevalence" (positives among the known images),
        "n_positive", "n_negative", "n_unknown"}}`` (``None`` for undefined values),
        ``macro_auroc``, ``macro_auroc_ci`` (``[low, high]`` or ``None``),
        ``intervals`` = ``{"macro_auroc": {"value", "low", "high", "n_boot_valid"}}``,
        ``specificity``, ``n`` and ``n_patients``.

    Raises:
        ValueError: On malformed inputs, names, ``n_boot`` or ``alpha``.
    """
    y, s = _as_findings(findings, scores)
    names = [str(n) for n in names]
    if len(names) != y.shape[1] or len(set(names)) != len(names):
        raise ValueError(f"{y.shape[1]} unique finding names needed, got {names}")
    alpha = _check_alpha(alpha)
    ids, _ = _patients(groups, y.shape[0])
    auroc = FindingAuroc(y, s)(np.ones((1, y.shape[0])))[0]
    sens = sensitivity_at_specificity(y, s, specificity)
    macro = _num(nan_mean(auroc))
    interval: dict[str, Any] = {"value": macro, "low": None, "high": None, "n_boot_valid": 0}
    per_ci: list[list[float] | None] = [None] * len(names)
    if n_boot > 0:
        reps = finding_auroc_replicates(y, s, groups, n_boot, seed)
        low, high, n_valid = _percentile(nan_mean(reps), alpha)
        interval.update(low=low, high=high, n_boot_valid=n_valid)
        for k in range(len(names)):
            lo, hi, _ = _percentile(reps[:, k], alpha)
            per_ci[k] = None if lo is None or np.isnan(auroc[k]) else [lo, hi]
    n_pos = (y == 1).sum(axis=0)
    n_known = (y >= 0).sum(axis=0)
    return {
        "per_finding": {
            name: {
                "auroc": _num(auroc[k]),
                "auroc_ci": per_ci[k],
                "sensitivity_at_specificity": _num(sens[k]),
                "prevalence": float(n_pos[k] / n_known[k]) if n_known[k] else None,
                "n_positive": int(n_pos[k]),
                "n_negative": int((y[:, k] == 0).sum()),
                "n_unknown": int((y[:, k] == -1).sum()),
            }
            for k, name in enumerate(names)
        },
        "macro_auroc": macro,
        "macro_auroc_ci": None if interval["low"] is None else [interval["low"], interval["high"]],
        "intervals": {"macro_auroc": interval},
        "specificity": float(specificity),
        "n": int(y.shape[0]),
        "n_patients": int(len(ids)),
    }
