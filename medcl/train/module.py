"""The pretraining LightningModule: the encoder, the augmentation and one objective.

Objective (docs/objectives.md): ``L = λ1 · SupCon(labelled anchors) + λ2 · SSL(all)``, an
:class:`~medcl.train.objectives.Objective` chosen by ``method.name`` from
:data:`~medcl.train.objectives.OBJECTIVES` (SimCLR, MoCo, BYOL, SimSiam, DINO, VICReg). The
objective owns its heads, target networks, queue and EMA, and weights its terms; this module only
augments, encodes, hands the objective λ1 after its ramp, calls the objective's EMA hook once per
optimiser step, and monitors a kNN classifier (``val/knn_bacc``; for multi-label findings a
per-finding kNN AUROC, ``val/knn_macro_auroc``, :mod:`medcl.train.monitor`). Patient ids are
passed to every contrastive term: images of one patient are never negatives of each other. With
``method.pseudo.enabled`` an online linear head (:class:`~medcl.train.pseudo.PseudoLabeller`) also
pseudo-labels the confident unlabelled images of each batch for the SupCon term, and its balanced
accuracy on the validation images is monitored beside the kNN classifier's.

Augmentation runs batched on the training device (:class:`~medcl.transforms.MultiViewAugment`) from
a generator seeded by ``(seed, global step, rank)``, so a resumed run draws the same views (the
global generators travel in the checkpoint: :class:`~medcl.train.callbacks.RNGStateCheckpoint`). On
CUDA a 2-D encoder runs channels-last under bf16 autocast (precision ``auto``); a 3-D one stays
contiguous (:func:`~medcl.train.objectives.channels_last_applies`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import lightning as L
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from medcl.config import Config
from medcl.models import EncoderSpec, build_encoder
from medcl.models.init import load_init
from medcl.models.knn import knn_predict
from medcl.optim.schedule import warmup_cosine
from medcl.seeding import RANK_STRIDE, SEED_STRIDE, STEP_STRIDE, mix_seed
from medcl.train.migrate import migrate_state_dict
from medcl.train.monitor import knn_finding_aurocs, macro_auroc
from medcl.train.objectives import (
    ObjectiveOutput,
    ViewBatch,
    build_objective,
    channels_last,
    to_channels_last,
)
from medcl.train.pseudo import PseudoLabeller, pseudo_share
from medcl.transforms import AugmentPreset, MultiViewAugment
from medcl.transforms.patches import aggregate_patches

log = logging.getLogger(__name__)


def sup_start_step(cfg: Config, total_steps: int) -> int:
    """The optimiser step at which λ1 switches on: ``method.lambda_sup_start`` of the epochs,
    rounded to a whole epoch."""
    epochs = max(1, cfg.optim.epochs)
    return round(cfg.method.lambda_sup_start * epochs) * total_steps // epochs


def _no_decay(name: str, p: nn.Parameter) -> bool:
    return p.ndim <= 1 or name.endswith(".bias")


class PretrainModule(L.LightningModule):
    """Encoder + augmentation + objective.

    Args:
        cfg: The run config.
        preset: Augmentation preset (its batched part runs here, on the device).
        spatial_dims: 2 or 3.
        n_classes: Number of declared classes (for the kNN monitor).

    Attributes:
        encoder: The encoder ``f`` (what :mod:`medcl.models.export` saves).
        encoder_spec: Its architecture (``model`` section, ``data.image_size``, the dimensions).
        augment: The batched multi-view augmentation.
        method: The objective of ``method.name`` with its heads, targets and queue.
        pseudo: The pseudo-labelling head (``method.pseudo.enabled``), else ``None``; built after
            the other networks and without drawing from the global random stream, so that they
            start from the same weights and see the same views either way.

    Raises:
        ConfigError: If ``method.name`` names no registered objective.
    """

    def __init__(
        self, cfg: Config, preset: AugmentPreset, spatial_dims: int, n_classes: int
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_classes = n_classes
        self.spatial_dims = spatial_dims
        self.encoder_spec = EncoderSpec.from_config(cfg, spatial_dims)
        self.patches = cfg.data.volume_mode == "patches" and spatial_dims == 3
        if self.patches:  # the encoder sees patches (data.patch_size), not resized volumes
            self.encoder_spec = dataclasses.replace(
                self.encoder_spec, image_size=cfg.data.patch_size
            )
        self.encoder = build_encoder(self.encoder_spec)
        if cfg.model.init:  # before the objective copies the encoder into its targets
            load_init(self.encoder, cfg.model.init)
        self.augment = MultiViewAugment(preset, cfg.augment.views)
        self.preset = preset
        self.method = build_objective(cfg, self.encoder)
        self.pseudo: PseudoLabeller | None = None
        if cfg.method.pseudo.enabled:
            # initialised without moving the global random stream: what is drawn after (the
            # loaders' seeds, hence the views) is what the same run without pseudo-labels draws
            with torch.random.fork_rng(devices=[]):
                self.pseudo = PseudoLabeller(
                    int(self.encoder.out_dim), n_classes, cfg.method.pseudo
                )
        self._val_feats: list[torch.Tensor] = []
        self._val_pseudo: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []
        self.total_steps = 1

    # ----------------------------------------------------------------- set-up
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Rename the keys of a checkpoint written before the objective classes (resume or warm
        start; :mod:`medcl.train.migrate`), before Lightning loads its state dict."""
        if "state_dict" in checkpoint:
            checkpoint["state_dict"] = migrate_state_dict(checkpoint["state_dict"])

    def on_fit_start(self) -> None:
        self.total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        if self.pseudo is not None:  # the head's class weights and per-class caps
            train_set = getattr(self.trainer.datamodule, "train_set", None)
            if train_set is not None:
                self.pseudo.set_class_counts(train_set.labels.to(self.device))
        for net in (self.encoder, self.method):  # the method: its target encoders, if any
            to_channels_last(net, self.device, self.spatial_dims)

    def configure_optimizers(self) -> dict[str, Any]:
        o = self.cfg.optim
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if _no_decay(name, p) else decay).append(p)
        opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": o.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=o.lr,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warm = int(round(o.warmup_fraction * total))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: warmup_cosine(step, total, warm, final_ratio=0.01)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ----------------------------------------------------------------- forward
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder features of already-normalised images ``(B, 1, ...)``."""
        return self.encoder(channels_last(x))

    def embed_eval(self, x: torch.Tensor) -> torch.Tensor:
        """Features of images in cache units for the monitor: normalised, then encoded whole, or
        (patch mode) averaged over the grid patches of each volume."""
        x = self.preset.normalize(x)
        if not self.patches:
            return self.embed(x)
        d = self.cfg.data
        return torch.stack(
            [aggregate_patches(self.embed, v, d.patch_size, d.patch_overlap) for v in x]
        )

    def _generator(self, device: torch.device) -> torch.Generator:
        g = torch.Generator(device=device)
        seed = mix_seed(
            (self.cfg.trainer.seed, SEED_STRIDE),
            (int(self.global_step), STEP_STRIDE),
            (int(self.global_rank), RANK_STRIDE),
            (self._micro_step, 1),
        )
        g.manual_seed(seed)
        return g

    _micro_step = 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, labels, groups, _ = batch
        self._micro_step = batch_idx % max(1, self.cfg.trainer.accumulate_grad_batches)
        loss, logs = self.objective(x, labels, groups, self._generator(x.device))
        b = x.shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=b)
        for k, val in logs.items():
            per_step = k.startswith("pseudo_")  # the pseudo-labels' figures, logged every step
            self.log(f"train/{k}", val, on_step=per_step, on_epoch=not per_step, batch_size=b)
        self.log(
            "train/lr",
            self.trainer.optimizers[0].param_groups[0]["lr"],
            on_step=True,
            on_epoch=False,
            batch_size=b,
        )
        return loss

    def objective(
        self,
        x: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> ObjectiveOutput:
        """Augment on the device, encode all views, and compute the loss.

        Args:
            x: ``(B, 1, ...)`` images or ``(B, V, 1, ...)`` loader-side views, in cache units.
            labels: ``(B,)`` class indices, −1 for unlabelled; or ``(B, K)`` finding states
                (multi-label SupCon, :mod:`medcl.train.objectives.supcon`).
            groups: ``(B,)`` patient ids.
            generator: Randomness of the augmentations.

        Returns:
            The loss and its detached parts for logging; with pseudo-labels, the loss adds
            ``method.pseudo.head_weight`` × the head's cross-entropy, and the logs its figures
            (:class:`~medcl.train.pseudo.PseudoStep`).
        """
        views = self.augment(x, generator=generator)  # (B, V, 1, ...)
        b, v = views.shape[:2]
        flat = views.flatten(0, 1)
        batch = ViewBatch(flat, self.embed(flat), labels, groups, b, v)
        mc = self.cfg.method
        if self.pseudo is None:
            return self.method(batch, mc.lambda_sup * self.sup_ramp(), mc.lambda_ssl)
        step = self.pseudo(batch.features, labels, groups, v, self.pseudo_ramp())
        batch = dataclasses.replace(batch, sup_labels=step.labels)
        out = self.method(batch, mc.lambda_sup * self.sup_ramp(), mc.lambda_ssl)
        loss = out.loss + mc.pseudo.head_weight * step.head_loss
        return ObjectiveOutput(loss, {**out.logs, **step.logs})

    def sup_ramp(self) -> float:
        """Factor on λ1 at this optimiser step ``k`` of ``T``.

        0 for the first ``method.lambda_sup_start = s`` of the steps (self-supervision alone,
        rounded to whole epochs so that such a prefix can be shared with a SimCLR run), then
        ``min(1, (k − sT) / (wT))`` for ``method.lambda_sup_warmup = w`` (1 at once when w = 0).
        Starting the labelled term once self-supervision has shaped the features keeps a few
        labelled images from being memorised in the first steps.
        """
        mc = self.cfg.method
        if mc.lambda_sup_start <= 0 and mc.lambda_sup_warmup <= 0:
            return 1.0
        k = float(self.global_step)
        start = sup_start_step(self.cfg, self.total_steps)
        if k < start:
            return 0.0
        if mc.lambda_sup_warmup <= 0:
            return 1.0
        return min(1.0, (k - start) / max(1.0, mc.lambda_sup_warmup * self.total_steps))

    def pseudo_ramp(self) -> float:
        """The share of the confident unlabelled images that may be pseudo-labelled at this
        optimiser step: :func:`~medcl.train.pseudo.pseudo_share` of ``method.pseudo.start`` and
        ``method.pseudo.ramp``."""
        p = self.cfg.method.pseudo
        return pseudo_share(int(self.global_step), self.total_steps, p.start, p.ramp)

    _ema_at_step = 0  # the optimiser step the EMA target last followed

    def on_train_start(self) -> None:
        self._ema_at_step = int(self.global_step)  # a resumed run starts where it stopped

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # One EMA step per optimiser step: under gradient accumulation Lightning steps after every
        # `accumulate_grad_batches` batches *and* on an epoch's last, partial window.
        stepped = int(self.global_step) != self._ema_at_step
        self._ema_at_step = int(self.global_step)
        if stepped:
            self.method.on_optimizer_step(self.encoder, int(self.global_step), self.total_steps)

    # ----------------------------------------------------------------- kNN monitor
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, labels, _, _ = batch
        feats = self.embed_eval(x)
        self._val_feats.append(feats.float())
        self._val_labels.append(labels)
        if self.pseudo is not None:
            self._val_pseudo.append(self.pseudo.logits(feats).argmax(dim=1))

    def on_validation_epoch_end(self) -> None:
        if not self._val_feats:
            return
        q = torch.cat(self._val_feats)
        ql = torch.cat(self._val_labels)
        self._val_feats.clear()
        self._val_labels.clear()
        if self._val_pseudo:  # the pseudo-labelling head on images whose labels we have
            guess = torch.cat(self._val_pseudo).cpu().numpy()
            self._val_pseudo.clear()
            bacc = balanced_accuracy_score(ql.cpu().numpy(), guess)
            self.log("val/pseudo_head_bacc", float(bacc), sync_dist=False)
        dm = self.trainer.datamodule
        loader = dm.bank_dataloader() if dm is not None else None
        if loader is None:
            return
        bank, bl = [], []
        for x, lab, _, _ in loader:
            x = x.to(self.device)
            bank.append(self.embed_eval(x).float())
            bl.append(lab.to(self.device))
        if ql.ndim == 2:  # multi-label findings: a per-finding kNN AUROC, macro-averaged
            self._log_finding_monitor(q, ql, torch.cat(bank), torch.cat(bl))
            return
        probs = knn_predict(
            q, torch.cat(bank), torch.cat(bl), self.n_classes, k=self.cfg.finetune.knn_k
        )
        pred = probs.argmax(1).cpu().numpy()
        bacc = balanced_accuracy_score(ql.cpu().numpy(), pred)
        self.log("val/knn_bacc", float(bacc), prog_bar=True, sync_dist=False)

    def _log_finding_monitor(
        self, q: torch.Tensor, ql: torch.Tensor, bank: torch.Tensor, bl: torch.Tensor
    ) -> None:
        """Log ``val/knn_macro_auroc`` (:mod:`medcl.train.monitor`), or say once why not."""
        aurocs = knn_finding_aurocs(q, ql.to(q.device), bank, bl, k=self.cfg.finetune.knn_k)
        macro = macro_auroc(aurocs)
        if math.isnan(macro):
            if not self._said_no_monitor:
                log.info(
                    "kNN monitor: no finding has both states among the known validation "
                    "images; val/knn_macro_auroc is not logged"
                )
                self._said_no_monitor = True
            return
        self.log("val/knn_macro_auroc", macro, prog_bar=True, sync_dist=False)

    _said_no_monitor = False
