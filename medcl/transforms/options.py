"""Augmentation options: one frozen dataclass per modality, validated on construction.

Conventions for field names: ``p_*`` is the probability (per sample) that a transform is applied;
``*_range`` is a ``(low, high)`` interval sampled uniformly; units are in the name (``_deg``,
``_hu``, ``_px``, ``_frac``). Intensities are in the model's [0, 1] scale unless the name says
``_hu``. Setting every ``p_*`` to 0 (and, for CT, both window jitters to 0) makes a preset the
identity after :func:`~medcl.transforms.to_model_intensity`.

Use :func:`make_options` to build options from a mapping of overrides (YAML, CLI): an unknown name
or an invalid value raises :class:`~medcl.errors.ConfigError` naming the option.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from medcl.errors import ConfigError


@dataclass(frozen=True)
class CommonOptions:
    """Options shared by every modality (geometry, gamma/contrast, blur, Gaussian noise).

    Attributes:
        p_affine: Probability of the small affine (rotation, scale, translation).
        rotate_deg: Rotation drawn uniformly from ``[-rotate_deg, rotate_deg]`` degrees (3D: about
            each axis independently). Positive angles turn the image clockwise as displayed.
        scale_range: Isotropic zoom factor interval (> 1 enlarges the anatomy).
        translate_frac: Shift drawn from ``[-translate_frac, translate_frac]`` times the image size,
            per axis.
        p_crop: Probability of a random resized crop.
        crop_area_range: Fraction of the image area (volume in 3D) kept by the crop; keep the low
            end >= ~0.7 so small findings survive.
        crop_aspect_range: Width/height ratio interval of the crop (sampled log-uniformly); in 3D
            each axis' relative size is jittered within it, volume kept.
        flip_lr: Enable left-right flips (probability 0.5, last axis). Off by default because it
            breaks laterality.
        p_gamma: Probability of a gamma change ``x ** gamma``.
        log_gamma_range: ``log(gamma)`` interval.
        p_contrast: Probability of a contrast change about the image mean.
        contrast_range: Contrast factor interval.
        p_blur: Probability of a Gaussian blur.
        blur_sigma_px_range: Blur standard deviation in pixels.
        p_noise: Probability of additive Gaussian noise.
        noise_std_range: Noise standard deviation interval, in [0, 1] intensity units.
    """

    p_affine: float = 0.8
    rotate_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    translate_frac: float = 0.05
    p_crop: float = 0.5
    crop_area_range: tuple[float, float] = (0.7, 1.0)
    crop_aspect_range: tuple[float, float] = (0.8, 1.25)
    flip_lr: bool = False
    p_gamma: float = 0.5
    log_gamma_range: tuple[float, float] = (-0.3, 0.3)
    p_contrast: float = 0.5
    contrast_range: tuple[float, float] = (0.8, 1.2)
    p_blur: float = 0.2
    blur_sigma_px_range: tuple[float, float] = (0.25, 1.0)
    p_noise: float = 0.5
    noise_std_range: tuple[float, float] = (0.0, 0.03)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_field(self, f)
        lo, hi = self.crop_area_range
        if lo <= 0 or hi > 1:
            raise ConfigError(
                f"augment option 'crop_area_range': must lie in (0, 1], got {(lo, hi)}"
            )


@dataclass(frozen=True)
class CTOptions(CommonOptions):
    """CT options. Input is in Hounsfield units; the window maps HU to [0, 1].

    Attributes:
        window_level_hu: Window centre (HU).
        window_width_hu: Window width (HU); ``level - width/2`` maps to 0, ``level + width/2`` to 1.
        level_jitter_hu: Level drawn from ``level +- level_jitter_hu`` per sample.
        width_jitter_frac: Width multiplied by ``1 +- width_jitter_frac`` per sample.
        p_anisotropy: Probability (per-sample path) of a low-resolution simulation (torchio
            ``RandomAnisotropy``) along one random axis.
        anisotropy_factor_range: Downsampling factor interval.
    """

    window_level_hu: float = 40.0
    window_width_hu: float = 400.0
    level_jitter_hu: float = 20.0
    width_jitter_frac: float = 0.15
    p_anisotropy: float = 0.1
    anisotropy_factor_range: tuple[float, float] = (1.5, 3.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.window_width_hu <= 0:
            raise ConfigError(
                f"augment option 'window_width_hu': must be > 0, got {self.window_width_hu}"
            )
        if self.width_jitter_frac >= 1:
            raise ConfigError(
                f"augment option 'width_jitter_frac': must be < 1, got {self.width_jitter_frac}"
            )


@dataclass(frozen=True)
class MROptions(CommonOptions):
    """MR options. Input is already scaled to about [0, 1].

    Attributes:
        p_bias: Probability of a smooth multiplicative bias field ``exp(polynomial)``.
        bias_coef: Polynomial coefficients drawn from ``[-bias_coef, bias_coef]``.
        bias_order: Polynomial order of the bias field.
        p_rician: Probability of Rician noise (magnitude of complex Gaussian noise).
        rician_std_range: Rician noise standard deviation interval.
        p_motion: Probability (per-sample path) of torchio ``RandomMotion`` (k-space).
        motion_deg: Motion rotation range in degrees.
        motion_translate_px: Motion translation range in pixels.
        p_ghosting: Probability (per-sample path) of torchio ``RandomGhosting``.
        ghost_count_range: Number of ghosts interval (integers).
        ghost_intensity_range: Ghost intensity interval.
        p_spike: Probability (per-sample path) of torchio ``RandomSpike``.
        spike_intensity_range: Spike intensity interval.
        p_anisotropy: Probability (per-sample path) of torchio ``RandomAnisotropy``.
        anisotropy_factor_range: Downsampling factor interval.
    """

    p_bias: float = 0.3
    bias_coef: float = 0.3
    bias_order: int = 3
    p_rician: float = 0.2
    rician_std_range: tuple[float, float] = (0.0, 0.03)
    p_motion: float = 0.05
    motion_deg: float = 5.0
    motion_translate_px: float = 3.0
    p_ghosting: float = 0.05
    ghost_count_range: tuple[int, int] = (2, 6)
    ghost_intensity_range: tuple[float, float] = (0.2, 0.5)
    p_spike: float = 0.05
    spike_intensity_range: tuple[float, float] = (0.1, 0.3)
    p_anisotropy: float = 0.1
    anisotropy_factor_range: tuple[float, float] = (1.5, 3.0)


@dataclass(frozen=True)
class XROptions(CommonOptions):
    """X-ray (radiograph) options. Input is already scaled to about [0, 1].

    Attributes:
        p_bias: Probability of a mild smooth multiplicative bias field.
        bias_coef: Polynomial coefficients drawn from ``[-bias_coef, bias_coef]``.
        bias_order: Polynomial order of the bias field.
    """

    p_bias: float = 0.3
    bias_coef: float = 0.1
    bias_order: int = 3


OPTIONS_BY_MODALITY: dict[str, type[CommonOptions]] = {
    "ct": CTOptions,
    "mr": MROptions,
    "xr": XROptions,
}

AugmentOptions = CTOptions | MROptions | XROptions


def make_options(modality: str, overrides: Mapping[str, Any] | None = None) -> AugmentOptions:
    """Build the options of ``modality`` with ``overrides`` applied and validated.

    Args:
        modality: ``"ct"``, ``"mr"`` or ``"xr"``.
        overrides: Option name -> value. Lists are accepted for ranges (YAML has no tuples).

    Returns:
        The frozen options dataclass of the modality.

    Raises:
        ConfigError: Unknown modality, unknown option name (the message names it and suggests the
            closest valid name), or invalid value.
    """
    cls = OPTIONS_BY_MODALITY.get(modality)
    if cls is None:
        raise ConfigError(
            f"unknown augmentation preset {modality!r}; "
            f"expected one of {sorted(OPTIONS_BY_MODALITY)}"
        )
    overrides = dict(overrides or {})
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in overrides:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown augmentation option {key!r} for preset {modality!r}{hint}; "
                f"valid options: {', '.join(valid)}"
            )
    return cls(**overrides)  # type: ignore[return-value]


def _fail(name: str, message: str, value: Any) -> ConfigError:
    return ConfigError(f"augment option {name!r}: {message}, got {value!r}")


def _as_number(name: str, value: Any, kind: type) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(name, f"must be a {kind.__name__}", value)
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise _fail(name, "must be an integer", value)
        return int(value)
    if not math.isfinite(value):
        raise _fail(name, "must be finite", value)
    return float(value)


def _check_field(obj: CommonOptions, f: dataclasses.Field) -> None:
    """Coerce and validate one field from its annotation and naming convention."""
    name, value, kind = f.name, getattr(obj, f.name), str(f.type)
    if kind == "bool":
        if not isinstance(value, bool):
            raise _fail(name, "must be true or false", value)
        return
    if kind.startswith("tuple"):
        elem = int if "int" in kind else float
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise _fail(name, "must be a (low, high) pair", value)
        lo, hi = (_as_number(name, v, elem) for v in value)
        if lo > hi:
            raise _fail(name, "low must be <= high", value)
        if lo < 0 and name not in ("log_gamma_range",):
            raise _fail(name, "must be >= 0", value)
        if name in ("scale_range", "crop_aspect_range", "contrast_range") and lo <= 0:
            raise _fail(name, "must be > 0", value)
        if name == "anisotropy_factor_range" and lo < 1:
            raise _fail(name, "must be >= 1", value)
        object.__setattr__(obj, name, (lo, hi))
        return
    number = _as_number(name, value, int if kind == "int" else float)
    if name.startswith("p_") and not 0 <= number <= 1:
        raise _fail(name, "must be a probability in [0, 1]", value)
    if name != "window_level_hu" and number < 0:
        raise _fail(name, "must be >= 0", value)
    if name == "bias_order" and number > 6:
        raise _fail(name, "must be <= 6", value)
    object.__setattr__(obj, name, number)
