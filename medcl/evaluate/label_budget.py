"""How many training labels an experiment's run keeps: a fraction of the labelled training images
or a number of labelled images per class.

``efficiency.fractions`` and ``efficiency.labels_per_class`` each give a list of label budgets; a
run of the label-efficiency experiment is an arm at one budget and seed. A fraction is how a data
set is usually described; labels per class is how many images a clinician has to label, which a
fraction hides when classes are rare.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medcl.data.manifest import Manifest
from medcl.data.split import apply_label_fraction, apply_labels_per_class


@dataclass(frozen=True)
class LabelBudget:
    """A fraction of the labelled training images (``per_class`` 0) or ``per_class`` images of
    each class.

    :meth:`sort_key` orders the per-class budgets first (fewest labels first), then the fractions.

    Attributes:
        per_class: Labelled images per class; 0 for a fraction budget.
        fraction: Share of the labelled training images (a fraction budget).
    """

    per_class: int = 0
    fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.per_class:  # one budget, one description
            object.__setattr__(self, "fraction", 0.0)

    def sort_key(self) -> tuple[int, float]:
        """Per-class budgets first, fewest labels first; then fractions, smallest first."""
        return (0, float(self.per_class)) if self.per_class else (1, self.fraction)

    @property
    def tag(self) -> str:
        """``f0.05`` or ``k2``: the budget's part of run and file names."""
        return f"k{self.per_class}" if self.per_class else f"f{self.fraction:g}"

    @property
    def text(self) -> str:
        """``5 %`` or ``2 per class``."""
        return f"{self.per_class} per class" if self.per_class else f"{100 * self.fraction:g} %"

    @property
    def full(self) -> bool:
        """Whether every training label is kept (fraction 1)."""
        return not self.per_class and self.fraction >= 1.0

    def subset(self, manifest: Manifest, seed: int) -> Manifest:
        """``manifest`` with the training labels this budget keeps for ``seed``."""
        if self.per_class:
            return apply_labels_per_class(manifest, self.per_class, seed)
        return apply_label_fraction(manifest, self.fraction, seed)

    def fields(self, subset: Manifest) -> dict[str, Any]:
        """The record fields that name the budget: ``label_fraction`` (the share of labelled
        training images actually kept) and, for a per-class budget, ``labels_per_class``."""
        if not self.per_class:
            return {"label_fraction": float(self.fraction)}
        return {
            "label_fraction": float(subset.extra.get("label_fraction", 0.0)),
            "labels_per_class": self.per_class,
        }

    @classmethod
    def of_record(cls, record: dict[str, Any]) -> LabelBudget:
        """The budget of a run's record (records written before per-class budgets have only
        ``label_fraction``)."""
        k = record.get("labels_per_class")
        if k:
            return cls(per_class=int(k))
        return cls(fraction=float(record["label_fraction"]))


def budgets(fractions: list[float], labels_per_class: list[int]) -> list[LabelBudget]:
    """The budgets of ``efficiency.labels_per_class`` then ``efficiency.fractions``, in order."""
    return [LabelBudget(per_class=int(k)) for k in labels_per_class] + [
        LabelBudget(fraction=float(f)) for f in fractions
    ]
