"""MONAI ResNet encoders for one-channel 2-D or 3-D medical images.

The encoder maps ``(B, 1, H, W)`` (or ``(B, 1, D, H, W)``) to a ``(B, F)`` feature vector after
global
average pooling; the classification layer of :class:`monai.networks.nets.ResNet` is not built
(``feed_forward=False``). Input channels are handled here, once.

Stem: ImageNet's 7×7 stride-2 convolution + max-pool divides the resolution by 4 at once, which
throws away much of a 64×64 image. The ``small`` stem is a 3×3 stride-2 convolution without the
max-pool (resolution /2, as MONAI's default stride-1 stem + max-pool, but with a 3×3 kernel on the
half-resolution grid instead of a 7×7 kernel on the full one). Small findings keep a few pixels at
``layer1``; for speed on CPUs, lower ``width`` (GUIDE §5).
"""

from __future__ import annotations

from typing import Literal

import torch
from monai.networks.nets import ResNet
from torch import nn

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


def build_encoder(
    name: str = "resnet18",
    spatial_dims: int = 2,
    in_channels: int = 1,
    stem: Literal["auto", "small", "standard"] = "auto",
    image_size: int = 64,
    width: float = 1.0,
    pool: Literal["avg", "avgmax"] = "avg",
) -> nn.Module:
    """A MONAI ResNet returning pooled features.

    Args:
        name: One of :data:`ENCODERS`.
        spatial_dims: 2 or 3.
        in_channels: Input channels (1 for grey-level medical images).
        stem: ``small``, ``standard`` or ``auto`` (small below 128 px).
        image_size: Used by ``auto`` to choose the stem.
        width: Channel multiplier of every stage (0.5 halves the widths; ~4× fewer FLOPs).
        pool: ``avg`` (global average) or ``avgmax`` (average and max concatenated).

    Returns:
        A module with attribute ``out_dim``; forward gives ``(B, out_dim)``.

    Raises:
        ValueError: On an unknown name or spatial_dims outside {2, 3}.
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose from {', '.join(ENCODERS)}")
    if not 0 < width <= 4:
        raise ValueError(f"width must be in (0, 4], got {width}")
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if stem == "auto":
        stem = "small" if image_size < 128 else "standard"
    block, layers = ENCODERS[name]
    small = stem == "small"
    net = ResNet(
        block=block,
        layers=layers,
        block_inplanes=[int(w * width) for w in _WIDTHS],
        spatial_dims=spatial_dims,
        n_input_channels=in_channels,
        conv1_t_size=3 if small else 7,
        conv1_t_stride=2,
        no_max_pool=small,
        feed_forward=False,
        num_classes=1,
    )
    if pool == "avgmax":
        net.avgpool = AvgMaxPool()
    elif pool != "avg":
        raise ValueError(f"pool must be 'avg' or 'avgmax', got {pool!r}")
    net.out_dim = encoder_dim(name, width, pool)  # type: ignore[assignment]
    return net
