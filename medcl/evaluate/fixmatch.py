"""FixMatch fine-tuning: the semi-supervised baseline SSCL is compared with (docs/comparing.md).

Sohn et al. 2020, "FixMatch: Simplifying Semi-Supervised Learning with Consistency and
Confidence", NeurIPS. Every optimiser step draws ``B = finetune.batch_size`` labelled images (with
replacement) and ``μB`` unlabelled images, and minimises (:class:`~medcl.losses.FixMatchLoss`)::

    q_u = softmax(f(weak(u)))                                      (no gradient)
    L   = CE(f(weak(x)), y; w) + λ_u · mean_u[ 1(max q_u ≥ τ) · CE(f(strong(u)), argmax q_u) ]

Views (the paper's weak = flip/shift, strong = RandAugment; here both come from the modality
preset, see :func:`weak_options`):

- **strong** = the preset at full strength, with ``augment.options`` applied (the same
  augmentation as full fine-tuning in :mod:`medcl.evaluate.finetune`);
- **weak** = the same preset with only its geometry kept: the small affine (rotation, zoom,
  translation) and the left-right flip when ``flip_lr`` is on; every other ``p_*`` (resized crop,
  bias field, gamma, contrast, blur, Gaussian/Rician noise, the per-sample artifacts) is 0 and
  the CT window jitter is 0, so intensities are exactly the evaluation mapping
  (``Classifier.normalize``).

Like full fine-tuning, only the preset's batched (device) part is used; the torchio per-sample
artifacts are not applied. The labelled batch uses the weak view. All images of a step go through
the network in one forward pass (batch-norm statistics over labelled and unlabelled images, as in
the paper's implementation).

Optimisation mirrors ``fit_full``: AdamW (weight decay ``finetune.weight_decay``), head at
``finetune.lr``, encoder at ``lr × encoder_lr_mult`` when it is pretrained (full ``lr`` from
scratch), linear warm-up over ``max(1, floor(steps × finetune.warmup_fraction))`` steps then
cosine decay (:func:`~medcl.optim.schedule.warmup_cosine`);
``finetune.balance`` = ``weights`` weights the supervised cross-entropy by
:func:`~medcl.evaluate.fitting.class_weights`, ``sampler`` draws labelled images with those
weights, ``none`` does neither. Validation balanced accuracy is measured every
``max(1, steps // 10)`` steps and after the last step; the best validation weights are loaded back.
Batches and augmentations are drawn from generators seeded by ``trainer.seed`` (deterministic on
the CPU for a fixed initial model).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from medcl.config import Config
from medcl.data.dataset import CachedImages
from medcl.errors import MedclError
from medcl.evaluate.classifier import Classifier
from medcl.evaluate.fitting import (
    BestOnValidation,
    FitJob,
    class_weights,
    classifier_trainer,
    epoch_samples,
    loss_weights,
)
from medcl.losses.fixmatch import FixMatchLoss
from medcl.transforms import AugmentPreset, MultiViewAugment, build_preset
from medcl.transforms.options import AugmentOptions, CTOptions


def weak_options(options: AugmentOptions) -> AugmentOptions:
    """FixMatch's weak augmentation derived from a preset's (strong) options: geometry only.

    Keeps ``p_affine``, ``rotate_deg``, ``scale_range``, ``translate_frac`` and ``flip_lr``; sets
    every other probability ``p_*`` to 0 (resized crop, bias field, gamma, contrast, blur, noise,
    per-sample artifacts) and, for CT, the window level/width jitter to 0.

    Args:
        options: The options of the strong view.

    Returns:
        Options of the same modality for the weak view.
    """
    changes: dict[str, Any] = {
        f.name: 0.0
        for f in dataclasses.fields(options)
        if f.name.startswith("p_") and f.name != "p_affine"
    }
    if isinstance(options, CTOptions):
        changes.update(level_jitter_hu=0.0, width_jitter_frac=0.0)
    return dataclasses.replace(options, **changes)


def fixmatch_presets(
    name: str, overrides: dict[str, Any] | None, dims: int
) -> tuple[AugmentPreset, AugmentPreset]:
    """``(weak, strong)`` presets: ``strong = build_preset(name, overrides)``, ``weak`` from
    :func:`weak_options` of it."""
    strong = build_preset(name, overrides, dims=dims)
    return build_preset(name, weak_options(strong.options), dims=dims), strong


class _StepBatches(Dataset):
    """Item ``k`` is step ``k``'s ``(labelled images, labels, unlabelled images)``."""

    def __init__(
        self, lab: CachedImages, unl: CachedImages, lab_idx: Tensor, unl_idx: Tensor
    ) -> None:
        self.lab, self.unl = lab, unl
        self.lab_idx, self.unl_idx = lab_idx, unl_idx

    def __len__(self) -> int:
        return int(self.lab_idx.shape[0])

    def __getitem__(self, k: int) -> tuple[Tensor, Tensor, Tensor]:
        li, ui = self.lab_idx[k], self.unl_idx[k]
        return self.lab.images[li], self.lab.labels[li], self.unl.images[ui]


def _step_indices(
    labelled: CachedImages,
    n_unlabelled: int,
    steps: int,
    batch: int,
    n_unl_batch: int,
    balance: str,
    n_classes: int,
    seed: int,
) -> tuple[Tensor, Tensor]:
    """Labelled indices ``(steps, B)`` drawn with replacement (class-balanced for ``sampler``);
    unlabelled indices ``(steps, μB)`` from successive random permutations of the pool."""
    gen = torch.Generator().manual_seed(seed)
    n_lab = steps * batch
    if balance == "sampler":
        labels = labelled.labels.numpy()
        p = class_weights(labels, n_classes)[labelled.labels].double()
        lab = torch.multinomial(p, n_lab, replacement=True, generator=gen)
    else:
        lab = torch.randint(len(labelled), (n_lab,), generator=gen)
    n_unl = steps * n_unl_batch
    if n_unl == 0:
        return lab.reshape(steps, batch), torch.zeros(steps, 0, dtype=torch.long)
    reps = math.ceil(n_unl / n_unlabelled)
    unl = torch.cat([torch.randperm(n_unlabelled, generator=gen) for _ in range(reps)])[:n_unl]
    return lab.reshape(steps, batch), unl.reshape(steps, n_unl_batch)


class FixMatchModule(BestOnValidation):
    """Encoder + linear head trained with :class:`~medcl.losses.FixMatchLoss`; keeps the best
    validation weights.

    Args:
        clf: The classifier (trained in place).
        cfg: Run config (``finetune``, ``augment``, ``trainer.seed``).
        weights: Class weights of the supervised term, or ``None``.
        steps: Optimiser steps (for the schedule).
        threshold: Confidence threshold ``τ``.
        lambda_u: Weight ``λ_u`` of the unsupervised term.
        pretrained: Whether the encoder is pretrained (then it gets ``lr × encoder_lr_mult``).
    """

    def __init__(
        self,
        clf: Classifier,
        cfg: Config,
        weights: Tensor | None,
        steps: int,
        threshold: float,
        lambda_u: float,
        pretrained: bool,
    ) -> None:
        super().__init__(clf, cfg, weights, pretrained)
        self.steps = steps
        d = clf.description
        weak, strong = fixmatch_presets(d.preset, cfg.augment.options, d.spatial_dims)
        self.weak = MultiViewAugment(weak, 1)
        self.strong = MultiViewAugment(strong, 1)
        self.criterion = FixMatchLoss(threshold, lambda_u)
        self.mask_rates: list[Tensor] = []

    def views(
        self, x_lab: Tensor, x_unl: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(weak(x_lab), weak(x_unl), strong(x_unl))`` in [0, 1], from cache units."""
        b = x_lab.shape[0]
        if x_unl.shape[0] == 0:
            return self.weak(x_lab, generator=generator)[:, 0], x_unl, x_unl
        w = self.weak(torch.cat([x_lab, x_unl]), generator=generator)[:, 0]
        s = self.strong(x_unl, generator=generator)[:, 0]
        return w[:b], w[b:], s

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x_lab, y, x_unl = batch
        lab_w, unl_w, unl_s = self.views(x_lab, x_unl, self.step_generator(x_lab.device))
        b, u = lab_w.shape[0], unl_w.shape[0]
        logits = self.clf(torch.cat([lab_w, unl_w, unl_s])).float()
        loss, logs = self.criterion(
            logits[:b],
            y,
            logits[b : b + u],
            logits[b + u :],
            class_weight=self.loss_weight,
        )
        self.mask_rates.append(logs["mask_rate"])
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        self.log("train/mask_rate", logs["mask_rate"], prog_bar=True, batch_size=b)
        return loss

    def total_steps(self) -> int:
        return self.steps


def fit_fixmatch(
    clf: Classifier,
    labelled: CachedImages,
    unlabelled: CachedImages,
    val: CachedImages,
    cfg: Config,
    n_classes: int,
    steps: int,
    mu: int = 3,
    threshold: float = 0.95,
    lambda_u: float = 1.0,
    progress: bool = False,
    *,
    pretrained: bool,
) -> tuple[float, dict[str, Any]]:
    """Train encoder + head in place with FixMatch (Sohn et al. 2020); best val weights kept.

    ``L = CE(f(weak(x)), y; w) + λ_u · mean_u[1(max q_u ≥ τ) · CE(f(strong(u)), argmax q_u)]``
    with ``q_u = softmax(f(weak(u)))`` detached; see the module docstring for the views, the
    optimiser and the schedule.

    Args:
        clf: Encoder + ``nn.Linear`` head; ``clf.description`` gives the preset and the dimensions.
        labelled: Labelled training images (cache units).
        unlabelled: Unlabelled training images (their labels are ignored). May be empty: the
            unsupervised term is then 0 (supervised training on weak views). The paper also
            feeds the labelled images to the unlabelled stream; pass them here to do the same.
        val: Labelled validation images, for model selection.
        cfg: Run config: ``finetune.batch_size`` (B), ``lr``, ``encoder_lr_mult``, ``balance``;
            ``augment.options`` (strong view); ``trainer.accelerator`` and ``trainer.seed``.
        n_classes: Number of classes.
        steps: Optimiser steps.
        mu: Unlabelled images per labelled image in a step (the paper uses 7).
        threshold: Confidence threshold ``τ`` of the pseudo-labels.
        lambda_u: Weight ``λ_u`` of the unsupervised term.
        progress: Show Lightning's progress bar.
        pretrained: Whether ``clf.encoder`` is pretrained (encoder lr ``lr × encoder_lr_mult``);
            ``False`` trains it at the full ``lr``.

    Returns:
        ``(best validation balanced accuracy, details)`` with details ``steps`` (optimiser steps
        run), ``mask_rate`` (mean share of confident pseudo-labels over the last
        ``max(1, steps // 10)`` steps), ``mu``, ``threshold``, ``lambda_u`` and ``best_step``
        (the step count at the selected validation).

    Raises:
        MedclError: No labelled training or validation images, or ``steps < 1`` / ``mu < 0``.
    """
    if len(labelled) == 0:
        raise MedclError("FixMatch needs labelled training images (check --label-fraction)")
    if len(val) == 0:
        raise MedclError("no labelled validation rows: model selection needs a val split")
    if steps < 1 or mu < 0:
        raise MedclError(f"FixMatch needs steps >= 1 and mu >= 0; got steps={steps}, mu={mu}")
    ft = cfg.finetune
    batch = ft.batch_size
    n_unl_batch = mu * batch if len(unlabelled) > 0 else 0
    lab_idx, unl_idx = _step_indices(
        labelled,
        len(unlabelled),
        steps,
        batch,
        n_unl_batch,
        ft.balance,
        n_classes,
        cfg.trainer.seed,
    )
    loader = DataLoader(
        _StepBatches(labelled, unlabelled, lab_idx, unl_idx), batch_size=None, shuffle=False
    )
    val_loader = DataLoader(val, batch_size=256)
    weights = loss_weights(cfg, labelled.labels.numpy(), n_classes)
    module = FixMatchModule(clf, cfg, weights, steps, threshold, lambda_u, pretrained)
    every = max(1, steps // 10)
    trainer = classifier_trainer(
        cfg, progress, max_epochs=1, max_steps=steps, val_check_interval=every
    )
    trainer.fit(module, loader, val_loader)
    if steps % every:  # the last steps were not validated yet
        trainer.validate(module, val_loader, verbose=False)
    module.keep_best()
    recent = module.mask_rates[-every:]
    mask_rate = float(torch.stack(recent).float().mean()) if recent else 0.0
    return module.best_score, {
        "steps": int(trainer.global_step),
        "mask_rate": mask_rate,
        "mu": mu,
        "threshold": threshold,
        "lambda_u": lambda_u,
        "best_step": module.best_step,
    }


def fit_fixmatch_mode(job: FitJob) -> tuple[float, dict[str, Any]]:
    """``finetune.mode=fixmatch``: :func:`fit_fixmatch` on the labelled training images and the
    unlabelled training rows of ``job.manifest``, for as many optimiser steps as full
    fine-tuning (``finetune.epochs`` epochs of :func:`~medcl.evaluate.fitting.epoch_samples`),
    with ``finetune.fixmatch_mu``, ``fixmatch_threshold`` and ``fixmatch_lambda_u``. FixMatch
    does not log to the run folder (``job.out``).
    """
    m, ft = job.manifest, job.cfg.finetune
    unlabelled = job.clf.images(m.subset((m.df["split"] == "train") & (m.df["label"] == "")))
    steps = ft.epochs * (epoch_samples(ft, len(job.train)) // ft.batch_size)
    return fit_fixmatch(
        job.clf,
        job.train,
        unlabelled,  # type: ignore[arg-type]
        job.val,
        job.cfg,
        job.n_classes,
        steps,
        mu=ft.fixmatch_mu,
        threshold=ft.fixmatch_threshold,
        lambda_u=ft.fixmatch_lambda_u,
        progress=job.progress,
        pretrained=job.pretrained,
    )
