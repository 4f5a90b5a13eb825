"""A PNG contact sheet of augmented views, to check a preset by eye (``medcl augment-preview``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medcl.errors import ConfigError
from medcl.transforms.presets import AugmentPreset
from medcl.transforms.views import views_of_images

PAD_PX = 2
_PAD_GREY = 96


def preview_grid(
    images: list[np.ndarray],
    preset: AugmentPreset,
    n_views: int,
    out_png: Path,
    seed: int = 0,
    tile: int = 128,
) -> Path:
    """Write a grid with one row per image: the normalised original, then ``n_views`` views.

    Each view goes through the whole training path (``preset.sample_views`` then the batched
    module), seeded from ``seed`` so that the same call writes the same picture. Volumes show their
    middle slice (axis 0). Each cell is ``tile`` x ``tile`` pixels (the image is resized to fit,
    keeping its aspect ratio), cells are separated by a ``PAD_PX`` grey border, so the PNG is
    ``PAD_PX + (n_views + 1) * (tile + PAD_PX)`` wide and ``PAD_PX + len(images) * (tile + PAD_PX)``
    high, 8-bit greyscale.

    Args:
        images: Images in stored units (HU for CT), each ``(H, W)`` / ``(1, H, W)`` for a 2-D
            preset or ``(D, H, W)`` / ``(1, D, H, W)`` for a 3-D preset.
        preset: The preset to preview.
        n_views: Views per image (>= 1).
        out_png: Output path; parent folders are created.
        seed: Seed of all random draws.
        tile: Cell size in pixels.

    Returns:
        ``out_png``.

    Raises:
        ConfigError: ``n_views`` or ``tile`` < 1, or no images.
        MedclError: An image has the wrong number of dimensions.
    """
    if n_views < 1:
        raise ConfigError(f"n_views must be >= 1, got {n_views}")
    if tile < 1:
        raise ConfigError(f"tile must be >= 1, got {tile}")
    if not images:
        raise ConfigError("preview_grid needs at least one image")
    cols = n_views + 1
    canvas = np.full(
        (PAD_PX + len(images) * (tile + PAD_PX), PAD_PX + cols * (tile + PAD_PX)),
        _PAD_GREY,
        dtype=np.uint8,
    )
    for row, cells in enumerate(views_of_images(images, preset, n_views, seed)):
        for col, cell in enumerate(cells):
            top, left = PAD_PX + row * (tile + PAD_PX), PAD_PX + col * (tile + PAD_PX)
            canvas[top : top + tile, left : left + tile] = _to_tile(cell, tile)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(out_png)
    return out_png


def _to_tile(cell: torch.Tensor, tile: int) -> np.ndarray:
    """Middle slice of a [0, 1] image, letterboxed into a ``tile`` x ``tile`` uint8 square."""
    a = torch.as_tensor(cell).detach().float().cpu().numpy()
    a = a.reshape(a.shape[-2:]) if a.ndim == 3 else a[0, a.shape[1] // 2]
    img = Image.fromarray((np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    h, w = a.shape
    s = tile / max(h, w)
    new_w, new_h = max(1, round(w * s)), max(1, round(h * s))
    img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    out = np.zeros((tile, tile), dtype=np.uint8)
    top, left = (tile - new_h) // 2, (tile - new_w) // 2
    out[top : top + new_h, left : left + new_w] = np.asarray(img)
    return out
