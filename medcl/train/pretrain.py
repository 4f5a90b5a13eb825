"""``medcl pretrain``: one run folder per pretraining, resumable after an interruption.

Run folder layout::

    OUT/config.yaml          the resolved config (refused on resume if it changed)
    OUT/checkpoints/last.ckpt  full state: weights, optimiser, LR schedule, MoCo queue, RNG, the
                             position in the epoch; written atomically at every epoch end and
                             every trainer.checkpoint_every_n_steps steps (medcl.train.resume)
    OUT/logs/metrics.csv     per-step and per-epoch metrics (Lightning CSV logger)
    OUT/logs/events.out.*    the same for TensorBoard (trainer.logger, medcl.train.loggers)
    OUT/logs/augment_grid.png  training images and their augmented views, at the end
    OUT/encoder.pt           encoder weights + input convention (see medcl.models.export)
    OUT/run.json             status, steps, wall time, final metrics

Many GPUs and nodes: set ``trainer.devices``, ``trainer.num_nodes`` and ``trainer.strategy: ddp``
(configs/pretrain/ddp.yaml); Lightning launches the processes (``srun``/``torchrun`` across nodes).
The losses gather features from every rank, the sampler splits batches across ranks, batch-norm is
synchronised on CUDA (``trainer.sync_batchnorm: auto``), and schedules count optimiser steps. A
request the machine cannot serve (CUDA, devices, SyncBN) is refused before the manifest is read.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar

from medcl._quiet import quiet_third_party
from medcl.config import Config, check_resume, precision_for, save_config
from medcl.data.dataset import manifest_geometry
from medcl.data.manifest import Manifest, read_manifest
from medcl.data.volumes import check_patches_fit, stored_shapes
from medcl.errors import ConfigError, MedclError
from medcl.io import write_json
from medcl.models.description import EncoderDescription, EncoderPretraining, VolumeGeometry
from medcl.models.export import save_encoder
from medcl.models.init import check_init
from medcl.train.callbacks import (
    AugmentGridLogger,
    RNGStateCheckpoint,
    SamplerEpoch,
    ThroughputMonitor,
)
from medcl.train.datamodule import PretrainData
from medcl.train.loggers import build_loggers
from medcl.train.module import PretrainModule
from medcl.train.objectives import check_objective_options
from medcl.train.resume import AtomicCheckpointIO, remove_stale_temporaries
from medcl.transforms import AugmentPreset, build_preset
from medcl.transforms.presets import preset_for_modality


@dataclass
class PretrainResult:
    """What a finished (or already complete) run produced."""

    out_dir: Path
    encoder_path: Path
    steps: int
    seconds: float
    metrics: dict[str, float]
    resumed: bool


class _SavePrefix(Callback):
    """Save a full checkpoint at the end of epoch ``epochs``, a prefix other runs start from."""

    def __init__(self, epochs: int, path: Path) -> None:
        self.epochs = epochs
        self.path = path

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 == self.epochs and not self.path.is_file():
            trainer.save_checkpoint(self.path)


def prefix_checkpoint(run_dir: str | Path, epochs: int) -> Path:
    """Where a run saved with ``save_prefix=epochs`` keeps that checkpoint."""
    return Path(run_dir) / "checkpoints" / f"prefix-e{epochs}.ckpt"


def resolve_inputs(cfg: Config) -> tuple[Manifest, AugmentPreset, int, str]:
    """Read the manifest and build the preset; all refusals happen here, before training."""
    cfg.trainer.check_hardware()  # CUDA, device count and SyncBN asked for must exist here
    check_init(cfg)  # model.init names weights on disk
    if not cfg.data.manifest:
        raise ConfigError("data.manifest: required (a split manifest from `medcl split`)")
    check_objective_options(cfg, [cfg.method.name])  # an unknown name or a bad option: here
    manifest = read_manifest(cfg.data.manifest)
    check_task(cfg, manifest)
    df = manifest.df
    if not (df["split"] == "train").any():
        raise MedclError(f"{cfg.data.manifest}: no train rows; run `medcl split` first")
    dims, modality = manifest_geometry(manifest, cfg.data.manifest)
    name = cfg.augment.preset if cfg.augment.preset != "auto" else preset_for_modality(modality)
    preset = build_preset(name, cfg.augment.options, dims=dims)
    if cfg.data.volume_mode == "patches":  # 3-D only; every training volume holds a patch
        check_patches_fit(manifest.subset(df["split"] == "train"), cfg.data.patch_size)
    return manifest, preset, dims, modality


def check_task(cfg: Config, manifest: Manifest) -> None:
    """Refuse, before any work, the pretraining options the manifest's task cannot serve.

    A multi-label manifest (findings present/absent/unknown per image) trains with the multi-label
    SupCon term (:mod:`medcl.train.objectives.supcon`); ``method.pseudo`` pseudo-labels one class
    per image from a softmax head, which a set of findings is not, so it is refused.

    Args:
        cfg: The run config.
        manifest: The manifest it trains on.

    Raises:
        ConfigError: One line naming the option and the manifest.
    """
    if manifest.multilabel and cfg.method.pseudo.enabled:
        raise ConfigError(
            f"method.pseudo.enabled: pseudo-labels are one class per image, but "
            f"{cfg.data.manifest} is a multi-label manifest (findings); turn method.pseudo off"
        )


def build_trainer(
    cfg: Config, out: Path, extra_callbacks: list[Callback] | None = None, progress: bool = True
) -> L.Trainer:
    """The Lightning trainer of a pretraining run."""
    quiet_third_party()  # after Lightning's import, which resets its logger to INFO
    t = cfg.trainer
    ckpt = ModelCheckpoint(
        dirpath=out / "checkpoints",
        save_last=True,
        save_top_k=1,
        every_n_epochs=1,
        save_on_train_epoch_end=True,
    )
    callbacks: list[Callback] = [
        ckpt,
        RNGStateCheckpoint(),
        SamplerEpoch(),
        ThroughputMonitor(cfg.augment.views),
    ]
    if t.checkpoint_every_n_steps > 0:  # also moves last.ckpt: a kill resumes from that step
        callbacks.append(
            ModelCheckpoint(
                dirpath=out / "checkpoints",
                filename="step-{step}",
                every_n_train_steps=t.checkpoint_every_n_steps,
                save_top_k=1,
                monitor="step",
                mode="max",
                save_last=True,
            )
        )
    if progress:
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    callbacks += extra_callbacks or []
    return L.Trainer(
        default_root_dir=out,
        max_epochs=cfg.optim.epochs,
        max_steps=cfg.optim.max_steps,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=precision_for(cfg),
        sync_batchnorm=t.sync_batchnorm_on(),
        accumulate_grad_batches=t.accumulate_grad_batches,
        use_distributed_sampler=False,
        logger=build_loggers(cfg, out) or False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=max(1, t.monitor_every_n_epochs),
        limit_val_batches=None if t.monitor_every_n_epochs > 0 else 0,
        deterministic=False,
    )


def pretrain(
    cfg: Config,
    restart: bool = False,
    progress: bool = True,
    save_prefix: int = 0,
    warm_start: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
) -> PretrainResult:
    """Run (or resume) a pretraining described by ``cfg``.

    Args:
        cfg: The validated config; ``cfg.out`` is the run folder.
        restart: Delete an existing run folder's checkpoints and start over.
        progress: Show progress bars.
        save_prefix: Also keep a full checkpoint after this many epochs
            (:func:`prefix_checkpoint`), for runs that share this run's beginning.
        warm_start: Start from such a checkpoint of another run (weights, optimiser, schedule,
            step) instead of from scratch, when this run folder has no checkpoint of its own. The
            two runs must have the same architecture, optimiser and length; e.g. an SSCL run whose
            ``method.lambda_sup_start`` prefix is a SimCLR run's.
        callbacks: Further Lightning callbacks for the trainer (after medcl's own). An exception
            one raises ends the run like a crash: it propagates, and the checkpoints written so
            far stay, so the same call resumes from the last one.

    Returns:
        Paths and figures of the run.

    Raises:
        ConfigError: If the run folder holds a run with a different config.
    """
    manifest, preset, dims, modality = resolve_inputs(cfg)
    out = Path(cfg.out)
    last = out / "checkpoints" / "last.ckpt"
    run_json = out / "run.json"
    if restart and out.exists():
        for name in ("checkpoints", "logs", "encoder.pt", "run.json", "config.yaml"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    saved_cfg = out / "config.yaml"
    if saved_cfg.is_file() and (last.is_file() or run_json.is_file()):
        check_resume(
            saved_cfg,
            cfg,
            f"{out} holds a run with a different config; choose another `out` or pass --restart",
            objectives=[cfg.method.name],
        )
        if run_json.is_file() and json.loads(run_json.read_text()).get("status") == "complete":
            info = json.loads(run_json.read_text())
            return PretrainResult(
                out,
                out / "encoder.pt",
                info.get("steps", 0),
                info.get("seconds", 0.0),
                info.get("metrics", {}),
                False,
            )
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out / "checkpoints")  # a kill during a checkpoint write left them
    save_config(cfg, saved_cfg)
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    if cfg.trainer.threads > 0:
        torch.set_num_threads(cfg.trainer.threads)
    dm = PretrainData(cfg, manifest, preset, dims, progress=progress)
    model = PretrainModule(cfg, preset, dims, len(manifest.classes))
    png = out / "logs" / "augment_grid.png"
    extra: list[Callback] = [
        AugmentGridLogger(preset, cfg.augment.views, png, seed=cfg.trainer.seed)
    ]
    if save_prefix > 0:
        extra.append(_SavePrefix(save_prefix, prefix_checkpoint(out, save_prefix)))
    extra += callbacks
    trainer = build_trainer(cfg, out, extra, progress)
    resumed = last.is_file()
    if warm_start is not None and not resumed and not Path(warm_start).is_file():
        raise MedclError(f"{warm_start}: warm-start checkpoint not found")
    start_from = str(last) if resumed else (str(warm_start) if warm_start is not None else None)
    started = time.perf_counter()
    with warnings.catch_warnings():
        # a warm start loads another run's checkpoint callback state: expected, not news
        warnings.filterwarnings("ignore", message="The dirpath has changed")
        trainer.fit(model, datamodule=dm, ckpt_path=start_from)
    if trainer.interrupted:
        raise MedclError(
            f"pretraining interrupted; run the same command again to resume from {last}"
        )
    seconds = time.perf_counter() - started
    metrics = {
        k: float(v)
        for k, v in trainer.callback_metrics.items()
        if torch.is_tensor(v) and v.numel() == 1
    }
    description = EncoderDescription(
        spec=model.encoder_spec,
        modality=modality,
        preset=preset.name,
        window=preset.window,
        pretraining=EncoderPretraining(
            cfg.method.name, cfg.method.lambda_sup, cfg.method.lambda_ssl
        ),
        classes=list(manifest.classes),
    )
    if dm.patches:  # grid inference needs the patch geometry (medcl.evaluate.classifier)
        d = cfg.data
        shapes = stored_shapes(manifest.subset(manifest.df["split"] == "train"))
        description.volume = VolumeGeometry.for_training(
            d.patch_size, d.patch_overlap, d.patches_per_volume, shapes
        )
    enc_path = out / "encoder.pt"
    if trainer.is_global_zero:
        save_encoder(enc_path, model.encoder, description)
        write_json(
            {
                "status": "complete",
                "steps": int(trainer.global_step),
                "seconds": seconds,
                "epochs": int(trainer.current_epoch),
                "metrics": metrics,
                "resumed": resumed,
                "warm_start": None if warm_start is None else str(warm_start),
                "labelled_share": dm.labelled_share,
                "meta": description.to_meta(),
            },
            run_json,
        )
    return PretrainResult(out, enc_path, int(trainer.global_step), seconds, metrics, resumed)
