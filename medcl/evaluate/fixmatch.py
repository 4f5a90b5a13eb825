"""FixMatch fine-tuning: the semi-supervised baseline SSCL is compared with (docs/comparing.md).

Sohn et al. 2020, "FixMatch: Simplifying Semi-Supervised Learning with Consistency and
Confidence", NeurIPS. Every optimiser step draws ``B = finetune.batch_size`` labelled images (with
replacement) and ``μB`` unlabelled images, and minimises (:class:`~medcl.losses.FixMatchLoss`)::

    q_u = softmax(f(weak(u)))                                      (no gradient)
    L   = CE(f(weak(x)), y; w) + λ_u · mean_u[ 1(max q_u ≥ τ) · CE(f(strong(u)), argmax q_u) ]

Views (the paper's weak = flip/shift, strong = RandAugment; here both come from the modality
preset, see :func:`fixmatch_presets`):

- **strong** = the preset with ``augment.options`` applied (the same augmentation as full
  fine-tuning in :mod:`medcl.evaluate.finetune`), then ``finetune.fixmatch_strong``;
- **weak** = the strong view's options with only the geometry kept (:func:`weak_options`: the
  small affine and the left-right flip when ``flip_lr`` is on; every other ``p_*`` and the CT
  window jitter 0, so intensities are exactly the evaluation mapping ``Classifier.normalize``),
  then ``finetune.fixmatch_weak``.

Like full fine-tuning, only the preset's batched (device) part is used; the torchio per-sample
artifacts are not applied. The labelled batch uses the weak view. All images of a step go through
the network in one forward pass (batch-norm statistics over labelled and unlabelled images, as in
the paper's implementation), unless ``finetune.fixmatch_weak_nograd`` computes the weak views of
the unlabelled images in a separate forward pass without gradient, which is cheaper (no
activations kept for them) but gives those images their own batch-norm statistics.

Options of the target (off by default): ``finetune.fixmatch_align`` aligns the targets to the
labelled class frequencies (ReMixMatch's distribution alignment,
:class:`~medcl.losses.alignment.DistributionAlignment`, over the last 128 steps; the frequencies
add-one smoothed by :func:`~medcl.losses.alignment.smoothed_frequencies`), against the class
imbalance of pseudo-labels at very few labels; ``finetune.fixmatch_patients = k > 1`` draws the
unlabelled images as ``μB/k`` patients with ``k`` images each and pools each image's target over
its patient's images in the step (every image of a patient shows the same finding, so the mean of
``k`` weak predictions is a better target than one).

Multi-label findings (``(B, K)`` states, :mod:`medcl.data.findings`): the objective is FixMatch per
finding (:class:`~medcl.losses.fixmatch_findings.FindingsFixMatchLoss`)::

    p_uk = σ(f(weak(u))_k)                                      (no gradient)
    ŷ_uk = 1(p_uk ≥ τ),  m_uk = 1(p_uk ≥ τ or p_uk ≤ 1 − τ)
    L    = BCE_known(f(weak(x)), y; w) + λ_u · (1/(U·K)) Σ_{u,k} m_uk · BCE(f(strong(u))_k, ŷ_uk)

with the supervised term the masked binary cross-entropy with per-finding positive weights
(:mod:`medcl.losses.findings`); each finding of each unlabelled image is pseudo-labelled on its
own, present when confidently present, absent when confidently absent, left out otherwise. It
needs ``τ ≥ 0.5``. ``fixmatch_patients`` pools ``p_uk`` per finding over a patient's images.
``fixmatch_align`` is refused: distribution alignment rescales a class distribution that sums to
one, which independent sigmoids are not. ``balance = sampler`` draws the labelled images uniformly
(there are no classes to balance by; the positive weights balance each finding).

Length and optimisation mirror ``fit_full``: an epoch is
``epoch_samples(finetune, n_labelled) // B`` optimiser steps; validation balanced accuracy is
measured after every epoch; training stops when it has not improved for ``finetune.patience``
epochs, after at most ``finetune.epochs`` epochs, and the best validation weights are loaded back.
AdamW (weight decay ``finetune.weight_decay``), head at ``finetune.lr``, encoder at
``lr × encoder_lr_mult`` when it is pretrained (full ``lr`` from scratch), linear warm-up over
``max(1, floor(T × finetune.warmup_fraction))`` steps then cosine decay over the ``T = epochs ×
steps per epoch`` steps of the cap (:func:`~medcl.optim.schedule.warmup_cosine`), so an early stop
ends the schedule part-way, as in full fine-tuning. ``finetune.balance`` = ``weights`` weights the
supervised cross-entropy by :func:`~medcl.evaluate.fitting.class_weights`, ``sampler`` draws
labelled images with those weights, ``none`` does neither. The batches of all ``T`` steps are drawn
up front from generators seeded by ``trainer.seed``, and step ``t`` trains on batch ``t`` with the
augmentations of step ``t`` (deterministic on the CPU for a fixed initial model; an early stop only
cuts the sequence).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from medcl.config import Config
from medcl.data.dataset import CachedImages
from medcl.data.sampler import patient_runs
from medcl.errors import ConfigError, MedclError
from medcl.evaluate.classifier import Classifier
from medcl.evaluate.fitting import (
    BestOnValidation,
    FitJob,
    class_weights,
    classifier_trainer,
    epoch_samples,
    loss_weights,
)
from medcl.losses.alignment import DistributionAlignment, smoothed_frequencies
from medcl.losses.fixmatch import FixMatchLoss
from medcl.losses.fixmatch_findings import FindingsFixMatchLoss, finding_pseudo_labels
from medcl.transforms import AugmentPreset, MultiViewAugment, build_preset, make_options
from medcl.transforms.options import AugmentOptions, CTOptions

ALIGN_WINDOW = 128
"""Steps whose mean unlabelled prediction forms the running marginal of distribution alignment
(ReMixMatch's choice)."""


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
    name: str,
    overrides: Mapping[str, Any] | None,
    dims: int,
    strong: Mapping[str, Any] | None = None,
    weak: Mapping[str, Any] | None = None,
) -> tuple[AugmentPreset, AugmentPreset]:
    """``(weak, strong)`` presets of FixMatch's two views.

    Args:
        name: The preset (``ct``, ``mr``, ``xr``).
        overrides: ``augment.options``.
        dims: 2 or 3.
        strong: ``finetune.fixmatch_strong``, merged over ``overrides`` for the strong view.
        weak: ``finetune.fixmatch_weak``, merged over :func:`weak_options` of the strong view.

    Raises:
        ConfigError: An unknown option or an invalid value, naming the field it came from
            (``augment.options``, ``finetune.fixmatch_strong`` or ``finetune.fixmatch_weak``).
    """
    base = dict(overrides or {})
    try:
        make_options(str(name).lower(), base)
    except ConfigError as exc:
        raise ConfigError(f"augment.options: {exc}") from None
    try:
        strong_preset = build_preset(name, {**base, **(strong or {})}, dims=dims)
    except ConfigError as exc:
        raise ConfigError(f"finetune.fixmatch_strong: {exc}") from None
    derived = weak_options(strong_preset.options)
    if weak:
        try:
            derived = make_options(strong_preset.name, {**dataclasses.asdict(derived), **weak})
        except ConfigError as exc:
            raise ConfigError(f"finetune.fixmatch_weak: {exc}") from None
    return build_preset(name, derived, dims=dims), strong_preset


def check_fixmatch_findings(cfg: Config) -> None:
    """Refuse, in one line naming the field, what FixMatch per finding cannot do: distribution
    alignment (``finetune.fixmatch_align``) and a threshold below 0.5."""
    ft = cfg.finetune
    if ft.fixmatch_align:
        raise ConfigError(
            "finetune.fixmatch_align: distribution alignment needs one class per image (it "
            "rescales a class distribution that sums to 1); a multi-label task's findings each "
            "have their own sigmoid. Set it to false"
        )
    if ft.fixmatch_threshold < 0.5:
        raise ConfigError(
            "finetune.fixmatch_threshold: must be >= 0.5 for a multi-label task (a finding is "
            f"confident when p >= threshold or p <= 1 - threshold); got {ft.fixmatch_threshold}"
        )


def check_fixmatch_views(cfg: Config, preset: str, dims: int = 2) -> None:
    """Refuse bad FixMatch view options (``finetune.fixmatch_strong``, ``fixmatch_weak``) for
    ``preset`` before any work, with one line naming the field (:func:`fixmatch_presets`)."""
    ft = cfg.finetune
    fixmatch_presets(preset, cfg.augment.options, dims, ft.fixmatch_strong, ft.fixmatch_weak)


class _StepBatches(Dataset):
    """Item ``t`` is step ``t``'s ``(labelled images, labels, unlabelled images, their patient
    groups)``."""

    def __init__(
        self, lab: CachedImages, unl: CachedImages, lab_idx: Tensor, unl_idx: Tensor
    ) -> None:
        self.lab, self.unl = lab, unl
        self.lab_idx, self.unl_idx = lab_idx, unl_idx

    def __len__(self) -> int:
        return int(self.lab_idx.shape[0])

    def __getitem__(self, t: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        li, ui = self.lab_idx[t], self.unl_idx[t]
        return self.lab.images[li], self.lab.labels[li], self.unl.images[ui], self.unl.groups[ui]


class _EpochSteps(Sampler[int]):
    """Epoch ``e`` yields the steps ``e·n … (e+1)·n − 1`` (Lightning calls :meth:`set_epoch`
    before each epoch), so that the batches of successive epochs continue one sequence."""

    def __init__(self, per_epoch: int) -> None:
        self.per_epoch, self.epoch = per_epoch, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_epoch

    def __iter__(self) -> Iterator[int]:
        start = self.epoch * self.per_epoch
        return iter(range(start, start + self.per_epoch))


def _step_indices(
    labelled: CachedImages,
    unlabelled: CachedImages,
    steps: int,
    batch: int,
    n_unl_batch: int,
    balance: str,
    n_classes: int,
    seed: int,
    patients: int = 1,
) -> tuple[Tensor, Tensor]:
    """Labelled indices ``(steps, B)`` drawn with replacement (class-balanced for ``sampler``);
    unlabelled indices ``(steps, μB)``: successive random permutations of the pool, or with
    ``patients = k > 1`` runs of ``k`` images of one patient, patients in successive random
    permutations (:func:`medcl.data.sampler.patient_runs`)."""
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
    n_pool = len(unlabelled)
    if patients > 1:
        rng = np.random.default_rng([seed, patients])
        runs = patient_runs(np.arange(n_pool), unlabelled.groups.numpy(), patients, n_unl, rng)
        unl = torch.from_numpy(runs)
    else:
        reps = math.ceil(n_unl / n_pool)
        unl = torch.cat([torch.randperm(n_pool, generator=gen) for _ in range(reps)])[:n_unl]
    return lab.reshape(steps, batch), unl.reshape(steps, n_unl_batch)


class FixMatchModule(BestOnValidation):
    """Encoder + linear head trained with :class:`~medcl.losses.FixMatchLoss`; keeps the best
    validation weights.

    Args:
        clf: The classifier (trained in place).
        cfg: Run config (``finetune``: τ, λ_u, the views and the options of the target;
            ``augment``, ``trainer.seed``).
        weights: Class weights of the supervised term, or ``None``.
        pretrained: Whether the encoder is pretrained (then it gets ``lr × encoder_lr_mult``).
        class_prior: ``(C,)`` target distribution of ``finetune.fixmatch_align``; required when
            it is on.
    """

    def __init__(
        self,
        clf: Classifier,
        cfg: Config,
        weights: Tensor | None,
        pretrained: bool,
        class_prior: Tensor | None = None,
    ) -> None:
        super().__init__(clf, cfg, weights, pretrained)
        d, ft = clf.description, cfg.finetune
        weak, strong = fixmatch_presets(
            d.preset, cfg.augment.options, d.spatial_dims, ft.fixmatch_strong, ft.fixmatch_weak
        )
        self.weak = MultiViewAugment(weak, 1)
        self.strong = MultiViewAugment(strong, 1)
        alignment = None
        if clf.multilabel:
            check_fixmatch_findings(cfg)
            self.criterion: nn.Module = FindingsFixMatchLoss(
                ft.fixmatch_threshold, ft.fixmatch_lambda_u
            )
        else:
            if ft.fixmatch_align:
                if class_prior is None:
                    raise MedclError(
                        "finetune.fixmatch_align needs the labelled class distribution"
                    )
                alignment = DistributionAlignment(class_prior, ALIGN_WINDOW)
            self.criterion = FixMatchLoss(ft.fixmatch_threshold, ft.fixmatch_lambda_u, alignment)
        self.pool = ft.fixmatch_patients > 1
        self.weak_nograd = ft.fixmatch_weak_nograd
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

    def logits(self, lab_w: Tensor, unl_w: Tensor, unl_s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(f(lab_w), f(unl_w), f(unl_s))`` as float logits: one forward pass over the three
        parts, or with ``fixmatch_weak_nograd`` the weak unlabelled part apart without
        gradient."""
        b, u = lab_w.shape[0], unl_w.shape[0]
        if self.weak_nograd and u:
            with torch.no_grad():
                weak = self.clf(unl_w).float()
            rest = self.clf(torch.cat([lab_w, unl_s])).float()
            return rest[:b], weak, rest[b:]
        out = self.clf(torch.cat([lab_w, unl_w, unl_s])).float()
        return out[:b], out[b : b + u], out[b + u :]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x_lab, y, x_unl, groups = batch
        lab_w, unl_w, unl_s = self.views(x_lab, x_unl, self.step_generator(x_lab.device))
        lab, weak, strong = self.logits(lab_w, unl_w, unl_s)
        # (labelled logits, labels, weak, strong, supervised weights, groups): both losses
        loss, logs = self.criterion(
            lab, y, weak, strong, self.loss_weight, groups if self.pool else None
        )
        self.mask_rates.append(logs["mask_rate"])
        b = x_lab.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        self.log("train/mask_rate", logs["mask_rate"], prog_bar=True, batch_size=b)
        return loss


def fit_fixmatch(
    clf: Classifier,
    labelled: CachedImages,
    unlabelled: CachedImages,
    val: CachedImages,
    cfg: Config,
    n_classes: int,
    progress: bool = False,
    *,
    pretrained: bool,
) -> tuple[float, dict[str, Any]]:
    """Train encoder + head in place with FixMatch (Sohn et al. 2020); best val weights kept.

    ``L = CE(f(weak(x)), y; w) + λ_u · mean_u[1(max q_u ≥ τ) · CE(f(strong(u)), argmax q_u)]``
    with ``q_u = softmax(f(weak(u)))`` detached; see the module docstring for the views, the
    options of the target, the length, the optimiser and the schedule.

    Args:
        clf: Encoder + ``nn.Linear`` head; ``clf.description`` gives the preset and the dimensions.
        labelled: Labelled training images (cache units).
        unlabelled: Unlabelled training images (their labels are ignored; their patient groups
            are used by ``fixmatch_patients``). May be empty: the unsupervised term is then 0
            (supervised training on weak views). The paper also feeds the labelled images to
            the unlabelled stream; pass them here to do the same.
        val: Labelled validation images, for model selection.
        cfg: Run config: ``finetune`` (``batch_size`` B, ``epochs``, ``epoch_steps``,
            ``patience``, ``lr``, ``encoder_lr_mult``, ``balance``, ``fixmatch_mu`` μ,
            ``fixmatch_threshold`` τ, ``fixmatch_lambda_u`` λ_u and the other ``fixmatch_*``
            options); ``augment.options``; ``trainer.accelerator`` and ``trainer.seed``.
        n_classes: Number of classes.
        progress: Show Lightning's progress bar.
        pretrained: Whether ``clf.encoder`` is pretrained (encoder lr ``lr × encoder_lr_mult``);
            ``False`` trains it at the full ``lr``.

    Returns:
        ``(best validation balanced accuracy, details)`` with details ``steps`` (optimiser steps
        run), ``epochs_run``, ``best_step`` (the step count at the selected validation),
        ``mask_rate`` (mean share of confident pseudo-labels over the last epoch's steps),
        ``mu``, ``threshold``, ``lambda_u``, and the kept model's ``pseudo_val_coverage`` and
        ``pseudo_val_accuracy`` at τ on the validation images (:func:`confident_on`).

    Raises:
        MedclError: No labelled training or validation images.
        ConfigError: Bad view options, or ``fixmatch_patients`` not dividing ``μB``.
    """
    if len(labelled) == 0:
        raise MedclError("FixMatch needs labelled training images (check --label-fraction)")
    if len(val) == 0:
        raise MedclError("no labelled validation rows: model selection needs a val split")
    ft = cfg.finetune
    if labelled.multilabel:
        check_fixmatch_findings(cfg)
    batch, mu, k = ft.batch_size, ft.fixmatch_mu, ft.fixmatch_patients
    if (mu * batch) % k:
        raise ConfigError(
            f"finetune.fixmatch_patients: must divide fixmatch_mu × batch_size = {mu * batch}; "
            f"got {k}"
        )
    per_epoch = epoch_samples(ft, len(labelled)) // batch
    cap = ft.epochs * per_epoch
    n_unl_batch = mu * batch if len(unlabelled) > 0 else 0
    lab_idx, unl_idx = _step_indices(
        labelled,
        unlabelled,
        cap,
        batch,
        n_unl_batch,
        "none" if labelled.multilabel else ft.balance,  # findings: no classes to sample by
        n_classes,
        cfg.trainer.seed,
        patients=k,
    )
    loader = DataLoader(
        _StepBatches(labelled, unlabelled, lab_idx, unl_idx),
        batch_size=None,
        sampler=_EpochSteps(per_epoch),
    )
    val_loader = DataLoader(val, batch_size=256)
    weights = loss_weights(cfg, labelled.labels.numpy(), n_classes)
    prior = None if labelled.multilabel else smoothed_frequencies(labelled.labels, n_classes)
    module = FixMatchModule(clf, cfg, weights, pretrained, class_prior=prior)
    trainer = classifier_trainer(
        cfg,
        progress,
        max_epochs=ft.epochs,
        callbacks=[EarlyStopping(monitor=module.monitor, mode="max", patience=ft.patience)],
    )
    trainer.fit(module, loader, val_loader)
    module.keep_best()
    recent = module.mask_rates[-per_epoch:]
    mask_rate = float(torch.stack(recent).float().mean()) if recent else 0.0
    coverage, accuracy = confident_on(clf, val_loader, ft.fixmatch_threshold)
    return module.best_score, {
        "steps": int(trainer.global_step),
        "epochs_run": int(trainer.current_epoch),
        "best_step": module.best_step,
        "mask_rate": mask_rate,
        "mu": mu,
        "threshold": ft.fixmatch_threshold,
        "lambda_u": ft.fixmatch_lambda_u,
        "pseudo_val_coverage": coverage,
        "pseudo_val_accuracy": accuracy,
    }


@torch.no_grad()
def confident_on(clf: Classifier, loader: DataLoader, threshold: float) -> tuple[float, float]:
    """What FixMatch's pseudo-labels are worth, measured where labels exist: the share of
    ``loader``'s labelled images whose prediction ``max softmax(f(x)) ≥ τ`` (coverage) and the
    accuracy of ``argmax`` on those (``nan`` when none is confident). A multi-label model's are
    counted over the known (image, finding) entries: confident when ``p ≥ τ`` or ``p ≤ 1 − τ``,
    right when the pseudo-label ``1(p ≥ τ)`` equals the known state.

    The images are not augmented (the weak view without its small geometry); ``clf`` is put in
    evaluation mode and left there.
    """
    clf.eval()
    device = next(clf.parameters()).device
    sure, right = [], []
    for x, y, *_ in loader:
        if y.ndim == 2:  # finding states
            p = torch.sigmoid(clf(clf.normalize(x.to(device))).float()).cpu()
            pseudo, conf = finding_pseudo_labels(p, threshold)
            known = y >= 0
            sure.append((conf.bool() & known)[known])
            right.append(((pseudo.long() == y) & conf.bool() & known)[known])
            continue
        p = torch.softmax(clf(clf.normalize(x.to(device))).float(), 1)
        conf, pred = p.max(1)
        keep = conf >= threshold
        sure.append(keep.cpu())
        right.append((pred.cpu() == y) & keep.cpu())
    if not sure:
        return 0.0, float("nan")
    n_sure = int(torch.cat(sure).sum())
    coverage = n_sure / int(torch.cat(sure).numel())
    return coverage, (int(torch.cat(right).sum()) / n_sure if n_sure else float("nan"))


def fit_fixmatch_mode(job: FitJob) -> tuple[float, dict[str, Any]]:
    """``finetune.mode=fixmatch``: :func:`fit_fixmatch` on the labelled training images and the
    unlabelled training rows of ``job.manifest``, with the length of full fine-tuning (at most
    ``finetune.epochs`` epochs of :func:`~medcl.evaluate.fitting.epoch_samples`, early-stopped
    on validation). FixMatch does not log to the run folder (``job.out``).
    """
    m = job.manifest
    unlabelled = job.clf.images(m.subset((m.df["split"] == "train") & (m.df["label"] == "")))
    return fit_fixmatch(
        job.clf,
        job.train,
        unlabelled,  # type: ignore[arg-type]
        job.val,
        job.cfg,
        job.n_classes,
        progress=job.progress,
        pretrained=job.pretrained,
    )
