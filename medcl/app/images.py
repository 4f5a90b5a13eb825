"""Images for display: cached arrays mapped to [0, 1], slices, thumbnails and heat-map overlays.

Cached arrays (``cache_path`` in the manifest) are channel-first float32: ``(1, H, W)`` or
``(1, D, H, W)``, CT in Hounsfield units and other modalities in [0, 1]. For display they are mapped
to [0, 1] with the model's own intensity convention (:func:`medcl.transforms.to_model_intensity`
with the model's preset and CT window), the mapping the model itself sees.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from medcl.data.cache import load_cached
from medcl.transforms import to_model_intensity


def load_display(cache_path: str, preset: str, window: Sequence[float]) -> np.ndarray:
    """A cached image mapped to [0, 1], channel dropped: ``(H, W)`` or ``(D, H, W)``.

    Raises:
        MedclError: If the cached array cannot be read.
    """
    x = load_cached(cache_path)
    y = to_model_intensity(x, preset, (float(window[0]), float(window[1])))
    return np.asarray(y, dtype=np.float32)[0]


def n_slices(image: np.ndarray) -> int:
    """Number of slices along the first axis of a ``(D, H, W)`` volume; 1 for a 2-D image."""
    return int(image.shape[0]) if image.ndim == 3 else 1


def take_slice(image: np.ndarray, index: int | None = None) -> np.ndarray:
    """A 2-D view: the image itself, or slice ``index`` (middle by default, clipped) of a volume."""
    if image.ndim == 2:
        return image
    d = image.shape[0]
    i = d // 2 if index is None else min(max(int(index), 0), d - 1)
    return image[i]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A [0, 1] image as 8-bit grey levels."""
    return (np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def scale_for_display(image: np.ndarray, size: int) -> np.ndarray:
    """Scale an 8-bit image (grey ``(H, W)`` or RGB ``(H, W, 3)``) so its longer side is ``size``.

    Nearest-neighbour when enlarging (pixels stay visible), Lanczos when shrinking.
    """
    h, w = image.shape[:2]
    scale = size / max(h, w)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(image).resize(new, resample))


def thumbnail(image: np.ndarray, size: int = 96) -> np.ndarray:
    """An 8-bit ``size``-pixel thumbnail of a [0, 1] image (middle slice of a volume)."""
    return scale_for_display(to_uint8(take_slice(image)), size)


def overlay(
    image: np.ndarray, heat: np.ndarray, alpha: float = 0.45, cmap: str = "jet"
) -> np.ndarray:
    """An RGB 8-bit blend of a [0, 1] grey image and a [0, 1] heat map of the same shape.

    ``out = (1 - alpha · heat) · grey + alpha · heat · colour(heat)``: cold regions keep the
    anatomy visible, hot regions take the colour map's colour.
    """
    import matplotlib

    if image.shape != heat.shape:
        raise ValueError(f"image {image.shape} and heat map {heat.shape} differ in shape")
    grey = np.clip(np.nan_to_num(image), 0.0, 1.0)[..., None].repeat(3, axis=-1)
    h = np.clip(np.nan_to_num(heat), 0.0, 1.0)
    colour = matplotlib.colormaps[cmap](h)[..., :3]
    w = (alpha * h)[..., None]
    return to_uint8((1.0 - w) * grey + w * colour)
