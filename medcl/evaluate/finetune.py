"""Few-label fine-tuning: linear probe, kNN, and full fine-tuning (or training from scratch).

- ``linear``: frozen encoder; multinomial logistic regression (scikit-learn) on standardised
  embeddings, its inverse regularisation ``C`` chosen on the validation split's balanced accuracy;
  the fitted probe is folded into one ``nn.Linear`` (``W/σ``, ``b − W·μ/σ``).
- ``knn``: frozen encoder; cosine kNN over the labelled training embeddings.
- ``full``: encoder and a linear head trained with cross-entropy (class-weighted, or a balanced
  sampler), AdamW with a pretrained encoder at ``lr × encoder_lr_mult`` (from scratch at ``lr``),
  warm-up and cosine decay (``finetune.weight_decay``, ``finetune.warmup_fraction``), the preset's
  augmentations (one view), early stopping on validation balanced accuracy, and the best validation
  epoch's weights kept. Without a pretrained encoder this is the supervised-from-scratch baseline.
- ``fixmatch``: like ``full`` for as many optimiser steps, with FixMatch's pseudo-labelled term on
  the unlabelled training rows (:func:`medcl.evaluate.fixmatch.fit_fixmatch`).

Hyper-parameters are chosen on validation only; the test split is never read here.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler

from medcl._quiet import quiet_third_party
from medcl.config import Config, FinetuneConfig, precision_for
from medcl.data.dataset import CachedImages, manifest_geometry
from medcl.data.manifest import Manifest
from medcl.data.volumes import check_patches_fit, model_images, patch_meta, stored_shapes
from medcl.errors import ConfigError, MedclError
from medcl.evaluate.model import Classifier, KNNHead
from medcl.evaluate.ood import KEY as OOD_KEY
from medcl.evaluate.ood import describe_training
from medcl.models.encoders import EncoderSpec, build_encoder
from medcl.models.export import load_encoder
from medcl.models.knn import knn_predict
from medcl.optim.schedule import warmup_cosine
from medcl.seeding import STEP_STRIDE, mix_seed
from medcl.train.loggers import build_loggers
from medcl.train.patches import volume_meta
from medcl.transforms import MultiViewAugment, build_preset
from medcl.transforms.presets import preset_for_modality

log = logging.getLogger(__name__)


def one_device_note(cfg: Config, what: str) -> str | None:
    """The line that says ``what`` runs on one device although ``trainer`` asks for more.

    Fine-tuning fits a small labelled set (and a probe or kNN needs no trainer at all): it runs on
    one device of ``trainer.accelerator`` by design, with ``trainer.precision``; ``devices``,
    ``num_nodes``, ``strategy`` and ``sync_batchnorm`` are for pretraining.

    Returns:
        The line, or ``None`` when the config asks for one device and no strategy.
    """
    t = cfg.trainer
    if t.device_count() * t.num_nodes <= 1 and t.strategy == "auto":
        return None
    return (
        f"{what} runs on one device by design (trainer.devices={t.devices}, "
        f"trainer.num_nodes={t.num_nodes}, trainer.strategy={t.strategy} are for pretraining)"
    )


@dataclass
class FinetuneResult:
    """A fitted classifier and its validation figures."""

    model: Classifier
    val_balanced_accuracy: float
    mode: str
    details: dict[str, Any]


def _labelled(m: Manifest, split: str) -> Manifest:
    return m.subset((m.df["split"] == split) & (m.df["label"] != ""))


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


def base_meta(
    cfg: Config,
    manifest: Manifest,
    spec: EncoderSpec,
    modality: str,
    encoder_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The architecture and input convention shared by every head (``metadata.json``).

    Args:
        cfg: The run config (``augment`` gives the preset of an encoder trained here).
        manifest: The manifest (its classes).
        spec: The encoder's architecture.
        modality: The manifest's modality.
        encoder_meta: The meta of a pretrained encoder (:func:`medcl.models.export.load_encoder`),
            whose preset and window are kept; ``None`` for an encoder trained from scratch.

    Returns:
        The metadata: :meth:`EncoderSpec.to_meta`, classes, modality, preset, window, intensity
        and pretraining.
    """
    preset_name = (encoder_meta or {}).get("preset") or (
        cfg.augment.preset if cfg.augment.preset != "auto" else preset_for_modality(modality)
    )
    preset = build_preset(
        preset_name, cfg.augment.options if encoder_meta is None else {}, dims=spec.spatial_dims
    )
    return {
        "classes": list(manifest.classes),
        **spec.to_meta(),
        "modality": modality,
        "preset": preset.name,
        "window": list(preset.window),
        "intensity": "CT: Hounsfield units windowed to [0, 1] (level/width in 'window'); "
        "other modalities: 0.5/99.5 percentiles scaled to [0, 1]",
        "pretraining": None
        if encoder_meta is None
        else {k: encoder_meta.get(k) for k in ("method", "lambda_sup", "lambda_ssl")},
    }


def _datasets(m: Manifest, meta: dict[str, Any]) -> tuple[CachedImages, CachedImages]:
    train, val = _labelled(m, "train"), _labelled(m, "val")
    if len(train) == 0:
        raise MedclError(
            "no labelled training rows: fine-tuning needs labels (check --label-fraction)"
        )
    if len(val) == 0:
        raise MedclError("no labelled validation rows: model selection needs a val split")
    # a patch model reads stored volumes (its embeddings are grid means, medcl.evaluate.model)
    return model_images(train, meta), model_images(val, meta)  # type: ignore[return-value]


def fit_linear(
    clf: Classifier,
    train: CachedImages,
    val: CachedImages,
    balance: str,
    n_classes: int,
    seed: int = 0,
) -> tuple[nn.Linear, float, dict[str, Any]]:
    """Logistic-regression probe on frozen features, ``C`` picked on val balanced accuracy."""
    ftr = clf.embed(train.images).numpy().astype(np.float64)
    fva = clf.embed(val.images).numpy().astype(np.float64)
    ytr, yva = train.labels.numpy(), val.labels.numpy()
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
    ztr, zva = (ftr - mu) / sd, (fva - mu) / sd
    best: tuple[float, float, Any] = (-1.0, 0.0, None)
    for c in (0.001, 0.01, 0.1, 1.0):
        lr = LogisticRegression(
            C=c,
            max_iter=2000,
            class_weight="balanced" if balance != "none" else None,
            random_state=seed,
        )
        lr.fit(ztr, ytr)
        score = balanced_accuracy_score(yva, lr.predict(zva))
        if score > best[0]:
            best = (score, c, lr)
    score, c, lr = best
    w = np.zeros((n_classes, ftr.shape[1]))
    b = np.full(n_classes, -30.0)  # classes unseen in training get ~zero probability
    coef, intercept = lr.coef_, lr.intercept_
    if len(lr.classes_) == 2:  # binary: sklearn keeps one row for the positive class
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    for row, cls in enumerate(lr.classes_):
        w[cls] = coef[row] / sd
        b[cls] = intercept[row] - (coef[row] * mu / sd).sum()
    head = nn.Linear(ftr.shape[1], n_classes)
    with torch.no_grad():
        head.weight.copy_(torch.tensor(w, dtype=torch.float32))
        head.bias.copy_(torch.tensor(b, dtype=torch.float32))
    return head, float(score), {"C": c}


def fit_knn(
    clf: Classifier, train: CachedImages, val: CachedImages, k: int, n_classes: int
) -> tuple[KNNHead, float, dict[str, Any]]:
    """kNN head over the training embeddings; reports val balanced accuracy."""
    bank = clf.embed(train.images)
    head = KNNHead(bank, train.labels, n_classes, k)
    pred = knn_predict(clf.embed(val.images), bank, train.labels, n_classes, k).argmax(1)
    return head, float(balanced_accuracy_score(val.labels.numpy(), pred.numpy())), {"k": k}


class BestOnValidation(L.LightningModule):
    """A classifier ``self.clf`` trained with its weights at the best validation balanced accuracy
    kept in ``best_state`` (with ``best_score`` and the optimiser step ``best_step``).

    The optimiser is AdamW (``finetune.weight_decay``) with the encoder at
    ``lr × encoder_lr_mult`` when it is pretrained (``lr`` when it starts from nothing) and the head
    at ``lr``; the schedule a linear warm-up over ``max(1, floor(T × finetune.warmup_fraction))``
    steps then cosine decay over the ``T =`` :meth:`total_steps`.
    """

    clf: Classifier
    cfg: Config
    pretrained: bool

    def __init__(self) -> None:
        super().__init__()
        self.best_score = -1.0
        self.best_step = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self._probs: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y, _, _ = batch
        self._probs.append(F.softmax(self.clf(self.clf.normalize(x)).float(), 1))
        self._labels.append(y)

    def on_validation_epoch_end(self) -> None:
        if not self._probs:
            return
        pred = torch.cat(self._probs).argmax(1).cpu().numpy()
        y = torch.cat(self._labels).cpu().numpy()
        self._probs.clear()
        self._labels.clear()
        score = float(balanced_accuracy_score(y, pred))
        self.log("val/bacc", score, prog_bar=True)
        if score > self.best_score:
            self.best_score = score
            self.best_step = int(self.global_step)
            self.best_state = copy.deepcopy(self.clf.state_dict())

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


class FinetuneModule(BestOnValidation):
    """Encoder + linear head trained with (weighted) cross-entropy; keeps the best val weights."""

    def __init__(
        self,
        clf: Classifier,
        cfg: Config,
        weights: torch.Tensor | None,
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        self.clf = clf
        self.cfg = cfg
        self.pretrained = pretrained
        preset = build_preset(
            clf.meta["preset"], cfg.augment.options, dims=clf.meta["spatial_dims"]
        )
        self.augment = MultiViewAugment(preset, 1)
        self.register_buffer(
            "class_w", weights if weights is not None else torch.ones(len(clf.meta["classes"]))
        )
        self.use_weights = weights is not None

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, _, _ = batch
        g = torch.Generator(device=x.device)
        g.manual_seed(mix_seed((self.cfg.trainer.seed, STEP_STRIDE), (int(self.global_step), 1)))
        xa = self.augment(x, generator=g)[:, 0]
        logits = self.clf(xa)
        loss = F.cross_entropy(logits.float(), y, weight=self.class_w if self.use_weights else None)
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss


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


def fit_full(
    clf: Classifier,
    train: CachedImages,
    val: CachedImages,
    cfg: Config,
    n_classes: int,
    progress: bool = False,
    out: str | Path | None = None,
) -> tuple[float, dict[str, Any]]:
    """Train encoder + head in place; the best validation epoch's weights are loaded back.

    With a run folder ``out`` the losses and validation scores are logged (``trainer.logger``).
    """
    ft = cfg.finetune
    labels = train.labels.numpy()
    per_epoch = epoch_samples(ft, len(train))
    gen = torch.Generator().manual_seed(cfg.trainer.seed)
    if ft.balance == "sampler":
        w = class_weights(labels, n_classes).numpy()[labels]
        sampler: Any = WeightedRandomSampler(w.tolist(), per_epoch, replacement=True, generator=gen)
    else:
        sampler = RandomSampler(train, replacement=True, num_samples=per_epoch, generator=gen)
    batch = min(ft.batch_size, per_epoch)
    loader = DataLoader(train, batch_size=batch, sampler=sampler, drop_last=True)
    val_loader = DataLoader(val, batch_size=256)
    weights = class_weights(labels, n_classes) if ft.balance == "weights" else None
    module = FinetuneModule(clf, cfg, weights, pretrained=clf.meta.get("pretraining") is not None)
    trainer = classifier_trainer(
        cfg,
        progress,
        out,
        max_epochs=ft.epochs,
        callbacks=[EarlyStopping(monitor="val/bacc", mode="max", patience=ft.patience)],
    )
    trainer.fit(module, loader, val_loader)
    if module.best_state is not None:
        clf.load_state_dict(module.best_state)
    clf.cpu().eval()
    return module.best_score, {
        "epochs_run": int(trainer.current_epoch),
        "steps": int(trainer.global_step),
    }


def finetune(
    cfg: Config,
    manifest: Manifest,
    pretrained: str | Path | None = None,
    progress: bool = False,
    out: str | Path | None = None,
) -> FinetuneResult:
    """Fit a classifier on the labelled training rows, selecting on validation.

    Args:
        cfg: Run config (``finetune``, ``data``, ``model``, ``augment``, ``trainer``).
        manifest: A split manifest.
        pretrained: A pretraining run folder (or its ``encoder.pt``); ``None`` = from scratch
            (``linear``/``knn`` then probe a random encoder, a useful lower bound).
        progress: Show Lightning's progress bar.
        out: The run folder: full fine-tuning then logs to ``out/logs/finetune``
            (``trainer.logger``; :mod:`medcl.train.loggers`). ``None``: no logs (as inside
            ``medcl efficiency``, where hundreds of short fits would each leave a log).
    """
    cfg.trainer.check_hardware()  # before any image is read
    note = one_device_note(cfg, "fine-tuning")
    if note is not None:
        log.warning(note)
    torch.manual_seed(cfg.trainer.seed)
    np.random.seed(cfg.trainer.seed % (2**32))
    if cfg.trainer.threads > 0:
        torch.set_num_threads(cfg.trainer.threads)
    dims, modality = manifest_geometry(manifest)
    enc_meta = None
    if pretrained is not None:
        encoder, enc_meta = load_encoder(pretrained)
        spec = EncoderSpec.from_meta(enc_meta)
        if spec.spatial_dims != dims:
            raise MedclError(
                f"{pretrained}: encoder is {spec.spatial_dims}-D, the manifest is {dims}-D"
            )
    volume = None if enc_meta is None else patch_meta(enc_meta)
    if pretrained is None:
        spec = EncoderSpec.from_config(cfg, dims)
        if cfg.data.volume_mode == "patches":  # a random encoder, probed on grid patches
            d = cfg.data
            check_patches_fit(manifest, d.patch_size)
            spec = dataclasses.replace(spec, image_size=d.patch_size)
            shapes = stored_shapes(manifest.subset(manifest.df["split"] == "train"))
            volume = volume_meta(d.patch_size, d.patch_overlap, d.patches_per_volume, shapes)
        encoder = build_encoder(spec)
    meta = base_meta(cfg, manifest, spec, modality, enc_meta)
    if volume is not None:
        if cfg.finetune.mode not in ("linear", "knn"):
            raise ConfigError(
                f"finetune.mode={cfg.finetune.mode}: the encoder reads 3-D patches; use "
                "finetune.mode=linear or knn (probes on grid-averaged patch embeddings)"
            )
        meta["volume"] = volume
    n_classes = len(manifest.classes)
    train, val = _datasets(manifest, meta)
    clf = Classifier(encoder, nn.Linear(encoder.out_dim, n_classes), meta)
    mode = cfg.finetune.mode
    if mode == "linear":
        head, score, details = fit_linear(
            clf, train, val, cfg.finetune.balance, n_classes, cfg.trainer.seed
        )
        clf.head = head
    elif mode == "knn":
        head, score, details = fit_knn(clf, train, val, cfg.finetune.knn_k, n_classes)
        clf.head = head
    elif mode == "fixmatch":
        from medcl.evaluate.fixmatch import fit_fixmatch

        pool = manifest.subset((manifest.df["split"] == "train") & (manifest.df["label"] == ""))
        unlabelled = CachedImages(pool, meta["image_size"], dims)
        ft = cfg.finetune
        steps = ft.epochs * (epoch_samples(ft, len(train)) // ft.batch_size)
        score, details = fit_fixmatch(
            clf,
            train,
            unlabelled,
            val,
            cfg,
            n_classes,
            steps,
            mu=ft.fixmatch_mu,
            threshold=ft.fixmatch_threshold,
            lambda_u=ft.fixmatch_lambda_u,
            progress=progress,
            pretrained=enc_meta is not None,
        )
    else:
        score, details = fit_full(clf, train, val, cfg, n_classes, progress, out)
    labels = train.labels.numpy()
    clf.meta.update(
        {
            "head": mode if mode in ("linear", "knn") else f"linear ({mode} fine-tuning)",
            "finetune": {
                "mode": mode,
                "val_balanced_accuracy": score,
                **details,
                "train_labelled_images": int(len(train)),
                "train_labelled_patients": int(len(set(train.groups.tolist()))),
                "class_counts": {
                    c: int((labels == i).sum()) for i, c in enumerate(manifest.classes)
                },
            },
        }
    )
    # what the model was trained for, checked by `medcl predict` (medcl.evaluate.ood)
    clf.meta[OOD_KEY], clf.ood_bank = describe_training(clf, manifest, cfg.trainer.seed)
    if not math.isfinite(score):
        score = 0.0
    return FinetuneResult(clf, score, mode, details)
