"""The plan of a label-efficiency experiment: its runs (:class:`Job`, :func:`plan_jobs`) and
their disjoint shares for parallel processes or cluster array tasks (:class:`Shard`,
:func:`work_units`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medcl.config import Config
from medcl.errors import ConfigError
from medcl.evaluate.arms import Arm, resolve_arms
from medcl.evaluate.label_budget import LabelBudget, budgets


@dataclass(frozen=True)
class Job:
    """One run of the experiment: an arm at a label budget and seed."""

    arm: Arm
    budget: LabelBudget
    seed: int

    @property
    def key(self) -> str:
        """The run's name in ``results.json`` and under ``OUT/runs/`` (``sscl_f0.05_s0``)."""
        return f"{self.arm.name}_{self.budget.tag}_s{self.seed}"


def plan_jobs(cfg: Config) -> list[Job]:
    """Every run of ``cfg.efficiency``, in the order they run: seeds, then label budgets (per
    class, then fractions), then arms (in ``efficiency.methods``' order, except that an arm's
    teacher runs before it, so its fitted model can be handed over).

    With every label (fraction 1.0) only the first ``efficiency.full_label_seeds`` seeds run
    (0 = all).
    """
    eff = cfg.efficiency
    arms = resolve_arms(list(eff.methods), eff.linear_probe)
    names = {a.name for a in arms}
    arms.sort(key=lambda a: a.teacher in names)  # stable: students after the arms they learn from
    full_seeds = eff.seeds[: eff.full_label_seeds] if eff.full_label_seeds else eff.seeds
    return [
        Job(arm, budget, seed)
        for seed in eff.seeds
        for budget in budgets(list(eff.fractions), list(eff.labels_per_class))
        if not budget.full or seed in full_seeds
        for arm in arms
    ]


@dataclass(frozen=True)
class Shard:
    """The ``index``-th (0-based) of ``count`` disjoint shares of an experiment's job plan.

    A pretraining and every run that starts from it stay in one shard (:func:`work_units`);
    units go to the shard with the least work so far, in plan order, so every process that
    computes the split of the same plan gets the same one. On a cluster, shard ``K`` of ``N`` is
    one array task (``medcl efficiency ... --shard $SLURM_ARRAY_TASK_ID/N``); a re-run without
    ``--shard`` (or ``--collect``) merges the shards' records.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(f"--shard: K/N with 0 ≤ K < N, got {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"1/4"`` → ``Shard(1, 4)``.

        Raises:
            ConfigError: Naming ``--shard`` on anything else.
        """
        k, sep, n = text.partition("/")
        if not sep or not k.strip().isdigit() or not n.strip().isdigit():
            raise ConfigError(f"--shard: K/N with 0 ≤ K < N (e.g. 0/4), got {text!r}")
        return cls(int(k), int(n))

    @property
    def name(self) -> str:
        """``1of4``: the shard's file name under ``OUT/shards/``."""
        return f"{self.index}of{self.count}"

    def jobs(self, jobs: list[Job], share_label_free: bool) -> list[Job]:
        """This shard's share of ``jobs``, in plan order."""
        units = work_units(jobs, share_label_free)
        cost = [
            sum(1 + (j.arm.finetune == "fixmatch") for j in unit)
            + 2 * bool(unit[0].arm.pretraining)
            for unit in units
        ]
        load = [0] * self.count
        mine: list[Job] = []
        # the costliest units first, each to the least loaded shard (longest processing time
        # first): a plan of a few large units no longer piles them onto one shard
        for u in sorted(range(len(units)), key=lambda u: (-cost[u], u)):
            k = min(range(self.count), key=lambda i: (load[i], i))
            load[k] += cost[u]
            if k == self.index:
                mine += units[u]
        order = {j.key: i for i, j in enumerate(jobs)}
        return sorted(mine, key=lambda j: order[j.key])


def work_units(jobs: list[Job], share_label_free: bool) -> list[list[Job]]:
    """``jobs`` grouped by the pretraining they start from (one group per pretraining run; a
    run from scratch is a group of its own, joined by the runs it is the teacher of), groups in
    the order of their first job."""
    units: dict[tuple[Any, ...], list[Job]] = {}
    for j in jobs:
        spec = j.arm.pretraining
        if spec is None and j.arm.teacher:  # a student runs beside its teacher
            key: tuple[Any, ...] = ("run", f"{j.arm.teacher}_{j.budget.tag}_s{j.seed}")
        elif spec is None:
            key = ("run", j.key)
        elif spec.labelled:
            key = ("pretraining", spec.tag, j.budget.tag, j.seed)
        else:
            key = ("pretraining", spec.tag, "", None if share_label_free else j.seed)
        units.setdefault(key, []).append(j)
    return list(units.values())
