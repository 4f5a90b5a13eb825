"""Named, modality-specific augmentation presets (why each change: docs/augmentation.md).

========  ===================================================================================
preset    what it does (defaults in :mod:`medcl.transforms.options`)
========  ===================================================================================
``ct``    HU window/level jitter to [0, 1] (40/400 +- 20 HU, +- 15 % width); small affine; mild
          resized crop; gamma and contrast after windowing; mild blur; Gaussian noise;
          per-sample: anisotropy (low-resolution simulation). No bias field, no Rician noise.
``mr``    clamp to [0, 1]; small affine; mild resized crop; bias field; gamma; contrast; mild
          blur; Gaussian and Rician noise; per-sample (low probability): k-space motion,
          ghosting, spike, anisotropy.
``xr``    clamp to [0, 1]; small affine; mild resized crop; mild bias field; gamma; contrast;
          mild blur; Gaussian noise. No per-sample part.
========  ===================================================================================

No preset has colour jitter or random grayscale, and left-right flips are off unless
``flip_lr=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medcl.errors import ConfigError
from medcl.transforms.artifacts import PerSampleAugment
from medcl.transforms.batched import BatchAugment
from medcl.transforms.intensity import DEFAULT_CT_WINDOW, to_model_intensity
from medcl.transforms.options import AugmentOptions, CTOptions, make_options

PRESETS: tuple[str, ...] = ("ct", "mr", "xr")


@dataclass(frozen=True)
class AugmentPreset:
    """A built preset: a per-sample part for loader workers and a batched part for the device.

    Attributes:
        name: ``"ct"``, ``"mr"`` or ``"xr"`` (also the modality).
        dims: 2 (inputs ``(1, H, W)``) or 3 (inputs ``(1, D, H, W)``).
        options: The validated options.
        per_sample: torchio artifacts for one CPU tensor in stored units, or ``None`` when the
            preset has none enabled (then there is nothing to do in the loader).
        batched: Device module for ``(B, 1, ...)`` batches in stored units -> [0, 1].
    """

    name: str
    dims: int
    options: AugmentOptions
    per_sample: PerSampleAugment | None
    batched: BatchAugment

    @property
    def window(self) -> tuple[float, float]:
        """CT ``(level, width)`` in HU used by :meth:`normalize` (the default for MR/X-ray)."""
        o = self.options
        if isinstance(o, CTOptions):
            return (o.window_level_hu, o.window_width_hu)
        return DEFAULT_CT_WINDOW

    def normalize(self, x: Tensor | np.ndarray) -> Tensor | np.ndarray:
        """Deterministic mapping to [0, 1] for evaluation (no augmentation), see
        :func:`~medcl.transforms.to_model_intensity`."""
        return to_model_intensity(x, self.name, self.window)

    def sample_views(self, x: Tensor, n_views: int, seed: int | None = None) -> Tensor:
        """Loader-side views of one image: ``per_sample`` applied ``n_views`` times independently.

        Call this in ``Dataset.__getitem__``; the collated batch ``(B, V, 1, ...)`` then goes to
        :class:`~medcl.transforms.MultiViewAugment` on the device.

        Args:
            x: One image, ``(1, H, W)`` or ``(1, D, H, W)``, stored units, on the CPU.
            n_views: Number of views V (>= 1).
            seed: Optional seed for reproducible draws (view ``v`` uses ``seed + v``).

        Returns:
            ``(V, 1, ...)`` float32 tensor (copies of ``x`` when ``per_sample`` is ``None``).
        """
        if n_views < 1:
            raise ConfigError(f"n_views must be >= 1, got {n_views}")
        x = torch.as_tensor(x, dtype=torch.float32)
        if self.per_sample is None:
            return x.unsqueeze(0).repeat(n_views, *([1] * x.ndim))
        views = [self.per_sample(x, None if seed is None else seed + v) for v in range(n_views)]
        return torch.stack(views)


def build_preset(
    name: str, overrides: Mapping[str, Any] | AugmentOptions | None = None, dims: int = 2
) -> AugmentPreset:
    """Build a named preset.

    Args:
        name: One of :data:`PRESETS` (case-insensitive).
        overrides: Option name -> value (validated), or a ready options dataclass of the modality.
        dims: 2 for images, 3 for volumes.

    Returns:
        The preset.

    Raises:
        ConfigError: Unknown preset, unknown option name, invalid value, or ``dims`` not 2 or 3.
    """
    key = str(name).lower()
    if key not in PRESETS:
        raise ConfigError(f"unknown augmentation preset {name!r}; expected one of {list(PRESETS)}")
    if dims not in (2, 3):
        raise ConfigError(f"augmentation dims must be 2 or 3, got {dims!r}")
    if isinstance(overrides, Mapping) or overrides is None:
        options = make_options(key, overrides)
    else:
        options = overrides
        if type(options) is not type(make_options(key)):
            raise ConfigError(
                f"options of type {type(options).__name__} do not match preset {key!r}"
            )
    per_sample = PerSampleAugment(options, dims)
    return AugmentPreset(
        name=key,
        dims=dims,
        options=options,
        per_sample=per_sample if per_sample else None,
        batched=BatchAugment(key, options, dims),
    )


def preset_for_modality(modality: str) -> str:
    """Default augmentation preset for a DICOM modality code."""
    code = modality.upper()
    if code == "CT":
        return "ct"
    if code in ("MR", "MRI"):
        return "mr"
    return "xr"
