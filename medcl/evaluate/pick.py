"""medcl's pick: for each label budget and seed, the arm with the best validation score.

A researcher cannot know in advance whether their task rewards consistency training on the
unlabelled pool, contrastive pretraining, or neither; the experiment finds out on the validation
split. For every label budget and seed the arm whose fitted model scored best on validation
(``val_balanced_accuracy``; in a binary task ``val_auroc``, the validation AUROC of the positive
class, and in a multi-label task ``val_macro_auroc``, the validation macro AUROC over the
findings, when every candidate has one; ties go to the arm earlier in
:data:`medcl.evaluate.arms.ARMS`, the simpler one) is *the pick*. The choice reads validation only
and is fixed before its test score is looked at; every arm's test split was read once, when it
ran. The pick's test score is then compared with supervised-from-scratch by the same paired
bootstrap as any two arms (:func:`medcl.evaluate.efficiency.paired_comparisons`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from medcl.evaluate.arms import report_order
from medcl.evaluate.label_budget import LabelBudget

VAL_KEY = "val_balanced_accuracy"
"""The record field the pick is chosen by (multi-class tasks)."""

BINARY_VAL_KEY = "val_auroc"
"""The record field the pick of a binary task is chosen by."""

MULTILABEL_VAL_KEY = "val_macro_auroc"
"""The record field the pick of a multi-label task is chosen by."""


def pick_key(n_classes: int, multilabel: bool = False) -> str:
    """The validation field the pick is chosen by: :data:`MULTILABEL_VAL_KEY` for a multi-label
    task, :data:`BINARY_VAL_KEY` for two classes, else :data:`VAL_KEY`."""
    if multilabel:
        return MULTILABEL_VAL_KEY
    return BINARY_VAL_KEY if n_classes == 2 else VAL_KEY


def choose_picks(records: list[dict[str, Any]], by: str = VAL_KEY) -> list[dict[str, Any]]:
    """One pick per label budget and seed among the records there.

    Args:
        records: The experiment's run records (``method``, ``seed``, the budget fields,
            ``val_balanced_accuracy`` (and ``val_auroc`` in a binary task, ``val_macro_auroc``
            in a multi-label one), ``run``, ``model_dir``); records of refused arms
            (``refused``) are skipped.
        by: The validation field to choose by; a budget and seed where some candidate lacks it
            (``None``: undefined on validation, or a record written before it existed) is chosen
            by :data:`VAL_KEY` instead.

    Returns:
        ``[{"label_fraction", ["labels_per_class",] "budget", "seed", "method", "run",
        "model_dir", "val_balanced_accuracy", "val_metric", "val_score", "candidates"}, ...]``
        ordered by budget then seed; ``val_metric`` names the field chosen by, ``val_score`` is
        the pick's value of it, and ``candidates`` lists the arms it was chosen among.
    """
    groups: dict[tuple[LabelBudget, int], list[dict[str, Any]]] = {}
    for r in records:
        if r.get("refused"):
            continue  # an arm the task refused: no model to choose
        groups.setdefault((LabelBudget.of_record(r), int(r["seed"])), []).append(r)
    picks = []
    for (budget, seed), runs in sorted(
        groups.items(), key=lambda kv: (kv[0][0].sort_key(), kv[0][1])
    ):
        rank = {m: i for i, m in enumerate(report_order({r["method"] for r in runs}))}
        key = by if all(r.get(by) is not None for r in runs) else VAL_KEY
        best = max(runs, key=lambda r: (float(r.get(key) or 0.0), -rank[r["method"]]))
        picks.append(
            {
                **{k: best[k] for k in ("label_fraction", "labels_per_class") if k in best},
                "budget": budget.tag,
                "seed": seed,
                "method": best["method"],
                "run": best["run"],
                "model_dir": best.get("model_dir"),
                VAL_KEY: best.get(VAL_KEY),
                "val_metric": key,
                "val_score": best.get(key),
                "candidates": sorted(rank, key=rank.__getitem__),
            }
        )
    return picks


def picks_at(picks: list[dict[str, Any]], budget: LabelBudget) -> list[dict[str, Any]]:
    """The picks of one budget."""
    return [p for p in picks if LabelBudget.of_record(p) == budget]


def describe(picks: list[dict[str, Any]]) -> str:
    """``sscl`` when every seed picked it, else ``fixmatch ×2, sscl ×1`` (most often first)."""
    counts = Counter(p["method"] for p in picks)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{m} ×{n}" for m, n in counts.most_common())
