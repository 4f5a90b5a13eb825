"""Paired comparison of two methods over seeds × test patients (docs/comparing.md).

Two methods trained on the same seeds (same label subsets) and scored on the same test images are
compared by their **paired** difference ``d = mean_s [m(A_s) − m(B_s)]`` over seeds ``s``. Its 95 %
interval comes from a two-level bootstrap: each replicate draws the seeds with replacement and the
test **patients** with replacement (the same patients for both methods and every seed, which is
what makes it paired); the replicate's value is the mean over the drawn seeds of the difference on
the drawn patients. Overlapping marginal intervals do not imply "no difference"; this interval
answers the question directly.

The patient draws reuse :func:`medcl.evaluate.bootstrap.bootstrap_replicates`: with the same
``seed`` and the same test rows it draws the same patients for every method.

A multi-label task (``y_true`` of shape ``(N, K)``, findings in ``{1, 0, −1}``) is compared on
the macro AUROC over its findings (:mod:`medcl.evaluate.multilabel`; unknown findings masked), with
the same patient draws (:func:`medcl.evaluate.multilabel.macro_auroc_replicates` follows the same
random stream).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medcl.evaluate.bootstrap import bootstrap_replicates
from medcl.evaluate.metrics import classification_metrics, nan_mean
from medcl.evaluate.multilabel import macro_auroc, macro_auroc_replicates

MULTILABEL_METRICS = ("macro_auroc",)
"""The metrics a paired difference of a multi-label task can take."""


def paired_difference(
    y_true: np.ndarray,
    groups: np.ndarray,
    proba_a: Sequence[np.ndarray],
    proba_b: Sequence[np.ndarray],
    classes: list[str],
    metric: str = "balanced_accuracy",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """``mean_s [metric(A_s) − metric(B_s)]`` with a seeds × patient bootstrap interval.

    Args:
        y_true: True class indices of the test images, ``(N,)``; of a multi-label task, the
            ``(N, K)`` findings in ``{1, 0, −1}``.
        groups: Patient of each test image, ``(N,)``.
        proba_a: Per seed, method A's probabilities ``(N, C)`` (``(N, K)``) on those images.
        proba_b: Per seed (same order), method B's probabilities.
        classes: Class names.
        metric: A metric :func:`bootstrap_replicates` knows (e.g. ``balanced_accuracy``).
        n_boot: Replicates (0 = point estimate only).
        alpha: 1 − coverage of the interval.
        seed: Seed of the draws.

    Returns:
        ``{"mean", "low", "high", "per_seed", "n_seeds", "n_boot"}`` (``low``/``high`` are None
        without replicates).

    Raises:
        ValueError: If the two methods have different numbers of seeds or none, or a
            multi-label task asks for a metric other than ``macro_auroc``.
    """
    if len(proba_a) != len(proba_b) or not proba_a:
        raise ValueError(
            f"paired difference needs the same seeds for both methods, got "
            f"{len(proba_a)} and {len(proba_b)}"
        )
    multilabel = np.ndim(y_true) == 2
    if multilabel and metric not in MULTILABEL_METRICS:
        raise ValueError(
            f"a multi-label task is compared on {', '.join(MULTILABEL_METRICS)}, not {metric!r}"
        )

    def value(p: np.ndarray) -> float:
        if multilabel:
            v = macro_auroc(y_true, p)
            return float("nan") if v is None else v
        return float(classification_metrics(y_true, p, classes)[metric])

    def replicates(p: np.ndarray) -> np.ndarray:
        if multilabel:
            return macro_auroc_replicates(y_true, p, groups, n_boot, seed)
        return bootstrap_replicates(y_true, p, groups, classes, [metric], n_boot, seed)[metric]

    per_seed = [value(a) - value(b) for a, b in zip(proba_a, proba_b, strict=True)]
    out: dict[str, Any] = {
        "mean": float(np.mean(per_seed)),
        "low": None,
        "high": None,
        "per_seed": per_seed,
        "n_seeds": len(per_seed),
        "n_boot": int(n_boot),
    }
    if n_boot <= 0:
        return out
    diffs = np.stack(
        [replicates(a) - replicates(b) for a, b in zip(proba_a, proba_b, strict=True)]
    )  # (S, n_boot): the same patient draw r for every seed and both methods
    rng = np.random.default_rng([seed, 1])
    pick = rng.integers(0, len(per_seed), size=(n_boot, len(per_seed)))
    # replicates where the metric is undefined for every drawn seed (e.g. AUROC when the drawn
    # patients carry one class) are dropped
    reps = nan_mean(diffs[pick, np.arange(n_boot)[:, None]], axis=1)
    reps = reps[~np.isnan(reps)]
    if reps.size:
        out["low"] = float(np.quantile(reps, alpha / 2))
        out["high"] = float(np.quantile(reps, 1 - alpha / 2))
    return out
