"""Test-split evaluation of a classifier: metrics with patient-level bootstrap intervals.

``metrics.json`` holds accuracy, balanced accuracy, macro AUROC (one-vs-rest), macro F1, per-class
sensitivity / specificity / precision / F1 / AUROC, expected calibration error, the confusion
matrix, and 95 % percentile intervals from resampling **test patients** (not images): images of one
patient are correlated, so an image-level bootstrap would understate the uncertainty.

A binary task (two classes; the positive class is the second) also gets ``auroc`` (the positive
class's AUROC) with its patient-bootstrap interval ``auroc_ci`` = ``[low, high]``, and
``threshold``, ``sensitivity`` and ``specificity``: the test rates at the threshold chosen on the
**validation** predictions (:mod:`medcl.evaluate.operating_point`), with their patient-bootstrap
intervals ``sensitivity_ci`` and ``specificity_ci``. The threshold is the model's
own (chosen when it was fitted, ``finetune.operating_point``); a model saved without one gets
Youden's threshold on the manifest's validation rows.

A multi-label task (``task: multilabel``, :mod:`medcl.data.findings`) is scored per finding on the
images where that finding is known (an unknown finding is never counted as absent;
:mod:`medcl.evaluate.multilabel`): ``macro_auroc`` with its patient-bootstrap interval
``macro_auroc_ci``, and under ``findings`` one entry per finding ``{auroc, auroc_ci,
sensitivity_at_specificity, prevalence, threshold, sensitivity, specificity, ...}``. The
sensitivity at a fixed specificity reads the test ROC curve at ``specificity`` (default
:data:`DEFAULT_SPECIFICITY`, ``efficiency.specificity`` in an experiment); ``threshold`` is chosen
per finding on the **validation** predictions by Youden's J (or is the model's own, when it saved
per-finding thresholds) and the test sensitivity and specificity are read at it. The classifier
enters only through a :data:`Probabilities` callable, so any model giving ``(N, K)`` per-finding
probabilities can be evaluated (:func:`evaluate_findings`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from medcl.config import OperatingPoint
from medcl.data.dataset import CachedImages
from medcl.data.manifest import Manifest
from medcl.data.split import patient_order
from medcl.data.volumes import StoredVolumes, check_patches_fit
from medcl.errors import MedclError
from medcl.evaluate.bootstrap import DEFAULT_METRICS, metrics_with_intervals
from medcl.evaluate.classifier import Classifier
from medcl.evaluate.metrics import BINARY_POSITIVE, classification_metrics
from medcl.evaluate.multilabel import multilabel_metrics
from medcl.evaluate.operating_point import (
    Threshold,
    choose_threshold,
    rates_at,
    rates_on_test,
    threshold_record,
)

DEFAULT_SPECIFICITY = 0.9
"""The specificity at which a multi-label test reports each finding's sensitivity (an experiment
sets it with ``efficiency.specificity``)."""

Probabilities = Callable[[Manifest], np.ndarray]
"""What a multi-label evaluation needs of a classifier: the ``(N, K)`` per-finding probabilities
of the rows of a manifest, rows in the manifest's order, columns in its finding order."""


def predict_rows(
    clf: Classifier, manifest: Manifest
) -> tuple[np.ndarray, CachedImages | StoredVolumes]:
    """Probabilities ``(N, C)`` for every row of ``manifest`` (a patch model: grid-aggregated).

    Raises:
        MedclError: A patch model and a volume smaller than its patches (naming the image_id).
    """
    vol = clf.description.volume
    if vol is not None:
        check_patches_fit(
            manifest, vol.patch_size, "the model's volume.patch_size", "it cannot be scored"
        )
    ds = clf.images(manifest)
    return clf.predict_proba(ds.images).numpy(), ds


def evaluate_model(
    clf: Classifier, manifest: Manifest, split: str = "test", n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Metrics of ``clf`` on the labelled rows of ``split``.

    Raises:
        MedclError: If the split has no labelled rows or the classes differ from the model's.
    """
    return evaluate_with_predictions(clf, manifest, split, n_boot, seed)[0]


def evaluate_with_predictions(
    clf: Classifier,
    manifest: Manifest,
    split: str = "test",
    n_boot: int = 1000,
    seed: int = 0,
    specificity: float = DEFAULT_SPECIFICITY,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """:func:`evaluate_model` and the predictions behind it (a multi-label manifest:
    :func:`evaluate_findings` with the model's probabilities; ``specificity`` is used there only).

    Returns:
        The metrics and ``{"image_id", "patient_key", "patient", "y", "proba"}`` arrays of the
        evaluated rows (pseudonymous ids only; ``patient`` numbers the patients in their
        secret-free content order, the grouping the bootstrap resamples), e.g. for paired
        comparisons between methods.
    """
    if list(manifest.classes) != list(clf.description.classes):
        raise MedclError(
            f"the manifest's classes {manifest.classes} differ from the model's "
            f"{clf.description.classes}"
        )
    if manifest.multilabel:
        own = model_thresholds(clf.description.operating_point, list(manifest.classes))
        return evaluate_findings(
            lambda m: predict_rows(clf, m)[0],
            manifest,
            thresholds=own,
            split=split,
            n_boot=n_boot,
            seed=seed,
            specificity=specificity,
        )
    rows = manifest.subset((manifest.df["split"] == split) & (manifest.df["label"] != ""))
    if len(rows) == 0:
        raise MedclError(f"no labelled rows in the {split!r} split to evaluate on")
    proba, ds = predict_rows(clf, rows)
    y = ds.labels.numpy()
    groups = ds.groups.numpy()
    preds = _predictions(rows, groups, y, proba)
    classes = list(manifest.classes)
    binary = len(classes) == 2
    if n_boot > 0:
        names = (*DEFAULT_METRICS, "auroc") if binary else DEFAULT_METRICS
        out = metrics_with_intervals(
            y, proba, groups, classes, n_boot=n_boot, seed=seed, metric_names=names
        )
    else:  # no intervals requested
        out = classification_metrics(y, proba, classes)
        out["n_patients"] = int(len(np.unique(groups)))
    if binary:
        iv = out.get("intervals", {}).get("auroc")
        out["auroc_ci"] = None if iv is None or iv["low"] is None else [iv["low"], iv["high"]]
        point = operating_point(clf, manifest)
        rates = rates_on_test(y, proba, point, groups, n_boot, seed, alpha=0.05)
        out.setdefault("intervals", {}).update(rates.pop("intervals", {}))
        out.update(rates)
    out["split"] = split
    return out, preds


def operating_point(clf: Classifier, manifest: Manifest) -> dict[str, Any]:
    """The binary model's validation operating point: its own (``description.operating_point``),
    or, for a model saved without one, Youden's threshold on the manifest's labelled validation
    rows (the default 0.5 when there are none)."""
    own = clf.description.operating_point
    if own is not None:
        return own
    val = manifest.subset((manifest.df["split"] == "val") & (manifest.df["label"] != ""))
    youden = OperatingPoint("youden")
    if len(val) == 0:
        t, auroc = choose_threshold(np.zeros(0, dtype=bool), np.zeros(0), youden), None
    else:
        p_val, ds = predict_rows(clf, val)
        y_val = ds.labels.numpy()
        t = choose_threshold(y_val == BINARY_POSITIVE, p_val[:, BINARY_POSITIVE], youden)
        auroc = classification_metrics(y_val, p_val, list(manifest.classes))["auroc"]
    record = threshold_record(t, str(manifest.classes[BINARY_POSITIVE]), auroc)
    return {**record, "chosen": "at evaluation, on the manifest's validation rows"}


def _labelled(manifest: Manifest, split: str) -> Manifest:
    return manifest.subset((manifest.df["split"] == split) & (manifest.df["label"] != ""))


def patient_numbers(manifest: Manifest) -> np.ndarray:
    """Each row's patient number in the secret-free content order, as the datasets number them
    (:class:`medcl.data.dataset.CachedImages` ``groups``; the bootstrap's grouping)."""
    rank = {p: i for i, p in enumerate(patient_order(manifest.df))}
    return manifest.df["patient_key"].map(rank).to_numpy(dtype=np.int64)


def finding_thresholds(
    findings: np.ndarray, proba: np.ndarray, names: Sequence[str]
) -> dict[str, Threshold]:
    """Per finding, the threshold Youden's J chooses on these (validation) predictions, among the
    images where the finding is known (:func:`medcl.evaluate.operating_point.choose_threshold`;
    0.5 where validation lacks a positive or a negative, and the rule says so).

    Args:
        findings: ``(N, K)`` validation findings in ``{1, 0, −1}``.
        proba: ``(N, K)`` validation probabilities.
        names: The ``K`` finding names.
    """
    y = np.asarray(findings)
    p = np.asarray(proba, dtype=np.float64)
    youden = OperatingPoint("youden")
    out = {}
    for k, name in enumerate(names):
        known = y[:, k] >= 0
        out[str(name)] = choose_threshold(y[known, k] == 1, p[known, k], youden)
    return out


def model_thresholds(
    operating_point: Mapping[str, Any] | None, names: Sequence[str]
) -> dict[str, float] | None:
    """The per-finding thresholds a multi-label model saved, if it saved one for every finding:
    ``operating_point["findings"][name]["threshold"]`` (else ``None``: chosen at evaluation)."""
    per = (operating_point or {}).get("findings")
    if not isinstance(per, Mapping):
        return None
    try:
        return {str(n): float(per[n]["threshold"]) for n in names}
    except (KeyError, TypeError, ValueError):
        return None


def multilabel_record(
    findings: np.ndarray,
    proba: np.ndarray,
    groups: np.ndarray,
    names: Sequence[str],
    thresholds: Mapping[str, Threshold | float],
    specificity: float = DEFAULT_SPECIFICITY,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """The test metrics of a multi-label task (module docstring), from arrays.

    Args:
        findings: ``(N, K)`` test findings in ``{1, 0, −1}``.
        proba: ``(N, K)`` test probabilities.
        groups: ``(N,)`` patient of each image (the bootstrap's unit).
        names: The ``K`` finding names.
        thresholds: Per finding, its validation threshold (:func:`finding_thresholds`) or a
            plain number (a model's own).
        specificity: Where each finding's sensitivity is read on the test ROC curve.
        n_boot: Patient-bootstrap replicates (0: no intervals).
        seed: Seed of the bootstrap.
        alpha: Miscoverage of the intervals.

    Returns:
        ``{"task": "multilabel", "macro_auroc", "macro_auroc_ci", "intervals", "findings",
        "fixed_specificity" (``specificity``), "n", "n_patients"}``; ``findings[name]`` =
        ``{"auroc", "auroc_ci",
        "sensitivity_at_specificity", "prevalence", "threshold", "threshold_rule",
        "sensitivity", "specificity", "n_positive", "n_negative", "n_unknown"}`` (``None``
        where undefined). JSON-serialisable.
    """
    names = [str(n) for n in names]
    base = multilabel_metrics(findings, proba, groups, names, specificity, n_boot, seed, alpha)
    y, p = np.asarray(findings), np.asarray(proba, dtype=np.float64)
    per: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(names):
        chosen = thresholds[name]
        t = chosen.value if isinstance(chosen, Threshold) else float(chosen)
        rule = chosen.rule if isinstance(chosen, Threshold) else "the model's own"
        known = y[:, k] >= 0
        sens, spec = rates_at(y[known, k] == 1, p[known, k], t)
        per[name] = {
            **base["per_finding"][name],
            "threshold": t,
            "threshold_rule": rule,
            "sensitivity": sens,
            "specificity": spec,
        }
    out = {"task": "multilabel", **{k: v for k, v in base.items() if k != "per_finding"}}
    out["fixed_specificity"] = out.pop("specificity")  # not the binary task's test specificity
    out["findings"] = per
    if n_boot > 0:
        out["bootstrap"] = {
            "method": "patient-level percentile bootstrap",
            "n_boot": int(n_boot),
            "alpha": float(alpha),
            "seed": int(seed),
        }
    return out


def evaluate_findings(
    predict: Probabilities,
    manifest: Manifest,
    *,
    thresholds: Mapping[str, float] | None = None,
    split: str = "test",
    n_boot: int = 1000,
    seed: int = 0,
    specificity: float = DEFAULT_SPECIFICITY,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Test metrics of a multi-label classifier and the predictions behind them.

    Args:
        predict: The classifier's per-finding probabilities (:data:`Probabilities`).
        manifest: A multi-label split manifest.
        thresholds: The model's own per-finding thresholds; ``None``: Youden's per finding on
            the manifest's labelled validation rows (0.5 without any).
        split: The split scored.
        n_boot: Patient-bootstrap replicates (0: no intervals).
        seed: Seed of the bootstrap.
        specificity: Where each finding's sensitivity is read (:data:`DEFAULT_SPECIFICITY`).

    Returns:
        :func:`multilabel_record` plus ``split``, and ``{"image_id", "patient_key", "patient",
        "y" (N, K findings), "proba" (N, K)}`` of the scored rows (pseudonymous ids only).

    Raises:
        MedclError: If the split has no labelled rows, or ``predict`` gives the wrong shape.
    """
    names = list(manifest.classes)
    rows = _labelled(manifest, split)
    if len(rows) == 0:
        raise MedclError(f"no labelled rows in the {split!r} split to evaluate on")
    proba = _checked(predict(rows), rows, names)
    y, groups = rows.findings(), patient_numbers(rows)
    if thresholds is None:
        val = _labelled(manifest, "val")
        if len(val):
            chosen: Mapping[str, Threshold | float] = finding_thresholds(
                val.findings(), _checked(predict(val), val, names), names
            )
        else:
            chosen = {
                n: Threshold(0.5, "0.5: no labelled validation rows", None, None) for n in names
            }
    else:
        chosen = thresholds
    out = multilabel_record(y, proba, groups, names, chosen, specificity, n_boot, seed)
    out["split"] = split
    return out, _predictions(rows, groups, y, proba)


def _predictions(
    rows: Manifest, groups: np.ndarray, y: np.ndarray, proba: np.ndarray
) -> dict[str, np.ndarray]:
    """The saved predictions of evaluated rows (pseudonymous ids only)."""
    return {
        "image_id": rows.df["image_id"].to_numpy(dtype=str),
        "patient_key": rows.df["patient_key"].to_numpy(dtype=str),
        "patient": groups,
        "y": y,
        "proba": proba,
    }


def _checked(proba: np.ndarray, rows: Manifest, names: list[str]) -> np.ndarray:
    p = np.asarray(proba, dtype=np.float64)
    if p.shape != (len(rows), len(names)):
        raise MedclError(
            f"the classifier gave probabilities of shape {p.shape} for {len(rows)} images and "
            f"{len(names)} findings ({', '.join(names)})"
        )
    return p


def multilabel_summary(metrics: Mapping[str, Any], split: str = "test") -> list[str]:
    """The lines a command prints of a multi-label record: the macro AUROC with its interval,
    then one line per finding (AUROC and interval, prevalence, sensitivity at the fixed
    specificity, and the rates at the validation threshold)."""

    def num(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    def ci(c: Sequence[float] | None) -> str:
        return "" if not c else f" (95 % CI {num(c[0])}–{num(c[1])})"

    spec = metrics.get("fixed_specificity")
    lines = [
        f"{split}: macro AUROC {num(metrics.get('macro_auroc'))}{ci(metrics.get('macro_auroc_ci'))}"
    ]
    for name, f in (metrics.get("findings") or {}).items():
        lines.append(
            f"  {name}: AUROC {num(f.get('auroc'))}{ci(f.get('auroc_ci'))}, prevalence "
            f"{num(f.get('prevalence'))}, sensitivity at specificity {num(spec)} "
            f"{num(f.get('sensitivity_at_specificity'))}; at the validation threshold "
            f"{num(f.get('threshold'))}: sensitivity {num(f.get('sensitivity'))}, "
            f"specificity {num(f.get('specificity'))}"
        )
    return lines
