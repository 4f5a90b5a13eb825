"""The pretraining LightningModule: one class for SimCLR, MoCo, BYOL and SimSiam with SupCon
guidance.

Objective (GUIDE §1): ``L = λ1 · SupCon(labelled anchors) + λ2 · SSL(all)`` where SSL is

- ``simclr``: NT-Xent over all views; both terms come from one similarity matrix
  (:class:`SSCLLoss`);
- ``moco``: InfoNCE of queries against the EMA key encoder's keys and a FIFO queue (He et al. 2020,
  MoCo v2), symmetrised over the two views;
- ``byol``: ``2 − 2cos`` between the online predictor and the EMA target projection (Grill et al.
  2020); ``simsiam``: ``−cos`` against the stop-gradient projection (Chen & He 2021).

For MoCo/BYOL/SimSiam the SupCon term uses the online projections of the batch. Patient ids are
passed
to every contrastive term: images of one patient are never negatives of each other.

Augmentation runs batched on the training device (:class:`~medcl.transforms.MultiViewAugment`) from
a
generator seeded by ``(seed, global step, rank)``, so a resumed run draws the same views. On CUDA
the
encoder runs channels-last under bf16 autocast (precision ``auto``).
"""

from __future__ import annotations

import copy
import random
from typing import Any

import lightning as L
import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from medcl.config import Config
from medcl.losses import MoCoLoss, NegativeCosineLoss, SSCLLoss, ema_update, momentum_schedule
from medcl.models import PredictorHead, ProjectionHead, build_encoder
from medcl.train.knn import knn_predict
from medcl.train.schedule import warmup_cosine
from medcl.transforms import AugmentPreset, MultiViewAugment


def sup_start_step(cfg: Config, total_steps: int) -> int:
    """The optimiser step at which λ1 switches on: ``method.lambda_sup_start`` of the epochs,
    rounded to a whole epoch."""
    epochs = max(1, cfg.optim.epochs)
    return round(cfg.method.lambda_sup_start * epochs) * total_steps // epochs


def _no_decay(name: str, p: nn.Parameter) -> bool:
    return p.ndim <= 1 or name.endswith(".bias")


class PretrainModule(L.LightningModule):
    """Encoder + heads + objective.

    Args:
        cfg: The run config.
        preset: Augmentation preset (its batched part runs here, on the device).
        spatial_dims: 2 or 3.
        n_classes: Number of declared classes (for the kNN monitor).
    """

    def __init__(
        self, cfg: Config, preset: AugmentPreset, spatial_dims: int, n_classes: int
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_classes = n_classes
        self.spatial_dims = spatial_dims
        m, mc = cfg.model, cfg.method
        self.encoder = build_encoder(
            m.encoder, spatial_dims, 1, m.stem, cfg.data.image_size, m.width, m.pool
        )
        self.projector = ProjectionHead(self.encoder.out_dim, m.proj_hidden, m.proj_dim)
        self.augment = MultiViewAugment(preset, cfg.augment.views)
        self.preset = preset
        self.method = mc.name
        lam_ssl = mc.lambda_ssl if self.method == "simclr" else 0.0
        # simclr: both terms; other methods: this computes the SupCon term only
        self.contrastive = SSCLLoss(
            mc.temperature,
            1.0 if self.method != "simclr" else mc.lambda_sup,
            lam_ssl,
            mc.group_positives,
        )
        if self.method in ("moco", "byol"):
            self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
            self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        if self.method == "moco":
            self.moco = MoCoLoss(
                m.proj_dim, mc.queue_size, mc.temperature, group_positives=mc.group_positives
            )
        if self.method in ("byol", "simsiam"):
            self.predictor = PredictorHead(m.proj_dim, m.proj_hidden)
            self.neg_cos = NegativeCosineLoss(self.method)
        self._val_feats: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []
        self.total_steps = 1

    # ----------------------------------------------------------------- set-up
    def on_fit_start(self) -> None:
        self.total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        if self.device.type == "cuda":
            self.encoder.to(memory_format=torch.channels_last)
            if hasattr(self, "target_encoder"):
                self.target_encoder.to(memory_format=torch.channels_last)

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
        if x.device.type == "cuda" and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.encoder(x)

    def _generator(self, device: torch.device) -> torch.Generator:
        g = torch.Generator(device=device)
        seed = (
            self.cfg.trainer.seed * 1_000_003
            + int(self.global_step) * 7919
            + int(self.global_rank) * 104_729
            + self._micro_step
        ) % (2**63 - 1)
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
            self.log(f"train/{k}", val, on_step=False, on_epoch=True, batch_size=b)
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
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Augment on the device, encode all views, and compute the loss.

        Args:
            x: ``(B, 1, ...)`` images or ``(B, V, 1, ...)`` loader-side views, in cache units.
            labels: ``(B,)`` class indices, −1 for unlabelled.
            groups: ``(B,)`` patient ids.
            generator: Randomness of the augmentations.

        Returns:
            The loss and its detached parts for logging.
        """
        views = self.augment(x, generator=generator)  # (B, V, 1, ...)
        b, v = views.shape[:2]
        flat = views.flatten(0, 1)
        z = self.projector(self.embed(flat)).view(b, v, -1)
        lam_sup, lam_ssl = self.cfg.method.lambda_sup * self.sup_ramp(), self.cfg.method.lambda_ssl
        logs: dict[str, torch.Tensor] = {}
        if self.method == "simclr":
            self.contrastive.lambda_sup = lam_sup
            parts = self.contrastive.forward_parts(z, labels, groups)
            logs.update(sup=parts.sup, ssl=parts.ssl)
            return parts.loss, logs
        sup = z.new_zeros(())
        if lam_sup > 0:
            parts = self.contrastive.forward_parts(z, labels, groups)
            sup = parts.loss
            logs["sup"] = parts.sup
        ssl = self._ssl_term(flat, z, labels, groups, b, v)
        logs["ssl"] = ssl.detach()
        return lam_sup * sup + lam_ssl * ssl, logs

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

    def _ssl_term(
        self,
        flat: torch.Tensor,
        z: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor,
        b: int,
        v: int,
    ) -> torch.Tensor:
        if self.method == "moco":
            with torch.no_grad():
                k = self.target_projector(self._target_embed(flat)).view(b, v, -1)
            ssl = 0.5 * (
                self.moco(z[:, 0], k[:, 1], labels, groups)
                + self.moco(z[:, 1], k[:, 0], labels, groups)
            )
            self.moco.enqueue(k[:, 1], labels, groups)
            return ssl
        p = self.predictor(z.flatten(0, 1)).view(b, v, -1)
        if self.method == "byol":
            with torch.no_grad():
                t = self.target_projector(self._target_embed(flat)).view(b, v, -1)
        else:
            t = z.detach()
        return self.neg_cos(p[:, 0], t[:, 1], p[:, 1], t[:, 0])

    def _target_embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cuda" and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.target_encoder(x)

    _ema_at_step = 0  # the optimiser step the EMA target last followed

    def on_train_start(self) -> None:
        self._ema_at_step = int(self.global_step)  # a resumed run starts where it stopped

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # One EMA step per optimiser step: under gradient accumulation Lightning steps after every
        # `accumulate_grad_batches` batches *and* on an epoch's last, partial window.
        stepped = int(self.global_step) != self._ema_at_step
        self._ema_at_step = int(self.global_step)
        if self.method in ("moco", "byol") and stepped:
            m = momentum_schedule(
                int(self.global_step), self.total_steps, base=self.cfg.method.ema_base
            )
            ema_update(self.target_encoder, self.encoder, m)
            ema_update(self.target_projector, self.projector, m)

    # ----------------------------------------------------------------- kNN monitor
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, labels, _, _ = batch
        feats = self.embed(self.preset.normalize(x))
        self._val_feats.append(feats.float())
        self._val_labels.append(labels)

    def on_validation_epoch_end(self) -> None:
        if not self._val_feats:
            return
        q = torch.cat(self._val_feats)
        ql = torch.cat(self._val_labels)
        self._val_feats.clear()
        self._val_labels.clear()
        dm = self.trainer.datamodule
        loader = dm.bank_dataloader() if dm is not None else None
        if loader is None:
            return
        bank, bl = [], []
        for x, lab, _, _ in loader:
            x = x.to(self.device)
            bank.append(self.embed(self.preset.normalize(x)).float())
            bl.append(lab.to(self.device))
        probs = knn_predict(
            q, torch.cat(bank), torch.cat(bl), self.n_classes, k=self.cfg.finetune.knn_k
        )
        pred = probs.argmax(1).cpu().numpy()
        bacc = balanced_accuracy_score(ql.cpu().numpy(), pred)
        self.log("val/knn_bacc", float(bacc), prog_bar=True, sync_dist=False)

    # ----------------------------------------------------------------- exact resume
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # plain types and tensors only, so that weights-only loading accepts the checkpoint
        name, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint["medcl_rng"] = {
            "torch": torch.get_rng_state(),
            "numpy": [
                name,
                torch.from_numpy(keys.astype(np.int64)),
                int(pos),
                int(has_gauss),
                float(cached),
            ],
            "python": random.getstate(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("medcl_rng")
        if state:
            torch.set_rng_state(state["torch"])
            name, keys, pos, has_gauss, cached = state["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
            random.setstate(state["python"])
