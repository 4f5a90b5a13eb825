"""Cases worth a second look: misclassified images and low-confidence predictions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from medcl.app.run import PREDICTION_COLUMNS

#: Splits in display order (test first: what a reviewer looks at); ``""`` is unassigned.
SPLIT_ORDER = {"test": 0, "val": 1, "train": 2, "": 3}
REVIEW_COLUMNS = (*PREDICTION_COLUMNS, "p_true", "status")


def review_cases(
    df: pd.DataFrame,
    splits: Sequence[str] = ("test",),
    misclassified: bool = True,
    below: float | None = None,
    true_classes: Sequence[str] | None = None,
    predicted_classes: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Labelled images of ``splits`` that are misclassified and/or less confident than ``below``.

    Args:
        df: The embeddings table (``label``, ``prediction``, ``confidence``, ``prob_<class>``).
        splits: Splits to include.
        misclassified: Include images whose prediction differs from the label.
        below: Include images whose confidence is below this value (``None``: none).
        true_classes: Keep only these true labels (``None``: all).
        predicted_classes: Keep only these predictions (``None``: all).

    Returns:
        Columns :data:`REVIEW_COLUMNS`, least confident first; ``status`` is ``misclassified``,
        ``low confidence`` or ``misclassified, low confidence``; ``p_true`` is the probability
        given to the true class.
    """
    part = df[df["split"].isin(list(splits)) & (df["label"] != "")]
    wrong = (part["label"] != part["prediction"]).to_numpy()
    low = (
        (part["confidence"].to_numpy() < below) if below is not None else np.zeros(len(part), bool)
    )
    pick = (wrong & misclassified) | low
    if true_classes is not None:
        pick &= part["label"].isin(list(true_classes)).to_numpy()
    if predicted_classes is not None:
        pick &= part["prediction"].isin(list(predicted_classes)).to_numpy()
    part, wrong, low = part[pick], wrong[pick], low[pick]
    status = np.where(
        wrong & low,
        "misclassified, low confidence",
        np.where(wrong, "misclassified", "low confidence"),
    )
    p_true = np.full(len(part), np.nan)
    for lab in part["label"].unique():
        if f"prob_{lab}" in part.columns:
            rows = (part["label"] == lab).to_numpy()
            p_true[rows] = part.loc[rows, f"prob_{lab}"].to_numpy(dtype=np.float64)
    out = pd.DataFrame(
        {
            "image_id": part["image_id"].to_numpy(),
            "patient_key": part["patient_key"].to_numpy(),
            "split": part["split"].to_numpy(),
            "label": part["label"].to_numpy(),
            "prediction": part["prediction"].to_numpy(),
            "confidence": part["confidence"].to_numpy(dtype=np.float64),
            "p_true": p_true,
            "status": status,
        },
        columns=list(REVIEW_COLUMNS),
    )
    return out.sort_values(["confidence", "image_id"], kind="stable").reset_index(drop=True)


def present_splits(df: pd.DataFrame, unassigned: bool = True) -> list[str]:
    """The splits that occur in ``df``, in :data:`SPLIT_ORDER` (``""`` only with ``unassigned``)."""
    return [s for s in SPLIT_ORDER if (s or unassigned) and (df["split"] == s).any()]


def case_order(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` sorted by split (:data:`SPLIT_ORDER`, unknown splits last), then ``image_id``."""
    order = df["split"].map(SPLIT_ORDER).fillna(len(SPLIT_ORDER))
    return df.assign(_order=order).sort_values(["_order", "image_id"]).drop(columns="_order")


def calibration_rows(df: pd.DataFrame, classes: Sequence[str], split: str) -> pd.DataFrame:
    """The rows of ``split`` labelled with one of ``classes`` (what a reliability diagram uses)."""
    return df[(df["split"] == split) & (df["label"] != "") & df["label"].isin(list(classes))]
