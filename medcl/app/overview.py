"""Summary tables of a run: configuration, data, test metrics and the label-efficiency results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from medcl.data.manifest import SPLITS

#: Headline metrics in display order: key -> title (the binary-task rows only where present).
METRICS = {
    "balanced_accuracy": "Balanced accuracy",
    "auroc": "AUROC (positive class)",
    "sensitivity": "Sensitivity at the validation threshold",
    "specificity": "Specificity at the validation threshold",
    "macro_auroc": "Macro AUROC",
    "macro_f1": "Macro F1",
    "accuracy": "Accuracy",
    "ece": "ECE",
}
#: Config sections shown, in order.
CONFIG_SECTIONS = ("data", "model", "augment", "method", "optim", "finetune", "efficiency")
#: Settings left out of the summary: file paths (folder names can carry identifying text).
_HIDDEN_SETTINGS = {("data", "manifest"), ("", "out")}


def config_summary(cfg: Mapping[str, Any]) -> pd.DataFrame:
    """One row per setting (``section``, ``setting``, ``value``) of the shown config sections.

    Nested values are flattened with dots; file paths are left out.
    """
    rows = []
    for section in CONFIG_SECTIONS:
        values = cfg.get(section)
        if not isinstance(values, Mapping):
            continue
        for key, value in _flatten(values):
            if (section, key) in _HIDDEN_SETTINGS:
                continue
            rows.append({"section": section, "setting": key, "value": _text(value)})
    return pd.DataFrame(rows, columns=["section", "setting", "value"])


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.extend(_flatten(v, name + "."))
        else:
            out.append((name, v))
    return out


def _text(value: Any) -> str:
    if isinstance(value, Mapping) and not value:
        return "{}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def data_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Patients, images and labelled share per split (plus ``all``) of a manifest frame.

    Columns: ``split``, ``patients``, ``images``, ``labelled``, ``labelled_share`` (labelled /
    images, ``NaN`` for an empty split). Rows: train, val, test, ``unassigned`` when some rows have
    no split, then ``all``.
    """
    rows = []
    splits = [s for s in SPLITS if (df["split"] == s).any()]
    if (df["split"] == "").any():
        splits.append("")
    for s in [*splits, None]:
        part = df if s is None else df[df["split"] == s]
        n = len(part)
        lab = int((part["label"] != "").sum())
        rows.append(
            {
                "split": "all" if s is None else (s or "unassigned"),
                "patients": int(part["patient_key"].nunique()),
                "images": n,
                "labelled": lab,
                "labelled_share": lab / n if n else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def class_counts(df: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Labelled images per class (rows) and split (columns), plus the unlabelled count."""
    splits = [s for s in SPLITS if (df["split"] == s).any()]
    table = {}
    for s in splits:
        labels = df.loc[df["split"] == s, "label"]
        table[s] = [int((labels == c).sum()) for c in classes] + [int((labels == "").sum())]
    return pd.DataFrame(table, index=[*classes, "(unlabelled)"])


def metrics_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """Headline test metrics with their 95 % bootstrap intervals.

    Columns: ``metric``, ``value``, ``low``, ``high`` (``None`` where the interval is unknown),
    ``n_boot_valid``.
    """
    intervals = metrics.get("intervals") or {}
    rows = []
    for key, title in METRICS.items():
        if key not in metrics and key not in intervals:
            continue
        iv = intervals.get(key) or {}
        rows.append(
            {
                "metric": title,
                "value": _num(metrics.get(key, iv.get("value"))),
                "low": _num(iv.get("low")),
                "high": _num(iv.get("high")),
                "n_boot_valid": iv.get("n_boot_valid"),
            }
        )
    return pd.DataFrame(rows, columns=["metric", "value", "low", "high", "n_boot_valid"])


def per_class_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """Per-class sensitivity, specificity, precision, F1, AUROC and support (one row a class)."""
    per = metrics.get("per_class") or {}
    cols = ["sensitivity", "specificity", "precision", "f1", "auroc", "support"]
    rows = [{"class": c, **{k: _num(v.get(k)) for k in cols}} for c, v in per.items()]
    return pd.DataFrame(rows, columns=["class", *cols])


def interval_text(value: float | None, low: float | None, high: float | None) -> str:
    """``0.812 [0.760, 0.861]``; the bracket is omitted when a bound is unknown."""
    if value is None or pd.isna(value):
        return "n/a"
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def efficiency_table(results: Mapping[str, Any]) -> pd.DataFrame:
    """One row per label-efficiency run: method, label fraction, seed, the metric and interval
    (arms the task refused are left out).

    Columns: ``method``, ``label_fraction``, ``seed``, ``value``, ``low``, ``high``,
    ``labelled_images``, ``labelled_patients``. Model and output paths are left out.
    """
    metric = str(results.get("metric", "balanced_accuracy"))
    rows = []
    for r in results.get("records") or []:
        if r.get("refused"):
            continue  # an arm the task refused: no score
        m = r.get("metrics") or {}
        iv = (m.get("intervals") or {}).get(metric) or {}
        rows.append(
            {
                "method": r.get("method", ""),
                "label_fraction": _num(r.get("label_fraction")),
                "seed": r.get("seed"),
                "value": _num(m.get(metric, iv.get("value"))),
                "low": _num(iv.get("low")),
                "high": _num(iv.get("high")),
                "labelled_images": r.get("n_labelled_images"),
                "labelled_patients": r.get("n_labelled_patients"),
            }
        )
    cols = [
        "method",
        "label_fraction",
        "seed",
        "value",
        "low",
        "high",
        "labelled_images",
        "labelled_patients",
    ]
    return pd.DataFrame(rows, columns=cols)


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
