"""Test-split evaluation of a classifier: metrics with patient-level bootstrap intervals.

``metrics.json`` holds accuracy, balanced accuracy, macro AUROC (one-vs-rest), macro F1, per-class
sensitivity / specificity / precision / F1 / AUROC, expected calibration error, the confusion
matrix, and 95 % percentile intervals from resampling **test patients** (not images): images of one
patient are correlated, so an image-level bootstrap would understate the uncertainty.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medcl.data.dataset import CachedImages
from medcl.data.manifest import Manifest
from medcl.data.volumes import StoredVolumes, check_patches_fit
from medcl.errors import MedclError
from medcl.evaluate.bootstrap import metrics_with_intervals
from medcl.evaluate.classifier import Classifier
from medcl.evaluate.metrics import classification_metrics


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
    if n_boot > 0:
        out = metrics_with_intervals(
            y, proba, groups, list(manifest.classes), n_boot=n_boot, seed=seed
        )
    else:  # no intervals requested
        out = classification_metrics(y, proba, list(manifest.classes))
        out["n_patients"] = int(len(np.unique(groups)))
    out["split"] = split
    return out, preds
