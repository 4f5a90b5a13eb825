"""Text the dashboard shows: numbers, intervals, the model's facts and a case's facts.

Plain functions of plain values (no Streamlit), so that every label the pages write is tested.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from medcl.models.description import ModelDescription

UNASSIGNED = "unassigned"
UNLABELLED = "unlabelled"


def number(value: Any, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals; ``n/a`` when it is missing, NaN or not a number."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if math.isnan(f) else f"{f:.{digits}f}"


def interval_help(low: float | None, high: float | None) -> str:
    """The tooltip of a headline metric: its 95 % interval, or that there is none."""
    if _missing(low):
        return "95 % interval n/a"
    return f"95 % interval [{low:.3f}, {high:.3f}]"


def model_facts(
    description: ModelDescription, classes: Sequence[str], label_fraction: float | None
) -> dict[str, str]:
    """The model's configuration in a few lines (``?`` where its metadata does not say).

    Args:
        description: The model's description (its ``metadata.json``).
        classes: Class names.
        label_fraction: The run's share of labelled training images, if recorded.
    """
    d, pre = description, description.pretraining
    return {
        "model": d.name or "?",
        "encoder": f"{d.spec.encoder} (width {d.spec.width})",
        "pretraining": (pre.method if pre is not None else None) or "?",
        "head": d.head or "?",
        "input": f"{d.spatial_dims}-D, {d.image_size} px, {d.modality or '?'} (preset {d.preset})",
        "classes": ", ".join(classes),
        "label fraction": f"{100 * float(label_fraction):g} %"
        if label_fraction is not None
        else "?",
    }


def case_option(image_id: str, split: str, label: str, prediction: str) -> str:
    """How a case is listed in the case viewer's chooser: ``id · split · label → prediction``."""
    return f"{image_id} · {split or UNASSIGNED} · {label or UNLABELLED} → {prediction}"


def selection_caption(image_id: str, label: str, prediction: str) -> str:
    """Caption of a selected point's thumbnail: short id, label and prediction."""
    return f"{image_id[:10]} · {label or UNLABELLED} → {prediction}"


def verdict(label: str, prediction: str) -> str:
    """`` (correct)`` or `` (wrong)`` after a labelled case's prediction; empty when unlabelled."""
    if not label:
        return ""
    return " (correct)" if label == prediction else " (wrong)"


def image_size(slices: Any, rows: Any, cols: Any) -> str:
    """``D×H×W`` (``H×W`` for a 2-D image): the known axes longer than one pixel."""
    return "×".join(str(int(v)) for v in (slices, rows, cols) if not _missing(v) and int(v) > 1)


def case_facts(row: Mapping[str, Any]) -> dict[str, str]:
    """What the case viewer lists about an image (only pseudonymous keys)."""
    facts = {
        "image_id": row["image_id"],
        "patient_key": row["patient_key"],
        "split": row["split"] or UNASSIGNED,
        "label": row["label"] or f"({UNLABELLED})",
        "modality": row.get("modality", ""),
        "size": image_size(row.get("slices"), row.get("rows"), row.get("cols")),
    }
    return {k: str(v) for k, v in facts.items()}


def import_labels_command(run_name: str, manifest: str) -> str:
    """The shell command that turns the filled annotation sheet into the next run's manifest."""
    return (
        f"medcl import-labels {run_name}/{manifest} labels_to_annotate.csv "
        f"--out {run_name}/data/split_next.csv"
    )


def _missing(value: Any) -> bool:
    """None, NaN or a pandas missing value."""
    return value is None or bool(pd.isna(value))
