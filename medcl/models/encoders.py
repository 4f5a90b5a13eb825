"""MONAI ResNet encoders for one-channel 2-D or 3-D medical images, each described by a spec.

The encoder maps ``(B, 1, H, W)`` (or ``(B, 1, D, H, W)``) to a ``(B, F)`` feature vector after
global average pooling; the classification layer of :class:`monai.networks.nets.ResNet` is not built
(``feed_forward=False``). Input channels are handled here, once.

An :class:`EncoderSpec` holds every field that defines the network and :func:`build_encoder` builds
it. The spec is saved with the weights (``architecture`` in ``encoder.pt`` and ``metadata.json``,
see :meth:`EncoderSpec.to_meta`), so that either file rebuilds the same network.

Stem: ImageNet's 7×7 stride-2 convolution + max-pool divides the resolution by 4 at once, which
throws away much of a 64×64 image. The ``small`` stem is a 3×3 stride-2 convolution without the
max-pool (resolution /2, as MONAI's default stride-1 stem + max-pool, but with a 3×3 kernel on the
half-resolution grid instead of a 7×7 kernel on the full one). Small findings keep a few pixels at
``layer1``; for speed on CPUs, lower ``width`` (docs/scale.md; ``benchmarks/pretrain_bench.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from monai.networks.nets import ResNet
from torch import nn

if TYPE_CHECKING:
    from medcl.config import Config

# name -> (block, layers)
ENCODERS: dict[str, tuple[str, list[int]]] = {
    "resnet10": ("basic", [1, 1, 1, 1]),
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
}
_WIDTHS = [64, 128, 256, 512]


def encoder_dim(name: str, width: float = 1.0, pool: str = "avg") -> int:
    """Feature size of ``name``: 512·width for basic-block ResNets, 2048·width for ResNet-50,
    twice that with ``avgmax`` pooling."""
    block, _ = ENCODERS[name]
    base = int(_WIDTHS[-1] * width) * (4 if block == "bottleneck" else 1)
    return base * (2 if pool == "avgmax" else 1)


class AvgMaxPool(nn.Module):
    """Global average and max pooling, concatenated: ``(B, C, *S) → (B, 2C, 1, …)``.

    Average pooling dilutes a finding of a few pixels over the whole image; the max keeps it
    (used for small lesions, e.g. by Irvin et al. 2019 among others)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool every spatial axis."""
        dims = tuple(range(2, x.ndim))
        avg = x.mean(dim=dims, keepdim=True)
        mx = x.amax(dim=dims, keepdim=True)
        return torch.cat([avg, mx], dim=1)


STEMS = ("auto", "small", "standard")
POOLS = ("avg", "avgmax")

_LEGACY_DEFAULTS: dict[str, Any] = {"in_channels": 1, "width": 1.0, "pool": "avg"}
"""What readers of the previous file format assumed for fields it did not always record."""


def _spec_error(field: str, problem: str) -> ValueError:
    return ValueError(f"encoder spec field {field!r}: {problem}")


@dataclass(frozen=True)
class EncoderSpec:
    """Everything that defines an encoder network (not its weights).

    Attributes:
        encoder: One of :data:`ENCODERS`.
        spatial_dims: 2 or 3.
        image_size: In-plane input size; ``stem="auto"`` chooses from it.
        in_channels: Input channels (1 for grey-level medical images).
        stem: ``small``, ``standard`` or ``auto`` (small below 128 px).
        width: Channel multiplier of every stage (0.5 halves the widths; ~4× fewer FLOPs).
        pool: ``avg`` (global average) or ``avgmax`` (average and max concatenated).

    Raises:
        ValueError: On a bad value, naming the field (one line).
    """

    encoder: str
    spatial_dims: int
    image_size: int
    in_channels: int = 1
    stem: str = "auto"
    width: float = 1.0
    pool: str = "avg"

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise _spec_error(
                "encoder", f"unknown encoder {self.encoder!r}; choose from {', '.join(ENCODERS)}"
            )
        for name in ("spatial_dims", "image_size", "in_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _spec_error(name, f"must be a positive integer, got {value!r}")
        if self.spatial_dims not in (2, 3):
            raise _spec_error("spatial_dims", f"must be 2 or 3, got {self.spatial_dims}")
        if self.stem not in STEMS:
            raise _spec_error("stem", f"one of {', '.join(STEMS)}; got {self.stem!r}")
        if isinstance(self.width, bool) or not isinstance(self.width, int | float):
            raise _spec_error("width", f"must be a number, got {self.width!r}")
        if not 0 < self.width <= 4:
            raise _spec_error("width", f"must be in (0, 4], got {self.width}")
        if self.pool not in POOLS:
            raise _spec_error("pool", f"one of {', '.join(POOLS)}; got {self.pool!r}")

    @classmethod
    def from_config(cls, cfg: Config, spatial_dims: int) -> EncoderSpec:
        """The encoder of a run config (``model`` section and ``data.image_size``).

        Args:
            cfg: The run config.
            spatial_dims: 2 or 3 (from the manifest).

        Returns:
            The spec.
        """
        m = cfg.model
        return cls(
            encoder=m.encoder,
            spatial_dims=spatial_dims,
            image_size=cfg.data.image_size,
            in_channels=1,
            stem=m.stem,
            width=m.width,
            pool=m.pool,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (JSON- and ``torch.save``-safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EncoderSpec:
        """The spec written by :meth:`to_dict`; every field is required.

        Raises:
            ValueError: One line naming the first missing, unknown or bad field.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"encoder spec: expected a mapping, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        for name in names:
            if name not in data:
                raise _spec_error(name, "missing")
        for key in data:
            if key not in names:
                raise _spec_error(str(key), f"unknown; the fields are {', '.join(names)}")
        return cls(**{name: data[name] for name in names})

    def to_meta(self) -> dict[str, Any]:
        """The spec's entries in ``encoder.pt``'s meta and ``metadata.json``: ``architecture``
        (:meth:`to_dict`), and ``spatial_dims`` and ``image_size`` copied to the top level, where
        the readers of the input convention (evaluation, embedding, the app) look for them."""
        return {
            "architecture": self.to_dict(),
            "spatial_dims": self.spatial_dims,
            "image_size": self.image_size,
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> EncoderSpec:
        """The spec recorded in ``encoder.pt``'s meta or ``metadata.json``, in this format or the
        previous one.

        This format has the whole spec under ``architecture`` (:meth:`to_meta`). The previous one
        kept the fields flat (``encoder.pt``: ``encoder``, ``stem``, ``width``, ``pool``,
        ``spatial_dims``, ``image_size``) or split (``metadata.json``: ``architecture`` without
        the geometry, which sat at the top level), sometimes without ``width`` or ``pool``; those
        read as 1.0 and ``avg``, as they did then.

        Raises:
            ValueError: One line naming a missing or bad field.
        """
        arch = meta.get("architecture")
        if isinstance(arch, Mapping) and "spatial_dims" in arch:
            return cls.from_dict(arch)
        names = [f.name for f in dataclasses.fields(cls)]
        old = {**_LEGACY_DEFAULTS, **{k: meta[k] for k in names if k in meta}}
        if isinstance(arch, Mapping):
            old.update(arch)
        return cls.from_dict(old)


def build_encoder(spec: EncoderSpec) -> nn.Module:
    """The MONAI ResNet of ``spec``, returning pooled features.

    Args:
        spec: The architecture.

    Returns:
        A module with attributes ``out_dim`` (forward gives ``(B, out_dim)``) and ``spec``.
    """
    stem = spec.stem
    if stem == "auto":
        stem = "small" if spec.image_size < 128 else "standard"
    block, layers = ENCODERS[spec.encoder]
    small = stem == "small"
    net = ResNet(
        block=block,
        layers=layers,
        block_inplanes=[int(w * spec.width) for w in _WIDTHS],
        spatial_dims=spec.spatial_dims,
        n_input_channels=spec.in_channels,
        conv1_t_size=3 if small else 7,
        conv1_t_stride=2,
        no_max_pool=small,
        feed_forward=False,
        num_classes=1,
    )
    if spec.pool == "avgmax":
        net.avgpool = AvgMaxPool()
    net.out_dim = encoder_dim(spec.encoder, spec.width, spec.pool)  # type: ignore[assignment]
    net.spec = spec  # type: ignore[assignment]
    return net
