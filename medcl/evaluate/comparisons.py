"""Paired comparisons between the arms of a label-efficiency experiment, and between medcl's pick
and supervised-from-scratch: the same seeds, label subsets and test patients, with a seeds ×
test-patient bootstrap interval (:func:`medcl.evaluate.paired.paired_difference`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medcl.errors import MedclError
from medcl.evaluate.arms import ARMS, resolve_arms
from medcl.evaluate.label_budget import LabelBudget
from medcl.evaluate.paired import paired_difference
from medcl.evaluate.report import PICK


def paired_comparisons(
    records: list[dict[str, Any]],
    metric: str,
    classes: list[str],
    n_boot: int,
    picks: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Paired differences ``A − B`` on the seeds both ran, per label budget.

    A is every arm with rivals (``Arm.compare_with``, in the table's order) and B each of them
    present at that budget; then, with ``picks``, medcl's pick (``a = "pick"``: per seed the run
    chosen on validation) against ``supervised``. The interval is the seeds × test-patient
    bootstrap of :func:`medcl.evaluate.paired.paired_difference`. Runs without saved predictions
    are skipped.
    """
    runs: dict[tuple[str, LabelBudget, int], dict[str, np.ndarray]] = {}
    for r in records:
        path = r.get("predictions")
        if path and Path(path).is_file():
            with np.load(path) as z:
                runs[(r["method"], LabelBudget.of_record(r), int(r["seed"]))] = dict(z)
    rivals = {a.name: a.compare_with for a in resolve_arms(list(ARMS), True) if a.compare_with}
    out: list[dict[str, Any]] = []
    for budget in sorted({k[1] for k in runs}, key=LabelBudget.sort_key):
        here = {(m, s): z for (m, b, s), z in runs.items() if b == budget}
        methods = sorted({m for m, _ in here})
        pairs = [(a, b) for a, against in rivals.items() if a in methods for b in against]
        for a, b in pairs:
            seeds = sorted({s for m, s in here if m == a} & {s for m, s in here if m == b})
            chosen = {s: here[(a, s)] for s in seeds}
            d = _paired(chosen, {s: here[(b, s)] for s in seeds}, classes, metric, n_boot)
            if d is not None:
                out.append({**_budget_fields(budget), "a": a, "b": b, "seeds": seeds, **d})
        picked = {int(p["seed"]): p["method"] for p in picks or [] if p["budget"] == budget.tag}
        seeds = sorted(s for s, m in picked.items() if (m, s) in here and ("supervised", s) in here)
        if seeds:
            d = _paired(
                {s: here[(picked[s], s)] for s in seeds},
                {s: here[("supervised", s)] for s in seeds},
                classes,
                metric,
                n_boot,
            )
            if d is not None:
                out.append(
                    {**_budget_fields(budget), "a": PICK, "b": "supervised", "seeds": seeds, **d}
                )
    return out


def _budget_fields(budget: LabelBudget) -> dict[str, Any]:
    if budget.per_class:
        return {"labels_per_class": budget.per_class, "budget": budget.tag}
    return {"label_fraction": budget.fraction, "budget": budget.tag}


def _paired(
    a: dict[int, dict[str, np.ndarray]],
    b: dict[int, dict[str, np.ndarray]],
    classes: list[str],
    metric: str,
    n_boot: int,
) -> dict[str, Any] | None:
    """The paired difference of two runs per seed (same seeds), or ``None`` without seeds.

    Raises:
        MedclError: If the runs were tested on different images.
    """
    seeds = sorted(a)
    if not seeds:
        return None
    ref = a[seeds[0]]
    if any(not np.array_equal(z["image_id"], ref["image_id"]) for z in [*a.values(), *b.values()]):
        raise MedclError("runs of one label budget were tested on different images")
    return paired_difference(
        ref["y"],
        ref["patient"] if "patient" in ref else ref["patient_key"],
        [a[s]["proba"] for s in seeds],
        [b[s]["proba"] for s in seeds],
        classes,
        metric,
        n_boot=n_boot,
    )
