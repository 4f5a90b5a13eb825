"""What the fine-tuning modes share; most of it for those that train the network (``full``,
``fixmatch``).

- :func:`epoch_samples`: the size of an epoch (``finetune.epoch_steps`` batches, or one pass over
  the labelled images, at least 8 batches);
- :func:`class_weights`: ``w_c = N / (C · n_c)`` for the weighted cross-entropy and the balanced
  sampler, and :func:`loss_weights`, the weights a mode's supervised term uses
  (``finetune.balance = weights``);
- :class:`BestOnValidation`: the Lightning module base: the classifier, its class-weight buffer,
  AdamW with a warm-up then cosine schedule, one augmentation generator per optimiser step,
  validation balanced accuracy with the best weights kept and loaded back
  (:meth:`~BestOnValidation.keep_best`);
- :func:`validation_score`: what model selection maximises.

Multi-label (findings, ``(N, K)`` states with −1 unknown): the supervised term is the masked
binary cross-entropy with per-finding positive weights (:mod:`medcl.losses.findings`;
``finetune.balance`` ``weights`` or ``sampler`` use them, ``none`` does not; there are no classes
to sample by, so ``sampler`` draws uniformly), and model selection maximises the validation macro
AUROC (the mean over the findings whose AUROC is defined, :mod:`medcl.evaluate.multilabel`),
logged as ``val/macro_auroc``.
- :func:`classifier_trainer`: a quiet one-device Lightning trainer;
- :class:`FitJob` and :data:`FitMode`: one fit's inputs and the one signature every mode has.

The modes are :func:`~medcl.evaluate.finetune.fit_linear`,
:func:`~medcl.evaluate.finetune.fit_knn`, :func:`~medcl.evaluate.finetune.fit_full` and
:func:`~medcl.evaluate.fixmatch.fit_fixmatch_mode`; :data:`medcl.evaluate.finetune.MODES` maps
``finetune.mode`` to them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score
from torch.utils.data import RandomSampler, WeightedRandomSampler

from medcl._quiet import quiet_third_party
from medcl.config import Config, FinetuneConfig, precision_for
from medcl.data.dataset import CachedImages
from medcl.data.manifest import Manifest
from medcl.evaluate.classifier import Classifier
from medcl.evaluate.metrics import nan_mean
from medcl.evaluate.multilabel import FindingAuroc
from medcl.losses.findings import masked_bce, pos_weights
from medcl.optim.schedule import warmup_cosine
from medcl.seeding import STEP_STRIDE, mix_seed
from medcl.train.loggers import build_loggers


@dataclass
class FitJob:
    """One fit of a classifier: what it fits on and how.

    Attributes:
        clf: The classifier, fitted in place (a probe sets ``clf.head``).
        cfg: The run config.
        manifest: The whole split manifest (FixMatch also reads its unlabelled training rows).
        train: The labelled training images (a patch model: stored volumes).
        val: The labelled validation images, for model selection.
        pretrained: Whether ``clf.encoder`` is pretrained.
        progress: Show Lightning's progress bar.
        out: A run folder to log to, or ``None``.
        teacher: A fitted classifier a mode may learn from (self-training's teacher), or
            ``None``.
    """

    clf: Classifier
    cfg: Config
    manifest: Manifest
    train: CachedImages
    val: CachedImages
    pretrained: bool
    progress: bool = False
    out: str | Path | None = None
    teacher: Classifier | None = None

    @property
    def n_classes(self) -> int:
        """Number of classes (the classifier's)."""
        return len(self.clf.description.classes)


FitMode = Callable[[FitJob], tuple[float, dict[str, Any]]]
"""A fine-tuning mode: ``fit(job) → (validation score, the mode's details)``; the score is
balanced accuracy, or for a multi-label task macro AUROC (:func:`validation_score`)."""


def macro_auroc(states: np.ndarray, scores: np.ndarray) -> float:
    """The macro AUROC of ``(N, K)`` finding states (−1 unknown, ignored) and scores: the mean of
    the per-finding AUROCs that are defined, NaN when none is."""
    y = np.asarray(states, dtype=np.int64)
    if y.shape[0] == 0:
        return float("nan")
    per = FindingAuroc(y, np.asarray(scores, dtype=np.float64))(np.ones((1, y.shape[0])))
    return float(nan_mean(per)[0])


def validation_score(labels: np.ndarray, proba: np.ndarray) -> float:
    """What model selection maximises: balanced accuracy of ``argmax proba`` for ``(N,)`` class
    indices, macro AUROC (:func:`macro_auroc`) for ``(N, K)`` finding states."""
    if np.ndim(labels) == 2:
        return macro_auroc(labels, proba)
    return float(balanced_accuracy_score(labels, np.asarray(proba).argmax(1)))


def epoch_samples(ft: FinetuneConfig, n_labelled: int) -> int:
    """Samples in one fine-tuning epoch: ``finetune.epoch_steps`` batches, or (0) one pass over the
    labelled images, at least 8 batches."""
    if ft.epoch_steps > 0:
        return ft.epoch_steps * ft.batch_size
    return max(n_labelled, 8 * ft.batch_size)


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """``w_c = N / (C · n_c)`` over the classes present (0 for absent classes)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(w, dtype=torch.float32)


def loss_weights(cfg: Config, labels: np.ndarray, n_classes: int) -> torch.Tensor | None:
    """The supervised cross-entropy's class weights: :func:`class_weights` of the labelled
    training ``labels`` when ``finetune.balance`` is ``weights``, else ``None`` (unweighted).

    For ``(N, K)`` finding states: the per-finding positive weights
    (:func:`medcl.losses.findings.pos_weights`) unless ``finetune.balance`` is ``none``."""
    if np.ndim(labels) == 2:
        return pos_weights(labels) if cfg.finetune.balance != "none" else None
    return class_weights(labels, n_classes) if cfg.finetune.balance == "weights" else None


def training_sampler(
    cfg: Config, labels: np.ndarray, n_classes: int, samples: int, generator: torch.Generator
) -> Any:
    """The labelled training images' sampler of an epoch of ``samples`` draws with replacement:
    class-balanced (:func:`class_weights`) for ``finetune.balance = sampler`` and class labels,
    else uniform (findings have no classes to balance by)."""
    if cfg.finetune.balance == "sampler" and np.ndim(labels) == 1:
        w = class_weights(labels, n_classes).numpy()[labels]
        return WeightedRandomSampler(w.tolist(), samples, replacement=True, generator=generator)
    return RandomSampler(range(len(labels)), True, samples, generator=generator)


class BestOnValidation(L.LightningModule):
    """A classifier ``self.clf`` trained with its weights at the best validation balanced accuracy
    (multi-label: macro AUROC, :func:`validation_score`) kept in ``best_state`` (with
    ``best_score`` and the optimiser step ``best_step``); the logged score is :attr:`monitor`.

    The optimiser is AdamW (``finetune.weight_decay``) with the encoder at
    ``lr × encoder_lr_mult`` when it is pretrained (``lr`` when it starts from nothing) and the head
    at ``lr``; the schedule a linear warm-up over ``max(1, floor(T × finetune.warmup_fraction))``
    steps then cosine decay over the ``T =`` :meth:`total_steps`.

    Args:
        clf: The classifier (trained in place).
        cfg: Run config (``finetune``, ``trainer.seed``).
        weights: Class weights (multi-label: positive weights per finding) of the supervised
            term (:func:`loss_weights`), or ``None``.
        pretrained: Whether ``clf.encoder`` is pretrained (then it gets ``lr × encoder_lr_mult``).
    """

    def __init__(
        self, clf: Classifier, cfg: Config, weights: torch.Tensor | None, pretrained: bool
    ) -> None:
        super().__init__()
        self.clf, self.cfg, self.pretrained = clf, cfg, pretrained
        n_classes = len(clf.description.classes)
        self.register_buffer("class_w", weights if weights is not None else torch.ones(n_classes))
        self.use_weights = weights is not None
        self.best_score, self.best_step = -1.0, -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self._probs: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self.monitor = "val/macro_auroc" if clf.multilabel else "val/bacc"

    def supervised_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The (weighted) cross-entropy of class indices ``y``, or for finding states the masked
        binary cross-entropy with positive weights (:func:`medcl.losses.findings.masked_bce`)."""
        if self.clf.multilabel:
            return masked_bce(logits.float(), y, self.loss_weight)
        return F.cross_entropy(logits.float(), y, weight=self.loss_weight)

    @property
    def loss_weight(self) -> torch.Tensor | None:
        """The class weights of the supervised cross-entropy, ``None`` for unweighted."""
        return self.class_w if self.use_weights else None

    def step_generator(self, device: torch.device) -> torch.Generator:
        """The generator of this optimiser step's augmentations, seeded by ``trainer.seed`` and
        the step (:func:`medcl.seeding.mix_seed`): a step draws the same views whatever ran
        before it."""
        g = torch.Generator(device=device)
        g.manual_seed(mix_seed((self.cfg.trainer.seed, STEP_STRIDE), (int(self.global_step), 1)))
        return g

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y, _, _ = batch
        self._probs.append(self.clf.probabilities(self.clf(self.clf.normalize(x)).float()))
        self._labels.append(y)

    def on_validation_epoch_end(self) -> None:
        if not self._probs:
            return
        proba = torch.cat(self._probs).cpu().numpy()
        y = torch.cat(self._labels).cpu().numpy()
        self._probs.clear()
        self._labels.clear()
        score = validation_score(y, proba)
        self.log(self.monitor, score, prog_bar=True)
        if score > self.best_score:
            self.best_score = score
            self.best_step = int(self.global_step)
            self.best_state = copy.deepcopy(self.clf.state_dict())

    def keep_best(self) -> None:
        """Load the best validation weights back into ``clf`` (if any validation ran) and leave
        it on the CPU in eval mode."""
        if self.best_state is not None:
            self.clf.load_state_dict(self.best_state)
        self.clf.cpu().eval()

    def total_steps(self) -> int:
        """Optimiser steps of the run (for the schedule)."""
        return max(1, int(self.trainer.estimated_stepping_batches))

    def configure_optimizers(self) -> dict[str, Any]:
        ft = self.cfg.finetune
        opt = torch.optim.AdamW(
            [
                {
                    "params": self.clf.encoder.parameters(),
                    # a pretrained encoder moves slowly; one that starts from nothing at full speed
                    "lr": ft.lr * (ft.encoder_lr_mult if self.pretrained else 1.0),
                },
                {"params": self.clf.head.parameters(), "lr": ft.lr},
            ],
            weight_decay=ft.weight_decay,
        )
        total = self.total_steps()
        warm = max(1, math.floor(total * ft.warmup_fraction))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def classifier_trainer(
    cfg: Config, progress: bool, out: str | Path | None = None, **kwargs: Any
) -> L.Trainer:
    """A quiet one-device Lightning trainer for fine-tuning (no checkpoints); with a run folder
    ``out``, the ``trainer.logger`` loggers write to ``out/logs/finetune`` (else none)."""
    quiet_third_party()
    loggers = build_loggers(cfg, out, "finetune") if out is not None else []
    return L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=1,
        precision=precision_for(cfg),
        logger=loggers or False,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )
