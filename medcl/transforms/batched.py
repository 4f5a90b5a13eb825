"""The cheap part of a preset, batched on the training device with per-sample random parameters.

Order of operations (each step uses its own per-sample probability and parameters):

1. to [0, 1]: CT window with per-sample level/width jitter (HU in); MR/X-ray clamp to [0, 1];
2. geometry: affine (rotation, zoom, translation), resized crop, optional left-right flip, fused
   into one ``grid_sample`` (outside the field of view takes the image's minimum: air, background);
3. bias field (MR, X-ray); 4. gamma; 5. contrast; 6. blur; 7. Gaussian noise; 8. Rician noise (MR);
9. clamp to [0, 1].

Parameters are drawn for every sample, then gated by a per-sample coin. Cheap steps (window,
geometry, gamma, contrast) run on the whole batch with identity parameters for the samples whose
coin failed; the costlier ones (bias field, blur, noise) run only on the selected samples (an index
select, which costs one host synchronisation per step on a GPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from medcl.transforms import _sampling as rs
from medcl.transforms.blur import gaussian_blur, kernel_radius
from medcl.transforms.intensity import (
    adjust_contrast,
    adjust_gamma,
    apply_window,
    bias_field,
    bias_field_basis_size,
)
from medcl.transforms.noise import gaussian_noise, rician_noise
from medcl.transforms.options import AugmentOptions, CTOptions
from medcl.transforms.spatial import build_theta, warp


def _gate(value: Tensor, apply: Tensor, identity: float) -> Tensor:
    """Keep ``value`` where ``apply`` is true, else the identity parameter."""
    mask = apply.reshape(-1, *([1] * (value.ndim - 1)))
    return torch.where(mask, value, torch.full_like(value, identity))


def _on_subset(x: Tensor, apply: Tensor, fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Run ``fn(x[idx], idx)`` only on the samples where ``apply`` is true; others pass through.

    Writes into ``x`` in place: only call it on a tensor this module created.
    """
    idx = apply.nonzero().squeeze(1)
    n = idx.numel()
    if n == 0:
        return x
    if n == x.shape[0]:
        return fn(x, idx)
    return x.index_copy_(0, idx, fn(x.index_select(0, idx), idx))


class BatchAugment(nn.Module):
    """Random, batched augmentation of ``(B, C, H, W)`` or ``(B, C, D, H, W)`` tensors.

    Every sample gets independent parameters. With a ``generator`` the output is reproducible.
    The module has no parameters or buffers; it runs on whatever device the input is on.

    Args:
        modality: ``"ct"``, ``"mr"`` or ``"xr"``.
        options: The modality's options (see :mod:`medcl.transforms.options`).
        dims: 2 or 3 spatial dimensions.
    """

    def __init__(self, modality: str, options: AugmentOptions, dims: int) -> None:
        super().__init__()
        self.modality = modality
        self.options = options
        self.dims = dims

    def extra_repr(self) -> str:
        return f"modality={self.modality!r}, dims={self.dims}"

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a batch.

        Args:
            x: ``(B, C, *spatial)`` in stored units (HU for CT, about [0, 1] for MR/X-ray).
            generator: Optional source of randomness (ideally on ``x.device``).

        Returns:
            The augmented batch, float, in [0, 1], same shape.

        Raises:
            ValueError: Wrong number of dimensions.
        """
        if x.ndim != self.dims + 2:
            raise ValueError(
                f"{self.modality} batched augment (dims={self.dims}) expects "
                f"(B, C, {'D, ' if self.dims == 3 else ''}H, W), got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            x = x.float()
        o: Any = self.options
        b, dev = x.shape[0], x.device

        def uni(lo: float, hi: float, *shape: int) -> Tensor:
            return rs.uniform((b, *shape), lo, hi, device=dev, generator=generator)

        def coin(p: float) -> Tensor:
            return rs.bernoulli(b, p, device=dev, generator=generator)

        # 1. to [0, 1]
        if isinstance(o, CTOptions):
            level = o.window_level_hu + uni(-o.level_jitter_hu, o.level_jitter_hu)
            width = o.window_width_hu * (1 + uni(-o.width_jitter_frac, o.width_jitter_frac))
            x = apply_window(x, level, width)
        else:
            x = x.clamp(0.0, 1.0)

        # 2. geometry
        if o.p_affine > 0 or o.p_crop > 0 or o.flip_lr:
            theta = self._sample_theta(tuple(x.shape[2:]), uni, coin)
            background = x.amin(dim=tuple(range(1, x.ndim)), keepdim=True)
            x = warp(x - background, theta) + background

        # 3. bias field
        if getattr(o, "p_bias", 0) > 0 and o.bias_coef > 0:
            m = bias_field_basis_size(o.bias_order, self.dims)
            coef = uni(-o.bias_coef, o.bias_coef, m)
            x = _on_subset(x, coin(o.p_bias), lambda s, i: bias_field(s, coef[i], o.bias_order))

        # 4-5. gamma, contrast
        if o.p_gamma > 0:
            x = adjust_gamma(x, _gate(uni(*o.log_gamma_range).exp(), coin(o.p_gamma), 1.0))
        if o.p_contrast > 0:
            x = adjust_contrast(x, _gate(uni(*o.contrast_range), coin(o.p_contrast), 1.0))

        # 6. blur
        if o.p_blur > 0 and o.blur_sigma_px_range[1] > 0:
            sigma = uni(*o.blur_sigma_px_range)
            radius = kernel_radius(o.blur_sigma_px_range[1])
            x = _on_subset(x, coin(o.p_blur), lambda s, i: gaussian_blur(s, sigma[i], radius))

        # 7-8. noise
        if o.p_noise > 0 and o.noise_std_range[1] > 0:
            std = uni(*o.noise_std_range)
            x = _on_subset(x, coin(o.p_noise), lambda s, i: gaussian_noise(s, std[i], generator))
        if getattr(o, "p_rician", 0) > 0 and o.rician_std_range[1] > 0:
            r_std = uni(*o.rician_std_range)
            x = _on_subset(
                x, coin(o.p_rician), lambda s, i: rician_noise(s.clamp_min(0), r_std[i], generator)
            )

        return x.clamp(0.0, 1.0)

    def _sample_theta(self, spatial: tuple[int, ...], uni: Any, coin: Any) -> Tensor:
        """Draw per-sample geometry and compose it (see :func:`~.spatial.build_theta`)."""
        o: Any = self.options
        d = self.dims
        apply_affine = coin(o.p_affine)
        rotation = _gate(
            uni(-o.rotate_deg, o.rotate_deg, *((3,) if d == 3 else ())), apply_affine, 0
        )
        scale = _gate(uni(*o.scale_range), apply_affine, 1.0)
        translate = _gate(uni(-o.translate_frac, o.translate_frac, d), apply_affine, 0.0)

        # resized crop: area (volume) fraction a and aspect ratios; per-axis size = a^(1/d) * aspect
        apply_crop = coin(o.p_crop)
        log_area = uni(*(math.log(v) for v in o.crop_area_range))
        lo, hi = (math.log(v) for v in o.crop_aspect_range)
        if d == 2:  # width / height ratio r: sizes sqrt(a * r), sqrt(a / r)
            half_log_r = uni(lo, hi) / 2
            log_aspect = torch.stack([half_log_r, -half_log_r], dim=1)
        else:  # each axis' relative size jittered within the range, volume kept
            log_aspect = uni(lo / 2, hi / 2, d)
            log_aspect = log_aspect - log_aspect.mean(dim=1, keepdim=True)
        frac = (log_area.unsqueeze(1) / d + log_aspect).exp().clamp(max=1.0)
        frac = _gate(frac, apply_crop, 1.0)
        center = (uni(-1.0, 1.0, d) * (1.0 - frac)).clamp(-1.0, 1.0)

        flip = coin(0.5) if o.flip_lr else torch.zeros_like(apply_affine)
        return build_theta(
            spatial,
            rotation_deg=rotation,
            scale=scale,
            translate_frac=translate,
            flip=flip,
            crop_frac=frac,
            crop_center=center,
        )
