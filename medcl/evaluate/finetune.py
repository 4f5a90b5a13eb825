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
- ``fixmatch``: like ``full`` (the same epochs, early stopping and best weights), with FixMatch's
  pseudo-labelled term on the unlabelled training rows
  (:func:`medcl.evaluate.fixmatch.fit_fixmatch`).
- ``selftrain``: a ``full`` teacher pseudo-labels the unlabelled training rows (its predictions
  pooled over each patient's images, kept where confident), then a ``full`` student that starts
  where the teacher did is fitted on labelled ∪ pseudo-labelled rows
  (:mod:`medcl.evaluate.selftrain`).

:data:`MODES` maps ``finetune.mode`` to its function (one signature,
:data:`~medcl.evaluate.fitting.FitMode`); what the modes that train the network share is
:mod:`medcl.evaluate.fitting`.

A binary classifier (two classes, the second positive) also gets its operating point on the
validation predictions of the fitted model: its validation AUROC and a decision threshold
(``finetune.operating_point``, :mod:`medcl.evaluate.operating_point`), kept in its description.

Multi-label manifests (findings, :mod:`medcl.data.findings`): the head gives ``K`` logits, one
sigmoid per finding, and the model records ``task: multilabel``. ``full``, ``fixmatch`` and
``selftrain`` train with the masked binary cross-entropy with per-finding positive weights
(:mod:`medcl.losses.findings`); ``linear`` fits one logistic regression per finding on the
images where that finding is known (its two states weighted by the same positive weight),
folded into one ``nn.Linear(F, K)``, with one ``C`` for all findings chosen on the validation
macro AUROC; ``knn`` votes per finding (:func:`medcl.models.knn.knn_findings`). Every mode selects
on the validation macro AUROC, and every finding gets its own threshold on its known validation
values (:func:`finding_operating_points`, rule ``finetune.operating_point``).

Hyper-parameters are chosen on validation only; the test split is never read here.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from torch import nn
from torch.utils.data import DataLoader

from medcl.config import Config
from medcl.data.dataset import CachedImages, manifest_geometry
from medcl.data.manifest import Manifest
from medcl.data.volumes import check_patches_fit, stored_shapes
from medcl.errors import ConfigError, MedclError
from medcl.evaluate.classifier import Classifier, KNNHead
from medcl.evaluate.fitting import (
    BestOnValidation,
    FitJob,
    FitMode,
    classifier_trainer,
    epoch_samples,
    loss_weights,
    macro_auroc,
    training_sampler,
)
from medcl.evaluate.fixmatch import (
    check_fixmatch_findings,
    check_fixmatch_views,
    fit_fixmatch_mode,
)
from medcl.evaluate.metrics import BINARY_POSITIVE, classification_metrics
from medcl.evaluate.multilabel import FindingAuroc
from medcl.evaluate.ood import describe_training
from medcl.evaluate.operating_point import choose_threshold, threshold_record
from medcl.evaluate.selftrain import selftrain_mode
from medcl.losses.findings import pos_weights
from medcl.models.description import (
    INTENSITY,
    EncoderDescription,
    FinetuneSummary,
    ModelDescription,
    VolumeGeometry,
)
from medcl.models.encoders import EncoderSpec, build_encoder
from medcl.models.export import load_encoder
from medcl.models.init import check_init, init_file, load_init
from medcl.models.knn import knn_findings, knn_predict
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
    """A fitted classifier and its validation figures (``val_auroc``: a binary task's validation
    AUROC of the positive class, ``None`` otherwise or when undefined; ``val_macro_auroc``: a
    multi-label task's validation macro AUROC, the score it was selected on, whose
    ``val_balanced_accuracy`` is then NaN)."""

    model: Classifier
    val_balanced_accuracy: float
    mode: str
    details: dict[str, Any]
    val_auroc: float | None = None
    val_macro_auroc: float | None = None


def _labelled(m: Manifest, split: str) -> Manifest:
    return m.subset((m.df["split"] == split) & (m.df["label"] != ""))


def base_description(
    cfg: Config,
    manifest: Manifest,
    spec: EncoderSpec,
    modality: str,
    encoder: EncoderDescription | None = None,
) -> ModelDescription:
    """The architecture and input convention shared by every head (``metadata.json``).

    Args:
        cfg: The run config (``augment`` gives the preset of an encoder trained here).
        manifest: The manifest (its classes).
        spec: The encoder's architecture.
        modality: The manifest's modality.
        encoder: The description of a pretrained encoder
            (:func:`medcl.models.export.load_encoder`), whose preset is kept; ``None`` for an
            encoder trained from scratch.

    Returns:
        The description: architecture, classes, modality, preset, window, intensity and
        pretraining.
    """
    preset_name = (encoder.preset if encoder is not None else None) or (
        cfg.augment.preset if cfg.augment.preset != "auto" else preset_for_modality(modality)
    )
    preset = build_preset(
        preset_name, cfg.augment.options if encoder is None else {}, dims=spec.spatial_dims
    )
    return ModelDescription(
        spec=spec,
        classes=list(manifest.classes),
        task=manifest.task,
        modality=modality,
        preset=preset.name,
        window=preset.window,
        intensity=INTENSITY,
        pretraining=None if encoder is None else encoder.pretraining,
    )


def _datasets(m: Manifest, clf: Classifier) -> tuple[CachedImages, CachedImages]:
    train, val = _labelled(m, "train"), _labelled(m, "val")
    if len(train) == 0:
        raise MedclError(
            "no labelled training rows: fine-tuning needs labels (check --label-fraction)"
        )
    if len(val) == 0:
        raise MedclError("no labelled validation rows: model selection needs a val split")
    if m.multilabel:
        y = val.findings()
        if not ((y == 1).any(0) & (y == 0).any(0)).any():
            raise MedclError(
                "the validation split has no finding with both a present and an absent known "
                "value: its macro AUROC, which selects the model, is undefined"
            )
    # a patch model reads stored volumes (its embeddings are grid means, medcl.evaluate.classifier)
    return clf.images(train), clf.images(val)  # type: ignore[return-value]


PROBE_C = (0.001, 0.01, 0.1, 1.0)
"""The inverse regularisation strengths the linear probe chooses from on validation."""


def fit_linear(job: FitJob) -> tuple[float, dict[str, Any]]:
    """Logistic-regression probe on frozen features, ``C`` picked on val balanced accuracy; sets
    ``clf.head`` (the probe folded into one ``nn.Linear``). Findings: :func:`fit_linear_findings`.
    """
    if job.clf.multilabel:
        return fit_linear_findings(job)
    clf, cfg, train, val, n_classes = job.clf, job.cfg, job.train, job.val, job.n_classes
    ftr = clf.embed(train.images).numpy().astype(np.float64)
    fva = clf.embed(val.images).numpy().astype(np.float64)
    ytr, yva = train.labels.numpy(), val.labels.numpy()
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
    ztr, zva = (ftr - mu) / sd, (fva - mu) / sd
    best: tuple[float, float, Any] = (-1.0, 0.0, None)
    for c in PROBE_C:
        lr = LogisticRegression(
            C=c,
            max_iter=2000,
            class_weight="balanced" if cfg.finetune.balance != "none" else None,
            random_state=cfg.trainer.seed,
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
    clf.head = linear_head(w, b)
    return float(score), {"C": c}


def linear_head(w: np.ndarray, b: np.ndarray) -> nn.Linear:
    """``nn.Linear`` with weight ``w`` ``(C, F)`` and bias ``b`` ``(C,)`` (as float32)."""
    head = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        head.weight.copy_(torch.tensor(w, dtype=torch.float32))
        head.bias.copy_(torch.tensor(b, dtype=torch.float32))
    return head


def finding_probes(
    z: np.ndarray, states: np.ndarray, c: float, balance: bool, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """One logistic regression per finding on features ``z`` ``(N, F)``: weights ``(K, F)`` and
    biases ``(K,)`` of the log-odds.

    Finding ``k`` is fitted on the images where it is known (``states[:, k] ≥ 0``), with
    inverse regularisation ``c`` and, with ``balance``, its present images weighted by its
    positive weight (:func:`medcl.losses.findings.pos_weights`, the loss of the trained heads).
    A finding known in only one state (or not at all) gets weight 0 and the log-odds of its
    add-one smoothed prevalence ``(P + 1) / (P + Q + 2)``.
    """
    n_feat, n_find = z.shape[1], states.shape[1]
    w, b = np.zeros((n_find, n_feat)), np.zeros(n_find)
    pw = pos_weights(states).numpy() if balance else np.ones(n_find)
    for k in range(n_find):
        known = states[:, k] >= 0
        y = states[known, k]
        if len(np.unique(y)) < 2:
            prev = ((y == 1).sum() + 1.0) / (len(y) + 2.0)
            b[k] = np.log(prev / (1.0 - prev))
            continue
        lr = LogisticRegression(
            C=c, max_iter=2000, class_weight={0: 1.0, 1: float(pw[k])}, random_state=seed
        )
        lr.fit(z[known], y)
        w[k], b[k] = lr.coef_[0], lr.intercept_[0]
    return w, b


def fit_linear_findings(job: FitJob) -> tuple[float, dict[str, Any]]:
    """The multi-label probe: :func:`finding_probes` on standardised frozen features for each
    ``C`` of :data:`PROBE_C`, the one with the best validation macro AUROC kept (the first on a
    tie); sets ``clf.head`` to the probes folded into one ``nn.Linear(F, K)`` (``W/σ``,
    ``b − W·μ/σ``), whose sigmoids are the probes' probabilities."""
    clf, cfg, train, val = job.clf, job.cfg, job.train, job.val
    ftr = clf.embed(train.images).numpy().astype(np.float64)
    fva = clf.embed(val.images).numpy().astype(np.float64)
    ytr, yva = train.labels.numpy(), val.labels.numpy()
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
    ztr, zva = (ftr - mu) / sd, (fva - mu) / sd
    best: tuple[float, float, np.ndarray, np.ndarray] | None = None
    balance = cfg.finetune.balance != "none"
    for c in PROBE_C:
        w, b = finding_probes(ztr, ytr, c, balance, cfg.trainer.seed)
        score = macro_auroc(yva, zva @ w.T + b)  # the log-odds rank as the probabilities do
        if best is None or score > best[0]:
            best = (score, c, w, b)
    assert best is not None
    score, c, w, b = best
    clf.head = linear_head(w / sd, b - (w * mu / sd).sum(1))
    return float(score), {"C": c}


def fit_knn(job: FitJob) -> tuple[float, dict[str, Any]]:
    """kNN head (``finetune.knn_k``) over the training embeddings; sets ``clf.head`` and reports
    val balanced accuracy (findings: a per-finding vote, :func:`medcl.models.knn.knn_findings`,
    and the validation macro AUROC)."""
    clf, train, val, n_classes = job.clf, job.train, job.val, job.n_classes
    k = job.cfg.finetune.knn_k
    bank = clf.embed(train.images)
    clf.head = KNNHead(bank, train.labels, n_classes, k)
    if clf.multilabel:
        proba = knn_findings(clf.embed(val.images), bank, train.labels, k)
        return macro_auroc(val.labels.numpy(), proba.numpy()), {"k": k}
    pred = knn_predict(clf.embed(val.images), bank, train.labels, n_classes, k).argmax(1)
    return float(balanced_accuracy_score(val.labels.numpy(), pred.numpy())), {"k": k}


class FinetuneModule(BestOnValidation):
    """Encoder + linear head trained with (weighted) cross-entropy; keeps the best val weights."""

    def __init__(
        self,
        clf: Classifier,
        cfg: Config,
        weights: torch.Tensor | None,
        pretrained: bool = True,
    ) -> None:
        super().__init__(clf, cfg, weights, pretrained)
        d = clf.description
        preset = build_preset(d.preset, cfg.augment.options, dims=d.spatial_dims)
        self.augment = MultiViewAugment(preset, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, _, _ = batch
        xa = self.augment(x, generator=self.step_generator(x.device))[:, 0]
        loss = self.supervised_loss(self.clf(xa), y)
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss


def fit_full(job: FitJob) -> tuple[float, dict[str, Any]]:
    """Train encoder + head in place; the best validation epoch's weights are loaded back.

    With a run folder ``job.out`` the losses and validation scores are logged
    (``trainer.logger``).
    """
    cfg, train, n_classes = job.cfg, job.train, job.n_classes
    ft = cfg.finetune
    labels = train.labels.numpy()
    per_epoch = epoch_samples(ft, len(train))
    gen = torch.Generator().manual_seed(cfg.trainer.seed)
    sampler = training_sampler(cfg, labels, n_classes, per_epoch, gen)
    batch = min(ft.batch_size, per_epoch)
    loader = DataLoader(train, batch_size=batch, sampler=sampler, drop_last=True)
    weights = loss_weights(cfg, labels, n_classes)
    module = FinetuneModule(job.clf, cfg, weights, pretrained=job.pretrained)
    trainer = classifier_trainer(
        cfg,
        job.progress,
        job.out,
        max_epochs=ft.epochs,
        callbacks=[EarlyStopping(monitor=module.monitor, mode="max", patience=ft.patience)],
    )
    trainer.fit(module, loader, DataLoader(job.val, batch_size=256))
    module.keep_best()
    return module.best_score, {
        "epochs_run": int(trainer.current_epoch),
        "steps": int(trainer.global_step),
    }


MODES: dict[str, FitMode] = {
    "linear": fit_linear,
    "knn": fit_knn,
    "full": fit_full,
    "fixmatch": fit_fixmatch_mode,
    "selftrain": selftrain_mode(fit_full),
}
"""``finetune.mode`` → the function that fits a classifier in that mode (one signature,
:data:`~medcl.evaluate.fitting.FitMode`)."""

PROBES = ("linear", "knn")
"""The modes that keep the encoder frozen (the only ones a 3-D patch encoder supports)."""


def finetune(
    cfg: Config,
    manifest: Manifest,
    pretrained: str | Path | None = None,
    progress: bool = False,
    out: str | Path | None = None,
    teacher: Classifier | None = None,
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
        teacher: For ``selftrain``, an already fitted teacher (the same full fine-tuning of the
            same data and seed); ``None`` fits it here.
    """
    cfg.trainer.check_hardware()  # before any image is read
    if pretrained is None:
        check_init(cfg)  # model.init names weights on disk
    note = one_device_note(cfg, "fine-tuning")
    if note is not None:
        log.warning(note)
    torch.manual_seed(cfg.trainer.seed)
    np.random.seed(cfg.trainer.seed % (2**32))
    if cfg.trainer.threads > 0:
        torch.set_num_threads(cfg.trainer.threads)
    dims, modality = manifest_geometry(manifest)
    enc_desc = None
    if pretrained is not None:
        encoder, enc_desc = load_encoder(pretrained)
        spec = enc_desc.spec
        if spec.spatial_dims != dims:
            raise MedclError(
                f"{pretrained}: encoder is {spec.spatial_dims}-D, the manifest is {dims}-D"
            )
    volume = None if enc_desc is None else enc_desc.volume
    if pretrained is None:
        spec = EncoderSpec.from_config(cfg, dims)
        if cfg.data.volume_mode == "patches":  # a random encoder, probed on grid patches
            d = cfg.data
            check_patches_fit(manifest, d.patch_size)
            spec = dataclasses.replace(spec, image_size=d.patch_size)
            shapes = stored_shapes(manifest.subset(manifest.df["split"] == "train"))
            volume = VolumeGeometry.for_training(
                d.patch_size, d.patch_overlap, d.patches_per_volume, shapes
            )
        encoder = build_encoder(spec)
        if cfg.model.init:
            load_init(encoder, cfg.model.init)
    description = base_description(cfg, manifest, spec, modality, enc_desc)
    if enc_desc is None and cfg.model.init:
        description.init = init_file(cfg.model.init).name
    mode = cfg.finetune.mode
    if volume is not None:
        if mode not in PROBES:
            raise ConfigError(
                f"finetune.mode={mode}: the encoder reads 3-D patches; use "
                "finetune.mode=linear or knn (probes on grid-averaged patch embeddings)"
            )
        description.volume = volume
    ft = cfg.finetune
    if mode == "fixmatch" or ft.fixmatch_strong or ft.fixmatch_weak:  # before any image is read
        check_fixmatch_views(cfg, description.preset, dims)
    if mode == "fixmatch" and manifest.multilabel:
        check_fixmatch_findings(cfg)
    n_classes = len(manifest.classes)
    clf = Classifier(encoder, nn.Linear(encoder.out_dim, n_classes), description)
    train, val = _datasets(manifest, clf)
    job = FitJob(clf, cfg, manifest, train, val, enc_desc is not None, progress, out, teacher)
    score, details = MODES[mode](job)
    labels = train.labels.numpy()
    multilabel = manifest.multilabel
    hits = (labels == 1).sum(0) if multilabel else np.bincount(labels, minlength=n_classes)
    description.head = mode if mode in PROBES else f"linear ({mode} fine-tuning)"
    description.finetune = FinetuneSummary(
        mode=mode,
        val_balanced_accuracy=None if multilabel else score,
        details=details,
        train_labelled_images=int(len(train)),
        train_labelled_patients=int(len(set(train.groups.tolist()))),
        class_counts={c: int(hits[i]) for i, c in enumerate(manifest.classes)},
        val_macro_auroc=score if multilabel else None,
    )
    if multilabel:
        description.finding_thresholds = finding_operating_points(clf, val, cfg)
    elif n_classes == 2:
        description.operating_point = validation_operating_point(clf, val, cfg)
    # what the model was trained for, checked by `medcl predict` (medcl.evaluate.ood)
    description.training_distribution, clf.ood_bank = describe_training(
        clf, manifest, cfg.trainer.seed
    )
    if not math.isfinite(score):
        score = 0.0
    if multilabel:
        return FinetuneResult(clf, float("nan"), mode, details, None, score)
    val_auroc = (
        None if description.operating_point is None else description.operating_point["val_auroc"]
    )
    return FinetuneResult(clf, score, mode, details, val_auroc)


def validation_operating_point(clf: Classifier, val: CachedImages, cfg: Config) -> dict[str, Any]:
    """A fitted binary classifier's validation AUROC and the threshold that
    ``finetune.operating_point`` chooses on its validation predictions
    (:func:`~medcl.evaluate.operating_point.threshold_record`)."""
    proba = clf.predict_proba(val.images).numpy()
    y = val.labels.numpy()
    t = choose_threshold(y == BINARY_POSITIVE, proba[:, BINARY_POSITIVE], cfg.finetune.point)
    auroc = classification_metrics(y, proba, list(clf.description.classes))["auroc"]
    return threshold_record(t, clf.description.classes[BINARY_POSITIVE], auroc)


def finding_operating_points(clf: Classifier, val: CachedImages, cfg: Config) -> dict[str, Any]:
    """A fitted multi-label classifier's per-finding thresholds on its validation predictions:
    for each finding, the threshold ``finetune.operating_point`` (Youden's J by default) chooses
    on the images where that finding is known (:func:`~medcl.evaluate.operating_point.
    choose_threshold`; 0.5 when validation lacks one of its states), with the finding's
    validation AUROC.

    Returns:
        ``{"rule", "val_macro_auroc", "findings": {name: threshold record}}`` (the records of
        :func:`~medcl.evaluate.operating_point.threshold_record`).
    """
    proba = clf.predict_proba(val.images).numpy()
    y = val.labels.numpy()
    point = cfg.finetune.point
    names = list(clf.description.classes)
    per = FindingAuroc(y, proba.astype(np.float64))(np.ones((1, len(y))))[0]
    findings = {}
    for k, name in enumerate(names):
        known = y[:, k] >= 0
        t = choose_threshold(y[known, k] == 1, proba[known, k], point)
        auroc = None if np.isnan(per[k]) else float(per[k])
        findings[name] = threshold_record(t, name, auroc)
    macro = macro_auroc(y, proba)
    return {
        "rule": str(point),
        "val_macro_auroc": None if np.isnan(macro) else macro,
        "findings": findings,
    }
