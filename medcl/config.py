"""One configuration object that flows from the CLI through every stage.

A run is described by :class:`Config`, a tree of dataclasses loaded from YAML and then patched with
command-line overrides (``section.key=value``, values parsed as YAML). Loading is strict and happens
before any work: an unknown key, a value of the wrong type or outside its range is refused with one
:class:`~medcl.errors.ConfigError` that names the field (and suggests the closest valid key).

A loaded config is changed only through :func:`derive`, which validates the result as
:func:`load_config` does. Also here, because pretraining and fine-tuning share them: the precision
rule (:func:`precision_for`) and the refusal to resume a run folder under another config
(:func:`check_resume`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from medcl.errors import ConfigError
from medcl.io import write_text

Encoder = Literal["resnet10", "resnet18", "resnet34", "resnet50"]


@dataclass
class DataConfig:
    """What to train on.

    Attributes:
        manifest: Split manifest CSV (``medcl split`` output). Relative paths are taken from the
            current folder.
        image_size: In-plane size the encoder sees (images are resized on load when needed).
        labelled_share: Share of each pretraining batch drawn from labelled training rows (the rest
            from the unlabelled pool); ``auto`` = the natural share, capped to [0.25, 0.5].
        batch_size: Samples per device per step (each yields ``augment.views`` views).
        num_workers: Data-loader processes (0 = in the main process; ``auto`` = 2 when the preset
            has per-sample torchio artifacts, which then run in parallel with training, else 0).
        images_per_patient: Pretraining batches hold whole patients, this many images of each
            (``batch_size`` must be a multiple), so that ``method.group_positives`` finds
            same-patient positives in every batch (MICLe, Azizi et al. 2021); 1 = single rows.
        volume_mode: How 3-D volumes reach the encoder: ``resize`` (the whole volume resized to
            ``image_size``³ on load, the default) or ``patches`` (cubes of ``patch_size`` voxels
            cropped at the stored resolution of the cache: pretraining on random patches,
            embedding and prediction averaged over a grid of patches; :mod:`medcl.train.patches`).
        patch_size: Edge of a patch in voxels of the cached volume (``volume_mode: patches``); every
            training volume must be at least this large along each axis.
        patches_per_volume: Random patches cropped from each volume of a pretraining batch (k ≥ 1;
            a batch of ``batch_size`` volumes gives ``batch_size · k`` samples of ``augment.views``
            views each).
        patch_overlap: Overlap of neighbouring grid patches at inference, a fraction of
            ``patch_size`` in [0, 1) (stride ``t = ⌊patch_size·(1 − overlap)⌋``; a volume of
            ``D×H×W`` takes about ``(D/t)(H/t)(W/t)`` patches: 0.5 costs 8× as many as 0).
        in_memory: Hold the resized images in memory (``true``), stream them from a packed cache
            file through the loader workers (``false``; memory independent of the row count), or
            ``auto``: in memory when they take less than ``memory_budget_mb``
            (:func:`medcl.data.dataset.open_images`; the log says which and why).
        memory_budget_mb: The ``auto`` threshold in MiB, per dataset.
    """

    manifest: str = ""
    image_size: int = 64
    labelled_share: float | str = "auto"
    batch_size: int = 128
    num_workers: int | str = "auto"
    images_per_patient: int = 1
    volume_mode: str = "resize"
    patch_size: int = 32
    patches_per_volume: int = 4
    patch_overlap: float = 0.5
    in_memory: str | bool = "auto"
    memory_budget_mb: float = 1024

    def check(self, where: str) -> None:
        _positive(self.image_size, f"{where}.image_size")
        if self.volume_mode not in ("resize", "patches"):
            raise ConfigError(
                f"{where}.volume_mode: 'resize' or 'patches', got {self.volume_mode!r}"
            )
        _positive(self.patch_size, f"{where}.patch_size")
        _positive(self.patches_per_volume, f"{where}.patches_per_volume")
        if not 0.0 <= self.patch_overlap < 1.0:
            raise ConfigError(f"{where}.patch_overlap: must be in [0, 1), got {self.patch_overlap}")
        _positive(self.batch_size, f"{where}.batch_size")
        _positive(self.images_per_patient, f"{where}.images_per_patient")
        if self.batch_size % self.images_per_patient:
            raise ConfigError(
                f"{where}.batch_size ({self.batch_size}) must be a multiple of "
                f"{where}.images_per_patient ({self.images_per_patient})"
            )
        if isinstance(self.num_workers, str):
            if self.num_workers != "auto":
                raise ConfigError(
                    f"{where}.num_workers: an integer ≥ 0 or 'auto', got {self.num_workers!r}"
                )
        elif self.num_workers < 0:
            raise ConfigError(f"{where}.num_workers: must be ≥ 0, got {self.num_workers}")
        if str(self.in_memory).lower() not in ("auto", "true", "false"):
            raise ConfigError(f"{where}.in_memory: auto, true or false, got {self.in_memory!r}")
        _positive(self.memory_budget_mb, f"{where}.memory_budget_mb")
        if isinstance(self.labelled_share, str):
            if self.labelled_share != "auto":
                raise ConfigError(
                    f"{where}.labelled_share: a number in [0, 1] or 'auto', "
                    f"got {self.labelled_share!r}"
                )
        elif not 0.0 <= self.labelled_share <= 1.0:
            raise ConfigError(
                f"{where}.labelled_share: must be in [0, 1], got {self.labelled_share}"
            )


@dataclass
class ModelConfig:
    """Encoder and heads.

    Attributes:
        encoder: MONAI ResNet depth.
        stem: ``small`` (3×3 stride-2 convolution, no max-pool; for ≤ 128 px), ``standard``
            (7×7 stride-2 + max-pool) or ``auto`` (small below 128 px).
        width: Channel multiplier of the ResNet stages (0.5 for fast CPU runs).
        pool: Global pooling: ``avg`` (standard) or ``avgmax`` (average and max concatenated,
            which keeps findings of a few pixels).
        proj_dim: Output size of the projection head (the contrastive space).
        proj_hidden: Hidden width of the projection and predictor heads.
    """

    encoder: Encoder = "resnet18"
    stem: Literal["auto", "small", "standard"] = "auto"
    width: float = 1.0
    pool: Literal["avg", "avgmax"] = "avg"
    proj_dim: int = 128
    proj_hidden: int = 512

    def check(self, where: str) -> None:
        _positive(self.proj_dim, f"{where}.proj_dim")
        if not 0 < self.width <= 4:
            raise ConfigError(f"{where}.width: must be in (0, 4], got {self.width}")
        _positive(self.proj_hidden, f"{where}.proj_hidden")


@dataclass
class AugmentConfig:
    """Augmentation preset (see :mod:`medcl.transforms`).

    Attributes:
        preset: ``ct``, ``mr``, ``xr`` or ``auto`` (from the manifest's modality).
        views: Views per sample (≥ 2).
        options: Preset overrides, e.g. ``{flip_lr: true}``; validated by the preset.
    """

    preset: Literal["auto", "ct", "mr", "xr"] = "auto"
    views: int = 2
    options: dict = field(default_factory=dict)

    def check(self, where: str) -> None:
        if self.views < 2:
            raise ConfigError(
                f"{where}.views: contrastive learning needs ≥ 2 views, got {self.views}"
            )


@dataclass
class MethodConfig:
    """The objective ``L = λ1·SupCon(labelled) + λ2·SSL(all)``.

    Attributes:
        name: The pretraining objective: ``simclr`` (NT-Xent), ``moco`` (momentum queue),
            ``byol``, ``simsiam``, ``dino``, ``vicreg``, or any objective registered in
            :data:`medcl.train.objectives.OBJECTIVES`. Here it must be an identifier; the registry
            is consulted when a pretraining starts (before any work).
        lambda_sup: λ1, weight of the supervised contrastive term (0 = plain SSL).
        lambda_ssl: λ2, weight of the self-supervised term.
        lambda_sup_start: Share of the pretraining (rounded to whole epochs) with λ1 = 0:
            self-supervision alone first.
        lambda_sup_warmup: Share of the pretraining steps over which λ1 then ramps linearly from 0
            (0 = full λ1 at once).
        temperature: τ of the softmax over similarities.
        group_positives: Images of the same patient are positives (MICLe); they are never
            negatives either way.
        queue_size: MoCo queue length (keys).
        ema_base: Starting EMA momentum of the key/target encoder (scheduled to 1).
        dino_out_dim: DINO: prototypes ``K`` of the weight-normalised last layer (the softmax size).
        dino_student_temp: DINO: student temperature ``τ_s``.
        dino_teacher_temp: DINO: teacher temperature ``τ_t`` after the warm-up (≤ ``τ_s``: the
            teacher sharpens).
        dino_warmup_teacher_temp: DINO: ``τ_t`` at step 0, raised linearly to
            ``dino_teacher_temp`` (≤ ``τ_s``).
        dino_teacher_temp_warmup: DINO: share of the optimiser steps of that warm-up (0 = none).
        dino_center_momentum: DINO: EMA momentum ``m`` of the center of the teacher outputs.
        vicreg_sim_weight: VICReg: ``λ``, weight of the invariance (MSE) term.
        vicreg_var_weight: VICReg: ``μ``, weight of the variance hinge.
        vicreg_cov_weight: VICReg: ``ν``, weight of the covariance penalty.
    """

    name: str = "simclr"
    lambda_sup: float = 1.0
    lambda_ssl: float = 1.0
    lambda_sup_start: float = 0.0
    lambda_sup_warmup: float = 0.0
    temperature: float = 0.1
    group_positives: bool = False
    queue_size: int = 4096
    ema_base: float = 0.99
    dino_out_dim: int = 4096
    dino_student_temp: float = 0.1
    dino_teacher_temp: float = 0.07
    dino_warmup_teacher_temp: float = 0.04
    dino_teacher_temp_warmup: float = 0.3
    dino_center_momentum: float = 0.9
    vicreg_sim_weight: float = 25.0
    vicreg_var_weight: float = 25.0
    vicreg_cov_weight: float = 1.0

    def check(self, where: str) -> None:
        if not self.name.isidentifier():
            raise ConfigError(
                f"{where}.name: an objective name (an identifier such as simclr or moco), "
                f"got {self.name!r}"
            )
        for k in ("lambda_sup", "lambda_ssl"):
            if getattr(self, k) < 0:
                raise ConfigError(f"{where}.{k}: must be ≥ 0, got {getattr(self, k)}")
        if not 0 <= self.lambda_sup_start < 1:
            raise ConfigError(
                f"{where}.lambda_sup_start: must be in [0, 1), got {self.lambda_sup_start}"
            )
        if not 0 <= self.lambda_sup_warmup <= 1:
            raise ConfigError(
                f"{where}.lambda_sup_warmup: must be in [0, 1], got {self.lambda_sup_warmup}"
            )
        if self.lambda_sup == 0 and self.lambda_ssl == 0:
            raise ConfigError(f"{where}: lambda_sup and lambda_ssl are both 0; nothing to learn")
        if not 0 < self.temperature <= 10:
            raise ConfigError(f"{where}.temperature: must be in (0, 10], got {self.temperature}")
        _positive(self.queue_size, f"{where}.queue_size")
        if not 0 <= self.ema_base <= 1:
            raise ConfigError(f"{where}.ema_base: must be in [0, 1], got {self.ema_base}")
        self._check_dino_vicreg(where)

    def _check_dino_vicreg(self, where: str) -> None:
        if self.dino_out_dim < 2:
            raise ConfigError(f"{where}.dino_out_dim: must be ≥ 2, got {self.dino_out_dim}")
        if not 0 < self.dino_student_temp <= 10:
            raise ConfigError(
                f"{where}.dino_student_temp: must be in (0, 10], got {self.dino_student_temp}"
            )
        for k in ("dino_teacher_temp", "dino_warmup_teacher_temp"):
            t = getattr(self, k)
            if not 0 < t <= self.dino_student_temp:
                raise ConfigError(
                    f"{where}.{k}: must be in (0, dino_student_temp = {self.dino_student_temp}] "
                    f"(the teacher sharpens), got {t}"
                )
        if not 0 <= self.dino_teacher_temp_warmup <= 1:
            raise ConfigError(
                f"{where}.dino_teacher_temp_warmup: must be in [0, 1], "
                f"got {self.dino_teacher_temp_warmup}"
            )
        if not 0 <= self.dino_center_momentum < 1:
            raise ConfigError(
                f"{where}.dino_center_momentum: must be in [0, 1), got {self.dino_center_momentum}"
            )
        weights = ("vicreg_sim_weight", "vicreg_var_weight", "vicreg_cov_weight")
        for k in weights:
            if getattr(self, k) < 0:
                raise ConfigError(f"{where}.{k}: must be ≥ 0, got {getattr(self, k)}")
        if not any(getattr(self, k) > 0 for k in weights):
            raise ConfigError(f"{where}.vicreg_sim_weight: the three VICReg weights are all 0")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay, counted in optimiser steps.

    Attributes:
        lr: Peak learning rate (for the effective batch; not rescaled automatically).
        weight_decay: Decoupled weight decay.
        epochs: Training epochs.
        max_steps: Stop after this many optimiser steps (−1 = by epochs).
        warmup_fraction: Share of the optimiser steps spent warming up.
    """

    lr: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 30
    max_steps: int = -1
    warmup_fraction: float = 0.05

    def check(self, where: str) -> None:
        if not 0 < self.lr < 10:
            raise ConfigError(f"{where}.lr: must be in (0, 10), got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"{where}.weight_decay: must be ≥ 0, got {self.weight_decay}")
        _positive(self.epochs, f"{where}.epochs")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(
                f"{where}.warmup_fraction: must be in [0, 1), got {self.warmup_fraction}"
            )


LOGGERS: tuple[str, ...] = ("csv", "tensorboard", "mlflow")
"""The names ``trainer.logger`` accepts (:mod:`medcl.train.loggers` builds them)."""


@dataclass
class TrainerConfig:
    """Lightning trainer settings; one CPU, one GPU or many GPUs/nodes with DDP.

    Attributes:
        accelerator: ``auto`` picks CUDA when present; ``gpu``/``cuda`` is refused on a machine
            without CUDA, before any work (:meth:`check_hardware`).
        devices: Per node: ``auto`` (every GPU on CUDA, one process on the CPU), a count (GPUs, at
            most ``torch.cuda.device_count()``, ``-1`` = all; on the CPU gloo processes, at most
            ``os.cpu_count()``), or a list of GPU indices.
        num_nodes: Machines (DDP across nodes is launched by the cluster, e.g. ``srun``/torchrun).
        strategy: ``auto`` or ``ddp`` (or any Lightning strategy name but ``ddp_spawn``).
        precision: ``auto`` = bf16-mixed on CUDA, 32-true elsewhere (:func:`precision_for`); or
            a Lightning precision string.
        sync_batchnorm: Convert BatchNorm to SyncBatchNorm. ``auto``: on when the run uses CUDA
            with more than one device in all (devices × nodes); ``true`` needs CUDA (PyTorch's
            SyncBatchNorm runs on GPUs only) and is refused on a CPU run
            (:meth:`check_hardware`, :meth:`sync_batchnorm_on`).
        accumulate_grad_batches: Gradient accumulation (schedules count optimiser steps).
        seed: Global seed.
        threads: CPU threads for torch (0 = leave as is).
        checkpoint_every_n_steps: Also checkpoint mid-epoch every N optimiser steps (0 = only at
            epoch ends).
        monitor_every_n_epochs: Pretraining's online kNN monitor (``val/knn_bacc``: validation
            images classified by their nearest labelled training images) runs after every N-th
            epoch; 0 = never. It only reports (nothing is selected by it), and with many labelled
            images it costs a fifth of an epoch, so long experiments run it less often.
        logger: Where metrics go, any of :data:`LOGGERS`: ``csv`` (``OUT/logs/metrics.csv``),
            ``tensorboard`` (event files beside it), ``mlflow`` (the optional ``medcl[mlflow]``
            extra; a local file store ``OUT/mlruns`` unless ``mlflow_uri``). Fine-tuning logs to
            ``OUT/logs/finetune``.
        mlflow_uri: MLflow tracking URI (e.g. ``file:/abs/mlruns`` or ``sqlite:///mlflow.db``);
            empty = ``OUT/mlruns``. No server is started.
    """

    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"
    sync_batchnorm: bool | str = "auto"
    accumulate_grad_batches: int = 1
    seed: int = 0
    threads: int = 0
    checkpoint_every_n_steps: int = 0
    monitor_every_n_epochs: int = 1
    logger: list = field(default_factory=lambda: ["csv", "tensorboard"])
    mlflow_uri: str = ""

    def check(self, where: str) -> None:
        _positive(self.num_nodes, f"{where}.num_nodes")
        bad = [x for x in self.logger if x not in LOGGERS]
        if bad or len(set(self.logger)) != len(self.logger):
            raise ConfigError(
                f"{where}.logger: a list of distinct names from {', '.join(LOGGERS)}, "
                f"got {self.logger!r}"
            )
        _positive(self.accumulate_grad_batches, f"{where}.accumulate_grad_batches")
        if isinstance(self.monitor_every_n_epochs, bool) or self.monitor_every_n_epochs < 0:
            raise ConfigError(
                f"{where}.monitor_every_n_epochs: an integer ≥ 0 (0 = never), "
                f"got {self.monitor_every_n_epochs!r}"
            )
        if self.sync_batchnorm not in (True, False, "auto"):
            raise ConfigError(f"{where}.sync_batchnorm: true, false or auto")
        if self.strategy.startswith("ddp_spawn"):
            raise ConfigError(
                f"{where}.strategy: {self.strategy} pickles the data module, which holds the "
                "augmentation closures; use ddp (Lightning starts the other ranks by re-running "
                "the command)"
            )
        self.device_request(where)

    def device_request(self, where: str = "trainer") -> int | list[int] | str:
        """``devices`` as Lightning reads it: ``auto``, a count (``-1`` = every GPU) or indices.

        A digit string (``"2"``) is a count and a comma-separated string (``"0,1"``) a list of
        indices, as on Lightning's command line.

        Raises:
            ConfigError: Naming ``devices`` for anything else.
        """
        dev = self.devices
        bad = ConfigError(
            f"{where}.devices: 'auto', a positive count (-1 = every GPU) or a list of GPU "
            f"indices, got {dev!r}"
        )
        if isinstance(dev, str) and dev != "auto":
            text = dev.strip()
            try:
                dev = [int(x) for x in text.strip(",").split(",")] if "," in text else int(text)
            except ValueError:
                raise bad from None
        if dev == "auto":
            return dev
        if isinstance(dev, bool):
            raise bad
        if isinstance(dev, int):
            if dev == 0 or dev < -1:
                raise bad
            return dev
        if (
            isinstance(dev, list)
            and dev
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in dev)
        ):
            if len(set(dev)) != len(dev):
                raise bad
            return dev
        raise bad

    def uses_cuda(self) -> bool:
        """Whether the run will train on CUDA: ``accelerator`` ``gpu``/``cuda``, or ``auto`` on a
        machine where ``torch.cuda.is_available()``."""
        if self.accelerator in ("gpu", "cuda"):
            return True
        if self.accelerator != "auto":
            return False
        import torch  # here, so that reading a config does not load torch

        return bool(torch.cuda.is_available())

    def device_count(self, where: str = "trainer") -> int:
        """Devices per node the run will use: the CUDA count for ``auto``/``-1`` on CUDA, one for
        ``auto`` on the CPU (Lightning's reading), else the count or length of ``devices``."""
        dev = self.device_request(where)
        if isinstance(dev, list):
            return len(dev)
        if dev == "auto" or dev == -1:
            if not self.uses_cuda():
                return 1
            import torch

            return int(torch.cuda.device_count())
        return int(dev)

    def sync_batchnorm_on(self) -> bool:
        """The resolved ``sync_batchnorm``: ``auto`` is on exactly when the run uses CUDA with more
        than one device in all (devices × nodes); a single device has nothing to synchronise and
        PyTorch's SyncBatchNorm does not run on the CPU. An explicit value stands (refused on the
        CPU by :meth:`check_hardware`)."""
        if self.sync_batchnorm != "auto":
            return bool(self.sync_batchnorm)
        return self.uses_cuda() and self.device_count() * self.num_nodes > 1

    def check_hardware(self, where: str = "trainer") -> None:
        """Refuse, before any work, a request this machine cannot serve.

        Checked: ``accelerator`` ``gpu``/``cuda`` where ``torch.cuda.is_available()`` is false;
        ``devices`` beyond what exists (CUDA: more than ``torch.cuda.device_count()`` or an index
        past it; CPU: more processes than ``os.cpu_count()``, or a list of indices, which only
        GPUs have); ``sync_batchnorm: true`` on a run that does not use CUDA. A CPU run with
        ``devices: N`` and ``strategy: ddp`` is N gloo processes on this machine (for testing).

        Raises:
            ConfigError: One line naming the key.
        """
        import os

        import torch

        acc = self.accelerator
        if acc in ("gpu", "cuda") and not torch.cuda.is_available():
            raise ConfigError(
                f"{where}.accelerator: {acc!r} asks for CUDA, but torch.cuda.is_available() is "
                "false on this machine; use 'cpu' or 'auto'"
            )
        dev = self.device_request(where)
        if self.uses_cuda():
            have = torch.cuda.device_count()
            wanted = dev if isinstance(dev, list) else []
            if (isinstance(dev, int) and dev > have) or any(i >= have for i in wanted):
                raise ConfigError(
                    f"{where}.devices: {self.devices!r} asks for more GPUs than the {have} "
                    "this machine has"
                )
        elif acc in ("cpu", "auto"):
            cores = os.cpu_count() or 1
            if isinstance(dev, list) or dev == -1:
                raise ConfigError(
                    f"{where}.devices: {self.devices!r} names GPUs, but this run uses the CPU; "
                    "give a process count"
                )
            if isinstance(dev, int) and dev > cores:
                raise ConfigError(
                    f"{where}.devices: {dev} CPU processes asked for, but this machine has "
                    f"{cores} cores"
                )
        if self.sync_batchnorm is True and not self.uses_cuda():
            raise ConfigError(
                f"{where}.sync_batchnorm: true needs CUDA (PyTorch's SyncBatchNorm runs on GPUs "
                "only) and this run uses the CPU; set it to auto or false"
            )


@dataclass
class FinetuneConfig:
    """Few-label fine-tuning.

    Attributes:
        mode: ``linear`` (logistic regression on frozen embeddings), ``knn``, ``full``, or
            ``fixmatch`` (full fine-tuning with FixMatch on the unlabelled training rows too).
        epochs: Full fine-tuning epochs (early stopping on val balanced accuracy); FixMatch runs
            as many optimiser steps as full fine-tuning would.
        lr: Head learning rate; a pretrained encoder gets ``lr * encoder_lr_mult``, one trained
            from scratch the full ``lr``.
        encoder_lr_mult: Encoder learning-rate factor for fine-tuning a pretrained encoder.
        weight_decay: AdamW's decoupled weight decay (encoder and head), full fine-tuning and
            FixMatch.
        warmup_fraction: Share of the optimiser steps with a linear learning-rate warm-up before
            the cosine decay: ``max(1, floor(steps × warmup_fraction))`` steps.
        patience: Early-stopping patience in epochs.
        balance: ``weights`` (class-weighted loss), ``sampler`` (balanced sampling) or ``none``.
        knn_k: Neighbours for the kNN classifier.
        batch_size: Fine-tuning batch size.
        epoch_steps: Optimiser steps in one fine-tuning epoch, the unit of ``epochs``,
            ``patience`` and validation (0 = one pass over the labelled images, at least 8
            steps). A fixed number keeps the budget the same at every label fraction.
        fixmatch_mu: FixMatch: unlabelled images per labelled image in a step (μ).
        fixmatch_threshold: FixMatch: confidence threshold τ of the pseudo-labels.
        fixmatch_lambda_u: FixMatch: weight λ_u of the unlabelled term.
    """

    mode: Literal["linear", "knn", "full", "fixmatch"] = "full"
    epochs: int = 30
    lr: float = 1e-3
    encoder_lr_mult: float = 0.1
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    patience: int = 8
    balance: Literal["weights", "sampler", "none"] = "weights"
    knn_k: int = 10
    batch_size: int = 64
    epoch_steps: int = 0
    fixmatch_mu: int = 3
    fixmatch_threshold: float = 0.95
    fixmatch_lambda_u: float = 1.0

    def check(self, where: str) -> None:
        _positive(self.epochs, f"{where}.epochs")
        _positive(self.knn_k, f"{where}.knn_k")
        _positive(self.batch_size, f"{where}.batch_size")
        _positive(self.fixmatch_mu, f"{where}.fixmatch_mu")
        if self.weight_decay < 0:
            raise ConfigError(f"{where}.weight_decay: must be ≥ 0, got {self.weight_decay}")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(
                f"{where}.warmup_fraction: must be in [0, 1), got {self.warmup_fraction}"
            )
        if self.epoch_steps < 0:
            raise ConfigError(f"{where}.epoch_steps: must be ≥ 0, got {self.epoch_steps}")
        if not 0 <= self.fixmatch_threshold <= 1:
            raise ConfigError(
                f"{where}.fixmatch_threshold: must be in [0, 1], got {self.fixmatch_threshold}"
            )
        if self.fixmatch_lambda_u < 0:
            raise ConfigError(f"{where}.fixmatch_lambda_u: must be ≥ 0")


@dataclass
class EfficiencyConfig:
    """The label-efficiency experiment (``medcl efficiency``).

    Attributes:
        fractions: Label fractions of the training images (patient-level subsets).
        labels_per_class: Label budgets as labelled images per class (e.g. ``[2, 5, 20]``; one
            image per patient while a class has patients left), run besides ``fractions``
            (set ``fractions: []`` for per-class budgets only).
        seeds: Seeds of the label subsets, pretraining and fine-tuning.
        methods: ``supervised`` (from scratch), ``fixmatch`` (FixMatch from scratch on the
            labelled subset + the unlabelled pool), ``simclr`` (SSL only, λ1 = 0), ``dino`` and
            ``vicreg`` (SSL only with that pretraining objective, its ``method.dino_*`` /
            ``method.vicreg_*`` options), ``sscl`` (SupCon on the labelled subset + SSL), each
            fine-tuned with ``finetune.mode``, and ``sscl+fixmatch`` (SSCL pretraining, then
            FixMatch fine-tuning).
        linear_probe: Also fit a linear probe on each pretrained encoder.
        n_boot: Patient-bootstrap replicates for the test intervals.
        metric: Headline metric of the report and plot.
        share_simclr: One SimCLR pretraining (the first seed's) for every seed: it sees no label,
            so only its initialisation would differ between seeds (likewise DINO's and VICReg's).
        full_label_seeds: Seeds run at label fraction 1.0 (the first ones of ``seeds``; 0 = all):
            with every label, methods differ less between seeds, so the budget goes to the few-label
            fractions.
        fair_budget: Every arm's fitting stage gets the same cap: ``finetune.epochs`` plus the
            pretraining's steps, early-stopped on validation, so that an arm from scratch gets as
            many optimiser steps as pretraining + fine-tuning together (see
            :func:`medcl.evaluate.budget.stage_budget`); off: ``finetune.epochs`` for all.
        scratch_augment: Augmentation option overrides (as ``augment.options``, merged over it)
            for the arms that start from nothing (``supervised``, ``fixmatch``): a network that
            learns every invariance from a few labelled images may need stronger augmentation than
            fine-tuning a pretrained one, so each gets its own, chosen on validation
            (``benchmarks/recipe_sweep.py``). Checked against the preset before any work.
    """

    fractions: list = field(default_factory=lambda: [0.01, 0.05, 0.1, 1.0])
    labels_per_class: list = field(default_factory=list)
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    methods: list = field(default_factory=lambda: ["supervised", "simclr", "sscl"])
    linear_probe: bool = True
    n_boot: int = 1000
    metric: Literal["balanced_accuracy", "accuracy", "macro_auroc", "macro_f1"] = (
        "balanced_accuracy"
    )
    share_simclr: bool = False
    full_label_seeds: int = 0
    fair_budget: bool = True
    scratch_augment: dict = field(default_factory=dict)

    def check(self, where: str) -> None:
        if not all(isinstance(f, int | float) and 0 < f <= 1 for f in self.fractions):
            raise ConfigError(
                f"{where}.fractions: a list of numbers in (0, 1], got {self.fractions}"
            )
        if not all(
            isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in self.labels_per_class
        ):
            raise ConfigError(
                f"{where}.labels_per_class: a list of integers ≥ 1, got {self.labels_per_class}"
            )
        if not self.fractions and not self.labels_per_class:
            raise ConfigError(
                f"{where}.fractions, {where}.labels_per_class: give at least one label budget"
            )
        if not self.seeds or not all(isinstance(s, int) for s in self.seeds):
            raise ConfigError(f"{where}.seeds: a non-empty list of integers, got {self.seeds}")
        # the names are arms of medcl.evaluate.arms.ARMS, checked there before any run
        if not self.methods or not all(isinstance(m, str) for m in self.methods):
            raise ConfigError(f"{where}.methods: a non-empty list of arm names, got {self.methods}")
        if self.n_boot < 0:
            raise ConfigError(f"{where}.n_boot: must be ≥ 0, got {self.n_boot}")


@dataclass
class Config:
    """A whole run. ``out`` is the run folder (created; resumed when it holds a checkpoint)."""

    out: str = "runs/pretrain"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    efficiency: EfficiencyConfig = field(default_factory=EfficiencyConfig)

    def check(self, where: str = "config") -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                value.check(f"{f.name}")

    def to_dict(self) -> dict:
        """Plain nested dict (YAML-serialisable)."""
        return dataclasses.asdict(self)


def _positive(value: int | float, name: str) -> None:
    if value <= 0:
        raise ConfigError(f"{name}: must be positive, got {value}")


def _type_ok(value: Any, hint: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits ``hint``; returns (ok, coerced value)."""
    origin = get_origin(hint)
    if hint is Any:
        return True, value
    if origin is Literal:
        return value in get_args(hint), value
    if origin in (Union, types.UnionType):
        for arm in get_args(hint):
            ok, v = _type_ok(value, arm)
            if ok:
                return True, v
        return False, value
    if hint is float:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, int | float):
            return True, float(value)
        return False, value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is str:
        return isinstance(value, str), value
    if hint is dict or origin is dict:
        return isinstance(value, dict), value
    if hint is list or origin is list:
        return isinstance(value, list), value
    if hint is type(None):
        return value is None, value
    return isinstance(value, hint), value


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(hint))
    return getattr(hint, "__name__", str(hint))


def _from_dict(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{path}'{hint}; valid keys: {', '.join(names)}")
        hint_t = hints[key]
        if dataclasses.is_dataclass(hint_t):
            kwargs[key] = _from_dict(hint_t, value if value is not None else {}, path)
            continue
        ok, coerced = _type_ok(value, hint_t)
        if not ok:
            raise ConfigError(f"{path}: expected {_describe(hint_t)}, got {value!r}")
        kwargs[key] = coerced
    return cls(**kwargs)


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {dotted}: '{p}' is not a section")
        node = nxt
    node[parts[-1]] = value


def parse_overrides(overrides: Sequence[str]) -> dict:
    """``["optim.lr=0.01", "method.name=moco"]`` → nested dict (values parsed as YAML)."""
    data: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected KEY=VALUE, e.g. optim.lr=0.001")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{item}': value is not valid YAML") from exc
        _set_dotted(data, key.strip(), value)
    return data


def _merge(base: dict, patch: dict) -> dict:
    out = dict(base)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "options":
            out[k] = _merge(out[k], v)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def load_config(
    path: str | Path | None = None, overrides: Sequence[str] = (), base: dict | None = None
) -> Config:
    """Load a YAML config, apply overrides, validate everything.

    Args:
        path: YAML file (None = defaults only).
        overrides: ``section.key=value`` strings, applied after the file.
        base: Extra mapping applied before the file (e.g. programmatic defaults).

    Raises:
        ConfigError: Naming the file and field on any problem.
    """
    data: dict = dict(base or {})
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: invalid YAML ({str(exc).splitlines()[0]})") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        data = _merge(data, loaded)
    return _validated(_merge(data, parse_overrides(overrides)), path)


def _validated(data: dict, path: str | Path | None) -> Config:
    """``data`` as a checked :class:`Config`; errors name ``path`` when given."""
    try:
        cfg = _from_dict(Config, data, "")
        cfg.check()
    except ConfigError as exc:
        if path is not None:
            raise ConfigError(f"{path}: {exc}") from exc
        raise
    return cfg


def derive(cfg: Config, **overrides: Any) -> Config:
    """A validated copy of ``cfg`` with some fields replaced; the one way to change a config.

    Keys are dotted field paths, values Python values (not YAML text)::

        derive(cfg, **{"finetune.epochs": 5, "out": "runs/x"})

    The copy is checked exactly as :func:`load_config` checks a file and its overrides (an
    ``augment.options`` mapping is merged into the current options, as an override is), so a bad
    value is refused with the same message. ``cfg`` itself is not changed.

    Args:
        cfg: The config to start from.
        **overrides: ``section.key`` → new value.

    Returns:
        A new :class:`Config`.

    Raises:
        ConfigError: On an unknown key or a bad value, naming the field.
    """
    patch: dict = {}
    for key, value in overrides.items():
        _set_dotted(patch, key, value)
    return _validated(_merge(cfg.to_dict(), json.loads(json.dumps(patch))), None)


def precision_for(cfg: Config) -> str:
    """Lightning precision of a run (pretraining or fine-tuning).

    Args:
        cfg: The run config (``trainer.precision`` and ``trainer.accelerator``).

    Returns:
        ``trainer.precision``, or for ``auto``: ``bf16-mixed`` when CUDA is available and the
        accelerator may use it (``auto``, ``gpu``, ``cuda``), ``32-true`` otherwise.
    """
    if cfg.trainer.precision != "auto":
        return cfg.trainer.precision
    import torch  # here, so that reading a config does not load torch

    gpu = torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    return "bf16-mixed" if gpu else "32-true"


RESUMABLE_FIELDS = ("out", "data.num_workers", "trainer.monitor_every_n_epochs")
"""Fields that may differ between a run and its resumption."""


def _comparable(d: dict[str, Any]) -> dict[str, Any]:
    d = json.loads(json.dumps(d))
    for dotted in RESUMABLE_FIELDS:
        *parents, leaf = dotted.split(".")
        node = d
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return d


def check_resume(saved: str | Path, current: Config, refusal: str) -> None:
    """Refuse to continue in a folder whose saved ``config.yaml`` describes another run.

    The two configs are compared field by field, except :data:`RESUMABLE_FIELDS`. The saved file
    is read as :func:`load_config` reads one, so a field added to :class:`Config` since it was
    written counts as its default; a file that no longer loads is compared as it stands.

    Args:
        saved: The folder's saved config (nothing is checked when the file does not exist).
        current: The config of the run about to continue.
        refusal: The message of the error (what the folder holds and what to do instead).

    Raises:
        ConfigError: ``refusal``, when the configs differ.
    """
    p = Path(saved)
    if not p.is_file():
        return
    before = yaml.safe_load(p.read_text()) or {}
    try:
        before = _from_dict(Config, before, "").to_dict()
    except ConfigError:
        pass
    if _comparable(before) != _comparable(current.to_dict()):
        raise ConfigError(refusal)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML."""
    return write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), path)
