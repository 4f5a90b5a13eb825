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
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medcl.config import OperatingPoint
from medcl.data.dataset import CachedImages
from medcl.data.manifest import Manifest
from medcl.data.volumes import StoredVolumes, check_patches_fit
from medcl.errors import MedclError
from medcl.evaluate.bootstrap import DEFAULT_METRICS, metrics_with_intervals
from medcl.evaluate.classifier import Classifier
from medcl.evaluate.metrics import BINARY_POSITIVE, classification_metrics
from medcl.evaluate.operating_point import choose_threshold, rates_on_test, threshold_record


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
    clf: Classifier, manifest: Manifest, split: str = "test", n_boot: int = 1000, seed: int = 0
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """:func:`evaluate_model` and the predictions behind it.

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
    rows = manifest.subset((manifest.df["split"] == split) & (manifest.df["label"] != ""))
    if len(rows) == 0:
        raise MedclError(f"no labelled rows in the {split!r} split to evaluate on")
    proba, ds = predict_rows(clf, rows)
    y = ds.labels.numpy()
    groups = ds.groups.numpy()
    preds = {
        "image_id": rows.df["image_id"].to_numpy(dtype=str),
        "patient_key": rows.df["patient_key"].to_numpy(dtype=str),
        "patient": groups,
        "y": y,
        "proba": proba,
    }
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
