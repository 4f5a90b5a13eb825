"""Intensity mappings: CT windowing, [0, 1] normalisation, gamma, contrast, bias field.

All functions are deterministic and batched: ``x`` is ``(B, C, *spatial)`` and every per-sample
parameter is a tensor of shape ``(B,)`` (``(B, M)`` for bias-field coefficients), so one call
applies a different setting to each sample. :func:`to_model_intensity` is the evaluation and
inference mapping.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import torch
from torch import Tensor

from medcl.errors import ConfigError
from medcl.transforms._sampling import broadcast_param

MODALITIES = ("ct", "mr", "xr")
DEFAULT_CT_WINDOW = (40.0, 400.0)


def apply_window(x: Tensor, level: Tensor | float, width: Tensor | float) -> Tensor:
    """Map Hounsfield units to [0, 1] with a (per-sample) window.

    ``level - width / 2`` maps to 0 and ``level + width / 2`` to 1, linearly, clamped outside.

    Args:
        x: CT batch in HU, ``(B, C, *spatial)``.
        level: Window centre(s) in HU, a float or a ``(B,)`` tensor.
        width: Window width(s) in HU (> 0), a float or a ``(B,)`` tensor.

    Returns:
        The windowed batch in [0, 1].
    """
    level_t = torch.as_tensor(level, dtype=x.dtype, device=x.device).expand(x.shape[0])
    width_t = torch.as_tensor(width, dtype=x.dtype, device=x.device).expand(x.shape[0])
    lo = broadcast_param(level_t - width_t / 2, x)
    return ((x - lo) / broadcast_param(width_t, x)).clamp(0.0, 1.0)


def to_model_intensity(
    x: Tensor | np.ndarray,
    modality: str,
    window: tuple[float, float] = DEFAULT_CT_WINDOW,
) -> Tensor | np.ndarray:
    """Deterministically map a stored image to the model's [0, 1] range (evaluation, inference).

    CT (stored in HU) is windowed with ``window = (level, width)``; MR and X-ray (stored already
    scaled to about [0, 1]) are clamped to [0, 1]. The stored convention itself is applied at
    ingest by :func:`medcl.data.cache.to_cache_intensity`.

    Args:
        x: Image or batch of any shape, a tensor or a NumPy array.
        modality: ``"ct"``, ``"mr"`` or ``"xr"``.
        window: CT ``(level, width)`` in HU; ignored for MR and X-ray.

    Returns:
        A float32 result of the same kind (tensor or array) and shape as ``x``.

    Raises:
        ConfigError: Unknown modality or non-positive window width.
    """
    modality = modality.lower()
    if modality not in MODALITIES:
        raise ConfigError(f"unknown modality {modality!r}; expected one of {list(MODALITIES)}")
    is_numpy = isinstance(x, np.ndarray)
    t = torch.as_tensor(np.asarray(x) if is_numpy else x).float()
    if modality == "ct":
        level, width = float(window[0]), float(window[1])
        if width <= 0:
            raise ConfigError(f"CT window width must be > 0, got {width}")
        out = ((t - (level - width / 2)) / width).clamp(0.0, 1.0)
    else:
        out = t.clamp(0.0, 1.0)
    return out.numpy() if is_numpy else out


def adjust_gamma(x: Tensor, gamma: Tensor) -> Tensor:
    """Apply ``x ** gamma`` per sample on the [0, 1]-clamped batch.

    Args:
        x: Batch in [0, 1], ``(B, C, *spatial)``.
        gamma: ``(B,)`` positive exponents (1 is the identity).

    Returns:
        The transformed batch.
    """
    return x.clamp(0.0, 1.0).pow(broadcast_param(gamma, x))


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Scale each sample's deviation from its own mean intensity by ``factor``.

    Args:
        x: Batch, ``(B, C, *spatial)``.
        factor: ``(B,)`` contrast factors (1 is the identity).

    Returns:
        The transformed batch (not clamped).
    """
    mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
    return (x - mean) * broadcast_param(factor, x) + mean


def bias_field_basis_size(order: int, dims: int) -> int:
    """Number of monomials of total degree <= ``order`` in ``dims`` variables."""
    return len(_exponents(order, dims))


@functools.lru_cache(maxsize=8)
def _exponents(order: int, dims: int) -> tuple[tuple[int, ...], ...]:
    return tuple(e for e in itertools.product(range(order + 1), repeat=dims) if sum(e) <= order)


@functools.lru_cache(maxsize=16)
def _basis(spatial: tuple[int, ...], order: int, device: str, dtype: torch.dtype) -> Tensor:
    """Monomials of the normalised coordinates in [-1, 1], shape ``(M, *spatial)``."""
    axes = [torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype) for n in spatial]
    grids = torch.meshgrid(*axes, indexing="ij")
    terms = []
    for exps in _exponents(order, len(spatial)):
        term = torch.ones(spatial, device=device, dtype=dtype)
        for g, e in zip(grids, exps, strict=True):
            if e:
                term = term * g.pow(e)
        terms.append(term)
    return torch.stack(terms)


def bias_field(x: Tensor, coefficients: Tensor, order: int) -> Tensor:
    """Multiply each sample by a smooth field ``exp(sum_k c_k * monomial_k(coords))``.

    The monomials are all products of normalised coordinates (in [-1, 1]) of total degree <=
    ``order``; all-zero coefficients give the identity.

    Args:
        x: Batch, ``(B, C, *spatial)``.
        coefficients: ``(B, M)`` with ``M = bias_field_basis_size(order, dims)``.
        order: Polynomial order.

    Returns:
        The modulated batch.
    """
    spatial = tuple(x.shape[2:])
    basis = _basis(spatial, order, str(x.device), x.dtype)
    log_field = torch.einsum("bm,m...->b...", coefficients.to(x.device, x.dtype), basis)
    return x * log_field.exp().unsqueeze(1)
