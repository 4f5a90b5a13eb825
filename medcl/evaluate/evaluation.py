"""Test-split evaluation of a classifier: metrics with patient-level bootstrap intervals.

``metrics.json`` holds accuracy, balanced accuracy, macro AUROC (one-vs-rest), macro F1, per-class
sensitivity / specificity / precision / F1 / AUROC, expected calibration error, the confusion
matrix,
and 95 % percentile intervals from resampling **test patients** (not images): images of one patient
are correlated, so an image-level bootstrap would understate the uncertainty.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcl.data.manifest import Manifest
from medcl.errors import MedclError
from medcl.evaluate.bootstrap import metrics_with_intervals
from medcl.evaluate.metrics import classification_metrics
from medcl.evaluate.model import Classifier
from medcl.train.data import CachedImages


def predict_rows(clf: Classifier, manifest: Manifest) -> tuple[np.ndarray, CachedImages]:
    """Probabilities ``(N, C)`` for every row of ``manifest``."""
    ds = CachedImages(manifest, clf.meta["image_size"], clf.meta["spatial_dims"])
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
        The metrics and ``{"image_id", "patient_key", "y", "proba"}`` arrays of the evaluated rows
        (pseudonymous ids only), e.g. for paired comparisons between methods.
    """
    if list(manifest.classes) != list(clf.meta["classes"]):
        raise MedclError(
            f"the manifest's classes {manifest.classes} differ from the model's "
            f"{clf.meta['classes']}"
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


def predictions_table(clf: Classifier, manifest: Manifest) -> pd.DataFrame:
    """Image id, split, label, prediction and class probabilities for every row."""
    proba, _ = predict_rows(clf, manifest)
    classes = list(clf.meta["classes"])
    df = pd.DataFrame(
        {
            "image_id": manifest.df["image_id"].to_numpy(),
            "split": manifest.df["split"].to_numpy(),
            "label": manifest.df["label"].to_numpy(),
            "prediction": [classes[i] for i in proba.argmax(1)] if len(proba) else [],
        }
    )
    for i, c in enumerate(classes):
        df[f"prob_{c}"] = proba[:, i] if len(proba) else []
    return df


def write_json(obj: Any, path: str | Path) -> Path:
    """Write JSON (numpy values converted) atomically: a temporary file, then a rename."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_plain) + "\n")
    tmp.replace(p)
    return p


def _plain(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
