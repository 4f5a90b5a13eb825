"""A multi-label run as the dashboard shows it: per-finding results, finding states and the images
whose findings the model calls wrongly.

A multi-label run (``task: multilabel``; :mod:`medcl.data.findings`) predicts one probability per
finding (``prob_<finding>`` in the embeddings table, a per-finding sigmoid; the findings are the
model's classes) and its ``label`` column holds the finding text of the manifest (``lesion|vessel``,
``?name`` unknown, ``-`` none present, ``""`` unlabelled). Its test metrics (``metrics.json``) hold
``macro_auroc`` and, under ``findings``, each finding's AUROC with its interval, prevalence,
sensitivity at a fixed specificity and the threshold chosen on validation
(:func:`medcl.evaluate.evaluation.multilabel_record`). A finding is called present when its
probability reaches that threshold (0.5 when the metrics name none).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from medcl.app.figures import UNLABELLED
from medcl.data.findings import decode_labels

#: Columns of :func:`finding_table`.
FINDING_COLUMNS = (
    "finding",
    "auroc",
    "low",
    "high",
    "prevalence",
    "sensitivity_at_specificity",
    "threshold",
    "sensitivity",
    "specificity",
    "n_positive",
    "n_negative",
    "n_unknown",
)
#: Columns of :func:`finding_errors` (pseudonymous keys only).
ERROR_COLUMNS = (
    "image_id",
    "patient_key",
    "split",
    "finding",
    "truth",
    "probability",
    "threshold",
    "status",
)
#: The state names of a finding, by its code (1 present, 0 absent, −1 unknown).
STATE_NAMES = {1: "present", 0: "absent", -1: "unknown"}
#: What the dashboard says of a page that takes one class per image.
SINGLE_LABEL_ONLY = "{page} takes one class per image; this run is multi-label (findings)."
DEFAULT_THRESHOLD = 0.5


def is_multilabel(
    metrics: Mapping[str, Any] | None, manifest_task: str = "", model_task: str = ""
) -> bool:
    """Whether a run is multi-label: its manifest's or model's ``task`` says so, or its test
    metrics are a multi-label record."""
    if "multilabel" in (manifest_task, model_task):
        return True
    return bool(metrics) and metrics.get("task") == "multilabel"  # type: ignore[union-attr]


def finding_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """One row per finding of a multi-label test record: AUROC and its 95 % interval
    (``low``/``high``), prevalence, sensitivity at the record's specificity, the validation
    threshold and the test sensitivity and specificity at it, and the counts (columns
    :data:`FINDING_COLUMNS`; ``None`` where undefined)."""
    rows = []
    for name, f in (metrics.get("findings") or {}).items():
        ci = f.get("auroc_ci") or [None, None]
        rows.append(
            {
                "finding": name,
                "auroc": f.get("auroc"),
                "low": ci[0],
                "high": ci[1],
                **{k: f.get(k) for k in FINDING_COLUMNS[4:]},
            }
        )
    return pd.DataFrame(rows, columns=list(FINDING_COLUMNS))


def thresholds(metrics: Mapping[str, Any] | None, findings: Sequence[str]) -> dict[str, float]:
    """Each finding's threshold: the one the test record names (chosen on validation), else
    :data:`DEFAULT_THRESHOLD`."""
    per = (metrics or {}).get("findings") or {}
    out = {}
    for name in findings:
        t = (per.get(name) or {}).get("threshold")
        out[name] = DEFAULT_THRESHOLD if t is None else float(t)
    return out


def finding_states(labels: pd.Series, findings: Sequence[str]) -> np.ndarray:
    """The ``(N, K)`` finding states of the ``label`` texts (unlabelled rows: all unknown)."""
    return decode_labels(labels.fillna("").astype(str), list(findings))


def finding_counts(df: pd.DataFrame, findings: Sequence[str]) -> pd.DataFrame:
    """Per finding (rows) and split, the labelled images where it is present / absent /
    unknown, as ``present/absent/unknown`` text cells (a column per split present in ``df``),
    and a last row with the unlabelled images per split."""
    states = finding_states(df["label"], findings)
    table: dict[str, list[str]] = {}
    for split in [s for s in ("train", "val", "test") if (df["split"] == s).any()]:
        rows = (df["split"] == split).to_numpy() & (df["label"] != "").to_numpy()
        cells = [
            "/".join(str(int((states[rows, k] == v).sum())) for v in (1, 0, -1))
            for k in range(len(findings))
        ]
        unlabelled = int(((df["split"] == split) & (df["label"] == "")).sum())
        table[f"{split} (present/absent/unknown)"] = [*cells, str(unlabelled)]
    return pd.DataFrame(table, index=[*findings, "(unlabelled images)"])


def roc_curves(
    df: pd.DataFrame, findings: Sequence[str], split: str = "test"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each finding's empirical ROC curve ``(fpr, tpr)`` on the labelled rows of ``split``
    where it is known (from the ``prob_<finding>`` columns; a finding without a known positive
    and negative there is left out). The curve starts at ``(0, 0)`` and steps through every
    distinct score (an image is called positive when its score is at least the threshold)."""
    from medcl.evaluate.operating_point import roc_table

    part = df[(df["split"] == split) & (df["label"] != "")]
    states = finding_states(part["label"], findings)
    out = {}
    for k, name in enumerate(findings):
        col = f"prob_{name}"
        known = states[:, k] >= 0
        y = states[known, k] == 1
        if col not in part.columns or not y.any() or y.all():
            continue
        _, tp, fp = roc_table(y, part[col].to_numpy(dtype=np.float64)[known])
        out[name] = (np.r_[0.0, fp / (~y).sum()], np.r_[0.0, tp / y.sum()])
    return out


def finding_errors(
    df: pd.DataFrame,
    findings: Sequence[str],
    cutoffs: Mapping[str, float],
    splits: Sequence[str] = ("test",),
    only: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The known findings of labelled images of ``splits`` that the model calls wrongly at their
    thresholds: a present finding below it (``missed``), an absent one at or above it
    (``false alarm``); most confidently wrong first (largest ``|probability − threshold|``).

    Args:
        df: The embeddings table (``label``, ``prob_<finding>``).
        findings: The finding names.
        cutoffs: Each finding's threshold (:func:`thresholds`).
        splits: The splits to look in.
        only: Keep these findings (``None``: all).

    Returns:
        One row per wrong call, columns :data:`ERROR_COLUMNS`.
    """
    part = df[df["split"].isin(list(splits)) & (df["label"] != "")]
    states = finding_states(part["label"], findings)
    frames = []
    for k, name in enumerate(findings):
        col = f"prob_{name}"
        if (only is not None and name not in only) or col not in part.columns:
            continue
        p = part[col].to_numpy(dtype=np.float64)
        t = float(cutoffs.get(name, DEFAULT_THRESHOLD))
        called = p >= t
        wrong = ((states[:, k] == 1) & ~called) | ((states[:, k] == 0) & called)
        frames.append(
            pd.DataFrame(
                {
                    "image_id": part["image_id"].to_numpy()[wrong],
                    "patient_key": part["patient_key"].to_numpy()[wrong],
                    "split": part["split"].to_numpy()[wrong],
                    "finding": name,
                    "truth": [STATE_NAMES[int(s)] for s in states[wrong, k]],
                    "probability": p[wrong],
                    "threshold": t,
                    "status": np.where(states[wrong, k] == 1, "missed", "false alarm"),
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=list(ERROR_COLUMNS))
    out = pd.concat(frames, ignore_index=True)
    margin = (out["probability"] - out["threshold"]).abs()
    out = out.assign(_m=-margin).sort_values(["_m", "image_id", "finding"], kind="stable")
    return out.drop(columns="_m").reset_index(drop=True)[list(ERROR_COLUMNS)]


def colour_by_finding(df: pd.DataFrame, finding: str, findings: Sequence[str]) -> pd.Series:
    """Each row's state of ``finding`` for the embedding scatter: ``present``, ``absent``,
    ``unknown``, or the unlabelled category."""
    k = list(findings).index(finding)
    states = finding_states(df["label"], findings)[:, k]
    names = np.array([STATE_NAMES[int(s)] for s in states], dtype=object)
    names[(df["label"] == "").to_numpy()] = UNLABELLED
    return pd.Series(names, index=df.index)


def case_findings(
    row: pd.Series, findings: Sequence[str], cutoffs: Mapping[str, float]
) -> pd.DataFrame:
    """One image's findings: its probability of each, the threshold, whether it is called
    present, and the truth (``present``/``absent``/``unknown``, ``unlabelled``)."""
    label = str(row.get("label", "") or "")
    states = finding_states(pd.Series([label]), findings)[0]
    probs = [float(row.get(f"prob_{n}", np.nan)) for n in findings]
    return pd.DataFrame(
        {
            "finding": list(findings),
            "probability": probs,
            "threshold": [float(cutoffs.get(n, DEFAULT_THRESHOLD)) for n in findings],
            "called": [
                "present" if p >= cutoffs.get(n, DEFAULT_THRESHOLD) else "absent"
                for p, n in zip(probs, findings, strict=True)
            ],
            "truth": [STATE_NAMES[int(s)] if label else "unlabelled" for s in states],
        }
    )
