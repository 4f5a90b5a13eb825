"""The compute budget of an arm's fitting stage (:func:`stage_budget`, :func:`stage_overrides`).

The rule of the label-efficiency experiment (:mod:`medcl.evaluate.efficiency`): every arm's
fitting stage (full fine-tuning or FixMatch, from scratch or from a pretrained encoder) runs at
most the same number of epochs, ``finetune.epochs`` plus the pretraining's optimiser steps counted
in fine-tuning epochs, and stops early when the validation score has not improved for the
patience. An arm that starts from nothing thereby gets at least the optimiser steps of
pretraining and fine-tuning together, and a pretrained arm's stage is as long as it needs on
validation, up to the same cap: a pretrained start followed by a few hundred steps is not
comparable with a from-scratch arm of a few thousand (SelfMatch and SimCLRv2 fine-tune to
convergence). Arms from scratch also get their own augmentation (``efficiency.scratch_augment``).
"""

from __future__ import annotations

import math
from typing import Any

from medcl.config import Config
from medcl.data.manifest import Manifest
from medcl.evaluate.fitting import epoch_samples


def planned_pretrain_steps(cfg: Config, n_train: int) -> int:
    """Optimiser steps a pretraining on ``n_train`` training rows will take (one process)."""
    per_epoch = max(1, n_train // cfg.data.batch_size)  # MixedBatchSampler, drop-last
    steps = per_epoch * cfg.optim.epochs // cfg.trainer.accumulate_grad_batches
    return min(steps, cfg.optim.max_steps) if cfg.optim.max_steps > 0 else steps


def stage_budget(cfg: Config, n_train: int, n_labelled: int) -> tuple[int, int]:
    """The epoch cap and patience of every arm's fitting stage.

    ``finetune.epochs`` plus the pretraining's steps in fine-tuning epochs
    (:func:`medcl.evaluate.fitting.epoch_samples`). Patience grows in proportion, but at most to
    twice ``finetune.patience``: a network trained from nothing improves on validation by fits and
    starts, so it gets more patience than a pretrained one, yet a proportional patience (33
    epochs in the demo) lets every run go to its last epoch. Measured on the demo's validation
    split (supervised from scratch, 62 epochs): at 5 % labels the best epoch was the 32nd and
    nothing better came in the 30 after it; at 100 % it kept improving to the end, with at most 9
    epochs between improvements. Early stopping on validation then picks how much of the budget
    is used.
    """
    ft = cfg.finetune
    per_epoch = epoch_samples(ft, n_labelled) // ft.batch_size
    extra = math.ceil(planned_pretrain_steps(cfg, n_train) / max(1, per_epoch))
    epochs = ft.epochs + extra
    grown = round(ft.patience * epochs / ft.epochs)
    return epochs, max(ft.patience, min(2 * ft.patience, grown))


def stage_overrides(cfg: Config, subset: Manifest, from_scratch: bool) -> dict[str, Any]:
    """The config changes of an arm's fitting stage, for :func:`derive`.

    ``finetune.epochs`` and ``patience`` from :func:`stage_budget` (with
    ``efficiency.fair_budget``), and for an arm from scratch ``efficiency.scratch_augment`` as
    ``augment.options`` (which ``derive`` merges over the current options).

    Args:
        cfg: The experiment's config.
        subset: The run's label subset (its labelled training images size an epoch).
        from_scratch: Whether the arm starts from nothing.
    """
    fields: dict[str, Any] = {}
    if cfg.efficiency.fair_budget:
        df = subset.df
        train = df["split"] == "train"
        epochs, patience = stage_budget(
            cfg, int(train.sum()), int((train & (df["label"] != "")).sum())
        )
        fields.update({"finetune.epochs": epochs, "finetune.patience": patience})
    if from_scratch and cfg.efficiency.scratch_augment:
        fields["augment.options"] = dict(cfg.efficiency.scratch_augment)
    return fields


def budget_rule(cfg: Config, subset: Manifest) -> str:
    """The budget rule in one sentence, with the numbers of ``subset``'s experiment."""
    if not cfg.efficiency.fair_budget:
        return (
            f"Budget rule: every fitting stage runs at most finetune.epochs = "
            f"{cfg.finetune.epochs} epochs, early-stopped on validation (patience "
            f"{cfg.finetune.patience}); efficiency.fair_budget is off."
        )
    df = subset.df
    train = df["split"] == "train"
    n_lab = int((train & (df["label"] != "")).sum())
    epochs, patience = stage_budget(cfg, int(train.sum()), n_lab)
    per_epoch = epoch_samples(cfg.finetune, n_lab) // cfg.finetune.batch_size
    return (
        f"Budget rule: every arm's fitting stage (fine-tuning or FixMatch, from scratch or "
        f"pretrained) runs at most {epochs} epochs of {per_epoch} optimiser steps "
        f"(finetune.epochs = {cfg.finetune.epochs} plus the "
        f"{planned_pretrain_steps(cfg, int(train.sum()))} pretraining steps), stopping when the "
        f"validation score has not improved for {patience} epochs: an arm from scratch gets as "
        f"many steps as pretraining and fine-tuning together, a pretrained one as many as it "
        f"needs on validation, up to the same cap."
    )
