"""The schema of a run: one dataclass per config section, each with its ``check``.

:class:`Config` is the tree; its sections are :class:`DataConfig`, :class:`ModelConfig`,
:class:`AugmentConfig`, :class:`MethodConfig`, :class:`OptimConfig`, :class:`TrainerConfig`,
:class:`FinetuneConfig` and :class:`EfficiencyConfig`. A section's ``check(where)`` refuses a bad
value with one :class:`~medcl.errors.ConfigError` naming ``where.<field>``; it reads no file and no
hardware (what the machine can serve is :mod:`medcl.config.hardware`'s, what a pretraining
objective's options mean is the objective's: :mod:`medcl.train.objectives`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from medcl.config.checks import at_least, in_range, positive
from medcl.config.hardware import HardwareRules
from medcl.errors import ConfigError

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
        positive(self.image_size, f"{where}.image_size")
        if self.volume_mode not in ("resize", "patches"):
            raise ConfigError(
                f"{where}.volume_mode: 'resize' or 'patches', got {self.volume_mode!r}"
            )
        positive(self.patch_size, f"{where}.patch_size")
        positive(self.patches_per_volume, f"{where}.patches_per_volume")
        in_range(self.patch_overlap, "[0, 1)", f"{where}.patch_overlap")
        positive(self.batch_size, f"{where}.batch_size")
        positive(self.images_per_patient, f"{where}.images_per_patient")
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
        else:
            at_least(self.num_workers, 0, f"{where}.num_workers")
        if str(self.in_memory).lower() not in ("auto", "true", "false"):
            raise ConfigError(f"{where}.in_memory: auto, true or false, got {self.in_memory!r}")
        positive(self.memory_budget_mb, f"{where}.memory_budget_mb")
        if isinstance(self.labelled_share, str):
            if self.labelled_share != "auto":
                raise ConfigError(
                    f"{where}.labelled_share: a number in [0, 1] or 'auto', "
                    f"got {self.labelled_share!r}"
                )
        else:
            in_range(self.labelled_share, "[0, 1]", f"{where}.labelled_share")


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
        init: Weights on disk the encoder starts from, for pretraining and for fine-tuning from
            scratch (a fine-tuning from a pretraining run starts from that run's encoder): a
            torchvision/timm ResNet state dict, a MedicalNet 3-D ResNet, a MONAI bundle (or its
            ``models/model.pt``), or a medcl run or model folder (:mod:`medcl.models.init`).
            Relative paths are taken from the current folder; ``null`` = random start.
    """

    encoder: Encoder = "resnet18"
    stem: Literal["auto", "small", "standard"] = "auto"
    width: float = 1.0
    pool: Literal["avg", "avgmax"] = "avg"
    proj_dim: int = 128
    proj_hidden: int = 512
    init: str | None = None

    def check(self, where: str) -> None:
        if self.init is not None and not self.init.strip():
            raise ConfigError(f"{where}.init: a path to weights, or null (got an empty string)")
        positive(self.proj_dim, f"{where}.proj_dim")
        in_range(self.width, "(0, 4]", f"{where}.width")
        positive(self.proj_hidden, f"{where}.proj_hidden")


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
class PseudoLabelConfig:
    """Pseudo-labels in the SupCon term (``method.pseudo``; docs/objectives.md): an online linear
    head on the encoder features labels the confident unlabelled images of each batch, which then
    join SupCon as anchors and positives of their pseudo-class (off by default).

    Attributes:
        enabled: Pseudo-label the unlabelled images of each pretraining batch.
        threshold: Confidence ``τ_p``: an image is a candidate when the largest class probability
            of the head (averaged over its views) is at least this.
        start: Share of the optimiser steps without pseudo-labels.
        ramp: Share of the steps over which the share of the confident candidates that may be
            pseudo-labelled then grows linearly from 0 to 1 (0 = all at once).
        balance: Per-class cap: at most ``⌊n_c / N · M⌋`` pseudo-labels of class ``c`` per batch
            (``n_c / N`` its share of the labelled training images, ``M`` the allowed candidates),
            the most confident first; off: the ``M`` most confident, whatever their class.
        pool_patients: Average an image's prediction with those of the batch's other images of
            the same patient (needs ``method.group_positives``: a patient's images share a label).
        head_weight: Weight of the head's class-weighted cross-entropy on the labelled images in
            the loss.
        detach: The head reads detached encoder features, so its cross-entropy trains the head
            only and the representation is shaped by the contrastive terms alone; false lets it
            train the encoder too (supervised cross-entropy in the pretraining).
    """

    enabled: bool = False
    threshold: float = 0.9
    start: float = 0.2
    ramp: float = 0.3
    balance: bool = True
    pool_patients: bool = False
    head_weight: float = 1.0
    detach: bool = True

    def check(self, where: str) -> None:
        in_range(self.threshold, "[0, 1]", f"{where}.threshold")
        in_range(self.start, "[0, 1)", f"{where}.start")
        in_range(self.ramp, "[0, 1]", f"{where}.ramp")
        positive(self.head_weight, f"{where}.head_weight")


@dataclass
class MethodConfig:
    """The objective ``L = λ1·SupCon(labelled) + λ2·SSL(all)``; the SSL term's own options sit
    under ``options``, keyed by objective name.

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
        temperature: τ of the softmax over similarities (SupCon, NT-Xent, MoCo's InfoNCE).
        group_positives: Images of the same patient are positives (MICLe); they are never
            negatives either way.
        options: Each objective's own options, ``{objective name: {option: value}}``, e.g.
            ``{dino: {out_dim: 4096, student_temp: 0.1}}``; one is overridden with
            ``method.options.dino.out_dim=2048``. Every objective declares its options, their
            defaults and checks in its ``Options`` dataclass; :mod:`medcl.train.objectives` lists
            them. Several objectives' options may stand side by side (the label-efficiency
            experiment pretrains with several); a run reads those of ``name``. Loading checks the
            shape (a mapping per name); names and values are checked when the objective is
            resolved, before any work (:func:`medcl.train.objectives.check_objective_options`).
            Configs written before options moved here (``method.queue_size``, ``ema_base``,
            ``dino_*``, ``vicreg_*``) are read into them (:mod:`medcl.config.legacy`).
        pseudo: Pseudo-labels of confident unlabelled images in the SupCon term, for every
            objective (:class:`PseudoLabelConfig`; off by default).
    """

    name: str = "simclr"
    lambda_sup: float = 1.0
    lambda_ssl: float = 1.0
    lambda_sup_start: float = 0.0
    lambda_sup_warmup: float = 0.0
    temperature: float = 0.1
    group_positives: bool = False
    options: dict = field(default_factory=dict)
    pseudo: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)

    def check(self, where: str) -> None:
        if not self.name.isidentifier():
            raise ConfigError(
                f"{where}.name: an objective name (an identifier such as simclr or moco), "
                f"got {self.name!r}"
            )
        for k in ("lambda_sup", "lambda_ssl"):
            at_least(getattr(self, k), 0, f"{where}.{k}")
        in_range(self.lambda_sup_start, "[0, 1)", f"{where}.lambda_sup_start")
        in_range(self.lambda_sup_warmup, "[0, 1]", f"{where}.lambda_sup_warmup")
        if self.lambda_sup == 0 and self.lambda_ssl == 0:
            raise ConfigError(f"{where}: lambda_sup and lambda_ssl are both 0; nothing to learn")
        in_range(self.temperature, "(0, 10]", f"{where}.temperature")
        for name, opts in self.options.items():
            if not (isinstance(name, str) and name.isidentifier()):
                raise ConfigError(
                    f"{where}.options: keys are objective names (identifiers), got {name!r}"
                )
            if opts is not None and not isinstance(opts, dict):
                raise ConfigError(
                    f"{where}.options.{name}: expected a mapping of {name}'s options, got {opts!r}"
                )
        self.pseudo.check(f"{where}.pseudo")
        if self.pseudo.pool_patients and not self.group_positives:
            raise ConfigError(
                f"{where}.pseudo.pool_patients: pools the predictions of a patient's images, "
                f"which needs {where}.group_positives: true (a patient's images share a label)"
            )


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
        in_range(self.lr, "(0, 10)", f"{where}.lr")
        at_least(self.weight_decay, 0, f"{where}.weight_decay")
        positive(self.epochs, f"{where}.epochs")
        in_range(self.warmup_fraction, "[0, 1)", f"{where}.warmup_fraction")


LOGGERS: tuple[str, ...] = ("csv", "tensorboard", "mlflow")
"""The names ``trainer.logger`` accepts (:mod:`medcl.train.loggers` builds them)."""


@dataclass
class TrainerConfig(HardwareRules):
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

    The device readings (:meth:`device_request`, :meth:`device_count`, :meth:`uses_cuda`,
    :meth:`sync_batchnorm_on`) and :meth:`check_hardware` come from
    :class:`~medcl.config.hardware.HardwareRules`, which probes the machine once per process.
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
        positive(self.num_nodes, f"{where}.num_nodes")
        bad = [x for x in self.logger if x not in LOGGERS]
        if bad or len(set(self.logger)) != len(self.logger):
            raise ConfigError(
                f"{where}.logger: a list of distinct names from {', '.join(LOGGERS)}, "
                f"got {self.logger!r}"
            )
        positive(self.accumulate_grad_batches, f"{where}.accumulate_grad_batches")
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


@dataclass(frozen=True)
class OperatingPoint:
    """How a binary classifier's decision threshold is chosen on validation
    (``finetune.operating_point``; :mod:`medcl.evaluate.operating_point`).

    Written ``youden`` (maximise Youden's J = sensitivity + specificity − 1) or
    ``sensitivity=<s>`` (the highest threshold whose validation sensitivity is at least ``s``,
    ``0 < s ≤ 1``).

    Attributes:
        rule: ``youden`` or ``sensitivity``.
        target: The target sensitivity of ``sensitivity``; ``None`` for ``youden``.
    """

    rule: Literal["youden", "sensitivity"]
    target: float | None = None

    @classmethod
    def parse(cls, text: str, where: str = "finetune.operating_point") -> OperatingPoint:
        """The operating point written as ``text``.

        Raises:
            ConfigError: One line naming ``where`` when ``text`` is neither form.
        """
        spec = str(text).strip().replace(" ", "")
        if spec == "youden":
            return cls("youden")
        name, eq, value = spec.partition("=")
        target = None
        if name == "sensitivity" and eq:
            try:
                target = float(value)
            except ValueError:
                target = None
        if target is None or not 0.0 < target <= 1.0:
            raise ConfigError(
                f"{where}: 'youden' or 'sensitivity=<s>' with s in (0, 1], got {text!r}"
            )
        return cls("sensitivity", target)

    def __str__(self) -> str:
        return "youden" if self.rule == "youden" else f"sensitivity={self.target:g}"


@dataclass
class FinetuneConfig:
    """Few-label fine-tuning.

    Attributes:
        mode: ``linear`` (logistic regression on frozen embeddings), ``knn``, ``full``,
            ``fixmatch`` (full fine-tuning with FixMatch on the unlabelled training rows too), or
            ``selftrain`` (a full fine-tuning teacher pseudo-labels the unlabelled training rows,
            pooled by patient; a student is then fitted on labelled ∪ pseudo-labelled rows;
            :mod:`medcl.evaluate.selftrain`).
        epochs: Full fine-tuning and FixMatch: at most this many epochs, stopped early when the
            validation balanced accuracy has not improved for ``patience`` epochs.
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
        selftrain_threshold: Self-training: an unlabelled row gets the teacher's (pooled) label
            when its top probability is at least this.
        selftrain_pool: Self-training: ``patient`` (the teacher's mean prediction over a
            patient's unlabelled rows; a patient's true label covers its other rows) or
            ``image`` (each row's own).
        fixmatch_strong: FixMatch: augmentation option overrides of the strong view, merged over
            ``augment.options`` (checked against the preset before any work).
        fixmatch_weak: FixMatch: augmentation option overrides of the weak view, merged over the
            weak options derived from the strong view (geometry only).
        fixmatch_align: FixMatch: distribution alignment of the pseudo-label targets (ReMixMatch)
            to the labelled class frequencies.
        fixmatch_patients: FixMatch: unlabelled images come in runs of this many images of one
            patient, and each image's target is the mean weak prediction of its patient's images
            in the step (1 = single images, no pooling); ``fixmatch_mu × batch_size`` must be a
            multiple.
        fixmatch_weak_nograd: FixMatch: compute the weak views of the unlabelled images in a
            separate forward pass without gradient (cheaper; their batch-norm statistics are then
            their own instead of the whole step's).
        operating_point: Binary tasks: how the decision threshold on the positive class's
            probability (the second declared class) is chosen on the validation predictions,
            ``youden`` or ``sensitivity=<s>`` (:class:`OperatingPoint`); test sensitivity and
            specificity are read at that threshold. Ignored for more than two classes.
    """

    mode: Literal["linear", "knn", "full", "fixmatch", "selftrain"] = "full"
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
    selftrain_threshold: float = 0.8
    selftrain_pool: Literal["patient", "image"] = "patient"
    fixmatch_strong: dict = field(default_factory=dict)
    fixmatch_weak: dict = field(default_factory=dict)
    fixmatch_align: bool = False
    fixmatch_patients: int = 1
    fixmatch_weak_nograd: bool = False
    operating_point: str = "youden"

    @property
    def point(self) -> OperatingPoint:
        """The parsed :attr:`operating_point`."""
        return OperatingPoint.parse(self.operating_point)

    def check(self, where: str) -> None:
        OperatingPoint.parse(self.operating_point, f"{where}.operating_point")
        positive(self.epochs, f"{where}.epochs")
        in_range(self.lr, "(0, 10)", f"{where}.lr")
        at_least(self.encoder_lr_mult, 0, f"{where}.encoder_lr_mult")
        positive(self.knn_k, f"{where}.knn_k")
        positive(self.batch_size, f"{where}.batch_size")
        positive(self.fixmatch_mu, f"{where}.fixmatch_mu")
        at_least(self.weight_decay, 0, f"{where}.weight_decay")
        in_range(self.warmup_fraction, "[0, 1)", f"{where}.warmup_fraction")
        at_least(self.epoch_steps, 0, f"{where}.epoch_steps")
        in_range(self.fixmatch_threshold, "[0, 1]", f"{where}.fixmatch_threshold")
        if self.fixmatch_lambda_u < 0:
            raise ConfigError(f"{where}.fixmatch_lambda_u: must be ≥ 0")
        in_range(self.selftrain_threshold, "[0, 1]", f"{where}.selftrain_threshold")
        positive(self.fixmatch_patients, f"{where}.fixmatch_patients")
        if (self.fixmatch_mu * self.batch_size) % self.fixmatch_patients:
            raise ConfigError(
                f"{where}.fixmatch_patients: must divide the unlabelled images of a step, "
                f"fixmatch_mu × batch_size = {self.fixmatch_mu * self.batch_size}; got "
                f"{self.fixmatch_patients}"
            )


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
            ``vicreg`` (SSL only with that pretraining objective, its ``method.options.dino`` /
            ``method.options.vicreg``), ``sscl`` (SupCon on the labelled subset + SSL),
            ``sscl+pseudo`` (SSCL with pseudo-labels, ``method.pseudo``), each fine-tuned with
            ``finetune.mode``, and ``sscl+fixmatch`` (SSCL pretraining, then FixMatch
            fine-tuning).
        linear_probe: Also fit a linear probe on each pretrained encoder.
        n_boot: Patient-bootstrap replicates for the test intervals.
        metric: Headline metric of the report, the plot and the paired differences: ``auto``
            is ``auroc`` (the positive class's AUROC) for a binary task, ``macro_auroc`` (over
            the findings) for a multi-label task and ``balanced_accuracy`` otherwise; ``auroc``
            needs a binary task, a multi-label task takes ``macro_auroc`` only.
        specificity: Multi-label tasks: the specificity at which each finding's test
            sensitivity is read on its ROC curve (in ``[0, 1]``).
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
    metric: Literal["auto", "auroc", "balanced_accuracy", "accuracy", "macro_auroc", "macro_f1"] = (
        "auto"
    )
    specificity: float = 0.9
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
        at_least(self.n_boot, 0, f"{where}.n_boot")
        if not (
            isinstance(self.specificity, int | float)
            and not isinstance(self.specificity, bool)
            and 0.0 <= self.specificity <= 1.0
        ):
            raise ConfigError(f"{where}.specificity: a number in [0, 1], got {self.specificity!r}")


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
