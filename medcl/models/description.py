"""What a saved model says about itself: typed records behind ``encoder.pt``'s meta and a
classifier's ``metadata.json``.

- :class:`EncoderDescription`: a pretrained encoder (the ``meta`` of ``encoder.pt``, also in the
  run's ``run.json``): its architecture, the input convention it was trained with (modality,
  augmentation preset, CT window, 3-D patch geometry), the manifest's classes and the pretraining
  objective.
- :class:`ModelDescription`: a classifier (``model/metadata.json``; ``configs/medcl_metadata.json``
  in a bundle): the same input convention, plus its head, how it was fine-tuned, what it was
  trained on (:mod:`medcl.evaluate.ood`), its test metrics and the library versions.

Both are written with the JSON keys of the dicts that came before them, so that files written by
earlier versions load: a key a file lacks takes its default (the key did not exist then), a key
this version does not know is kept in ``extra`` and written back as it was. The architecture is
:class:`~medcl.models.encoders.EncoderSpec`'s entries (``architecture``, ``spatial_dims``,
``image_size``; :meth:`~medcl.models.encoders.EncoderSpec.from_meta` also reads the previous
layouts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medcl.models.encoders import EncoderSpec

INTENSITY = (
    "CT: Hounsfield units windowed to [0, 1] (level/width in 'window'); "
    "other modalities: 0.5/99.5 percentiles scaled to [0, 1]"
)
"""The ``intensity`` note of a classifier's metadata
(:func:`medcl.transforms.to_model_intensity`)."""

TEST_METRICS = ("accuracy", "balanced_accuracy", "macro_auroc", "macro_f1", "ece", "intervals")
"""The test metrics a classifier's metadata records (:meth:`ModelDescription.record_test`)."""

BINARY_TEST_METRICS = ("auroc", "auroc_ci", "threshold", "sensitivity", "specificity")
BINARY_TEST_METRICS += ("sensitivity_ci", "specificity_ci")
"""Also recorded for a binary classifier, when the evaluation has them."""

_SPEC_KEYS = ("architecture", "spatial_dims", "image_size")
_SPEC_KEYS += ("encoder", "stem", "width", "pool", "in_channels")
"""Keys :meth:`EncoderSpec.from_meta` reads (the last five: the previous, flat layout)."""


def _mapping(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


def _window(value: Any) -> tuple[float, float]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ValueError(f"model metadata field 'window': expected [level, width], got {value!r}")
    return (float(value[0]), float(value[1]))


@dataclass(frozen=True)
class VolumeGeometry:
    """The ``volume`` entry of a model trained on 3-D patches.

    Attributes:
        patch_size: Edge of the cubic patches (``data.patch_size``), also the encoder's
            ``image_size``.
        overlap: Overlap of the grid that inference aggregates over (``data.patch_overlap``).
        patches_per_volume: Patches drawn per volume in training (provenance).
        in_plane_size: The stored in-plane edge shared by every training volume (the ``medcl
            ingest --size`` they were cached at, which prediction re-uses so that a voxel means
            the same), or ``None`` when they differ (prediction then keeps the source size).
    """

    patch_size: int
    overlap: float
    patches_per_volume: int | None = None
    in_plane_size: int | None = None

    @classmethod
    def for_training(
        cls,
        patch_size: int,
        overlap: float,
        patches_per_volume: int,
        shapes: Sequence[Sequence[int]],
    ) -> VolumeGeometry:
        """The geometry of a patch model trained on volumes of stored shapes ``shapes``
        (``(D, H, W)`` each): ``in_plane_size`` is their common square in-plane edge, if any."""
        planes = {(int(s[-2]), int(s[-1])) for s in shapes}
        in_plane = None
        if len(planes) == 1:
            h, w = next(iter(planes))
            in_plane = h if h == w else None
        return cls(int(patch_size), float(overlap), int(patches_per_volume), in_plane)

    def to_dict(self) -> dict[str, Any]:
        """``{"mode": "patches", "patch_size", "overlap", "patches_per_volume",
        "in_plane_size"}``."""
        return {
            "mode": "patches",
            "patch_size": self.patch_size,
            "overlap": self.overlap,
            "patches_per_volume": self.patches_per_volume,
            "in_plane_size": self.in_plane_size,
        }

    @classmethod
    def from_dict(cls, data: Any) -> VolumeGeometry | None:
        """The geometry of a ``volume`` entry, or ``None`` unless its ``mode`` is ``patches``."""
        if not isinstance(data, Mapping) or data.get("mode") != "patches":
            return None
        ppv, in_plane = data.get("patches_per_volume"), data.get("in_plane_size")
        return cls(
            int(data["patch_size"]),
            float(data["overlap"]),
            None if ppv is None else int(ppv),
            None if in_plane is None else int(in_plane),
        )


@dataclass(frozen=True)
class EncoderPretraining:
    """How an encoder was pretrained: the objective and the weights λ1 (supervised contrastive
    term) and λ2 (self-supervised term); ``None`` where the file does not say."""

    method: str | None = None
    lambda_sup: float | None = None
    lambda_ssl: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"method", "lambda_sup", "lambda_ssl"}``."""
        return {"method": self.method, "lambda_sup": self.lambda_sup, "lambda_ssl": self.lambda_ssl}

    @classmethod
    def from_dict(cls, data: Any) -> EncoderPretraining | None:
        """The record of a mapping with those keys (missing ones ``None``); ``None`` for no
        mapping or an empty one (a model trained from scratch)."""
        if not isinstance(data, Mapping) or not data:
            return None
        return cls(data.get("method"), data.get("lambda_sup"), data.get("lambda_ssl"))


@dataclass
class EncoderDescription:
    """A pretrained encoder's description (``encoder.pt``'s ``meta``).

    Attributes:
        spec: The architecture.
        modality: The manifest's modality.
        preset: The augmentation preset it was trained with (also its intensity mapping).
        window: The preset's CT window ``(level, width)`` in HU.
        pretraining: The objective and its weights (flat ``method``, ``lambda_sup``,
            ``lambda_ssl`` keys in the file).
        classes: The manifest's classes.
        volume: The patch geometry of a 3-D patch encoder, else ``None``.
        extra: Keys of the file this version does not know, kept as they are.
    """

    spec: EncoderSpec
    modality: str | None = None
    preset: str | None = None
    window: tuple[float, float] | None = None
    pretraining: EncoderPretraining = field(default_factory=EncoderPretraining)
    classes: list[str] = field(default_factory=list)
    volume: VolumeGeometry | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_meta(self) -> dict[str, Any]:
        """The meta saved with the weights (plain types, ``torch.save``- and JSON-safe)."""
        out: dict[str, Any] = {
            **self.spec.to_meta(),
            "modality": self.modality,
            "preset": self.preset,
            "window": None if self.window is None else list(self.window),
            **self.pretraining.to_dict(),
            "classes": list(self.classes),
        }
        if self.volume is not None:
            out["volume"] = self.volume.to_dict()
        return {**out, **self.extra}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> EncoderDescription:
        """The description of a saved meta, this format or the previous (flat) one.

        Raises:
            ValueError: One line naming a missing or bad architecture field.
        """
        known = {*_SPEC_KEYS, "modality", "preset", "window", "classes", "volume"}
        known |= {"method", "lambda_sup", "lambda_ssl"}
        window = meta.get("window")
        return cls(
            spec=EncoderSpec.from_meta(meta),
            modality=meta.get("modality"),
            preset=meta.get("preset"),
            window=None if window is None else _window(window),
            pretraining=EncoderPretraining(
                meta.get("method"), meta.get("lambda_sup"), meta.get("lambda_ssl")
            ),
            classes=[str(c) for c in meta.get("classes") or []],
            volume=VolumeGeometry.from_dict(meta.get("volume")),
            extra={k: v for k, v in meta.items() if k not in known},
        )


@dataclass
class FinetuneSummary:
    """How a classifier was fitted (``finetune`` in its metadata).

    Attributes:
        mode: ``linear``, ``knn``, ``full`` or ``fixmatch``.
        val_balanced_accuracy: The validation score it was selected on.
        details: The mode's own figures (``C``; ``k``; ``epochs_run``, ``steps``; FixMatch's
            ``steps``, ``mask_rate``, ``mu``, ``threshold``, ``lambda_u``, ``best_step``), stored
            at the top level of the entry.
        train_labelled_images: Labelled training images.
        train_labelled_patients: Their patients.
        class_counts: Labelled training images per class (multi-label: the labelled training
            images where each finding is present).
        val_macro_auroc: A multi-label classifier's validation macro AUROC, the score it was
            selected on (its ``val_balanced_accuracy`` is then ``None``); ``None`` otherwise.
    """

    mode: str | None = None
    val_balanced_accuracy: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    train_labelled_images: int | None = None
    train_labelled_patients: int | None = None
    class_counts: dict[str, int] | None = None
    val_macro_auroc: float | None = None

    _KEYS = ("mode", "val_balanced_accuracy")
    _COUNTS = ("train_labelled_images", "train_labelled_patients", "class_counts")

    @property
    def val_score(self) -> float | None:
        """The validation score the model was selected on: macro AUROC (multi-label) or
        balanced accuracy."""
        return self.val_balanced_accuracy if self.val_macro_auroc is None else self.val_macro_auroc

    def to_dict(self) -> dict[str, Any]:
        """The entry: ``mode``, ``val_balanced_accuracy`` (and a multi-label model's
        ``val_macro_auroc``), the details, then the counts."""
        head = {k: getattr(self, k) for k in self._KEYS}
        if self.val_macro_auroc is not None:
            head["val_macro_auroc"] = self.val_macro_auroc
        counts = {k: getattr(self, k) for k in self._COUNTS if getattr(self, k) is not None}
        return {**head, **self.details, **counts}

    @classmethod
    def from_dict(cls, data: Any) -> FinetuneSummary | None:
        """The summary of an entry (its unknown keys are the details); ``None`` for none."""
        if not isinstance(data, Mapping):
            return None
        named = {k: data.get(k) for k in (*cls._KEYS, *cls._COUNTS, "val_macro_auroc")}
        details = {k: v for k, v in data.items() if k not in named}
        return cls(details=details, **named)


@dataclass
class ModelDescription:
    """A classifier's description: architecture, input convention, head, provenance, results.

    Saved as ``metadata.json`` (:meth:`to_dict`); every field is one of its keys (``spec`` three).

    Attributes:
        spec: The encoder's architecture (``architecture``, ``spatial_dims``, ``image_size``).
        classes: Class names, in the order of the logits (a multi-label model: its findings).
        modality: The training manifest's modality.
        preset: The intensity preset (``ct``, ``mr``, ``xr``): how stored images are mapped to
            [0, 1] (:func:`medcl.transforms.to_model_intensity`).
        window: CT ``(level, width)`` in HU of that mapping.
        intensity: A sentence saying the same for a reader of the file.
        pretraining: How the encoder was pretrained; ``None``: trained from scratch (or a random
            encoder probed).
        init: The name of the weights file the encoder started from when it was not pretrained
            here (``model.init``, :mod:`medcl.models.init`); ``None``: a random start.
        volume: A 3-D patch model's grid geometry; ``None`` for whole-image models.
        task: ``multiclass`` (one class per image, softmax over the logits) or ``multilabel``
            (one sigmoid per finding, :attr:`classes` the findings); written to the file only
            for ``multilabel`` (a file without it is a single-label model).
        head: ``linear``, ``knn`` or ``linear (<mode> fine-tuning)``.
        finetune: How it was fitted.
        operating_point: A binary classifier's decision threshold, chosen on validation
            (:func:`medcl.evaluate.operating_point.threshold_record`: ``positive_class``,
            ``rule``, ``threshold``, ``val_sensitivity``, ``val_specificity``, ``val_auroc``);
            ``None`` for more classes or a model saved before it existed.
        finding_thresholds: A multi-label classifier's decision thresholds, one per finding,
            chosen on that finding's known validation values
            (:func:`medcl.evaluate.finetune.finding_operating_points`): ``{"rule",
            "val_macro_auroc", "findings": {name: threshold record}}`` (the record of
            :func:`~medcl.evaluate.operating_point.threshold_record`, ``positive_class`` the
            finding); ``None`` otherwise.
        training_distribution: What it was trained on, checked at prediction (the record of
            :func:`medcl.evaluate.ood.describe_training`).
        name: A display name.
        test_metrics: Test metrics (:data:`TEST_METRICS`) once evaluated.
        training_data: A summary of the training data (free-form key → value lines).
        versions: Library versions at save time.
        extra: Keys this version does not know, written back as they were.
    """

    spec: EncoderSpec
    classes: list[str]
    preset: str
    window: tuple[float, float]
    modality: str = ""
    intensity: str = ""
    pretraining: EncoderPretraining | None = None
    init: str | None = None
    volume: VolumeGeometry | None = None
    task: str = "multiclass"
    head: str | None = None
    finetune: FinetuneSummary | None = None
    operating_point: dict[str, Any] | None = None
    finding_thresholds: dict[str, Any] | None = None
    training_distribution: dict[str, Any] | None = None
    name: str | None = None
    test_metrics: dict[str, Any] | None = None
    training_data: dict[str, Any] | None = None
    versions: dict[str, str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return self.spec.spatial_dims

    @property
    def multilabel(self) -> bool:
        """Whether the model predicts a set of findings (one sigmoid each)."""
        return self.task == "multilabel"

    @property
    def image_size(self) -> int:
        """The encoder's input edge in pixels (a patch model: the patch edge)."""
        return self.spec.image_size

    def record_test(self, metrics: Mapping[str, Any]) -> None:
        """Keep the :data:`TEST_METRICS` (and a binary model's :data:`BINARY_TEST_METRICS`) of a
        test-split evaluation in ``test_metrics``."""
        self.test_metrics = {k: metrics.get(k) for k in TEST_METRICS}
        self.test_metrics.update({k: metrics[k] for k in BINARY_TEST_METRICS if k in metrics})

    def to_dict(self) -> dict[str, Any]:
        """The ``metadata.json`` object (optional entries only when set; ``pretraining`` always,
        ``null`` for none)."""
        out: dict[str, Any] = {
            "classes": list(self.classes),
            **self.spec.to_meta(),
            "modality": self.modality,
            "preset": self.preset,
            "window": list(self.window),
            "intensity": self.intensity,
            "pretraining": None if self.pretraining is None else self.pretraining.to_dict(),
        }
        if self.multilabel:
            out["task"] = self.task
        optional = {
            "init": self.init,
            "volume": None if self.volume is None else self.volume.to_dict(),
            "head": self.head,
            "finetune": None if self.finetune is None else self.finetune.to_dict(),
            "operating_point": self.operating_point,
            "finding_thresholds": self.finding_thresholds,
            "training_distribution": self.training_distribution,
            "name": self.name,
            "test_metrics": self.test_metrics,
            "training_data": self.training_data,
            "versions": self.versions,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelDescription:
        """The description of a ``metadata.json`` object, this format or an earlier one.

        Raises:
            ValueError: One line naming a missing or bad field (``classes``, ``preset``,
                ``window`` and the architecture are required).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"model metadata: expected an object, got {type(data).__name__}")
        for key in ("classes", "preset", "window"):
            if key not in data:
                raise ValueError(f"model metadata field {key!r}: missing")
        names = ("operating_point", "training_distribution", "test_metrics", "training_data")
        names += ("versions", "finding_thresholds")
        maps = {k: _mapping(data.get(k)) for k in names}
        known = {*_SPEC_KEYS, *maps, "classes", "preset", "window", "modality", "intensity"}
        known |= {"pretraining", "init", "volume", "head", "finetune", "name", "task"}
        name, head, init = data.get("name"), data.get("head"), data.get("init")
        return cls(
            spec=EncoderSpec.from_meta(data),
            classes=[str(c) for c in data["classes"]],
            preset=str(data["preset"]),
            window=_window(data["window"]),
            modality=str(data.get("modality") or ""),
            intensity=str(data.get("intensity") or ""),
            pretraining=EncoderPretraining.from_dict(data.get("pretraining")),
            init=None if init is None else str(init),
            volume=VolumeGeometry.from_dict(data.get("volume")),
            task=str(data.get("task") or "multiclass"),
            head=None if head is None else str(head),
            finetune=FinetuneSummary.from_dict(data.get("finetune")),
            name=None if name is None else str(name),
            extra={k: v for k, v in data.items() if k not in known},
            **maps,
        )
