"""The one resizer for channel-first images: the ingest cache and the datasets both call it.

Both interpolate linearly (bilinear in 2-D, trilinear in 3-D, ``align_corners=False``, so [0, 1]
data stays in [0, 1]). They differ in which axes they resize and when they antialias, and each
keeps its own setting:

- ingest (:func:`medcl.data.cache.prepare`) resizes in-plane only, every slice of a volume alike
  (``dims=2``), and always antialiases (``antialias=True``): shrinking averages over the covered
  pixels;
- the datasets (:class:`medcl.data.dataset.CachedImages`) and the app resize every spatial axis to
  the run's image size (``dims`` = the image's dimensions) and antialias only when a 2-D image
  shrinks along some axis (the default); PyTorch has no antialiased trilinear mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

Image = TypeVar("Image", np.ndarray, "torch.Tensor")


def resize_to(x: Image, size: int, dims: int = 2, *, antialias: bool | None = None) -> Image:
    """Resize the last ``dims`` axes of an image to ``size`` each.

    Args:
        x: A NumPy array or a tensor, channel-first: ``(1, H, W)``, ``(1, D, H, W)`` …; every index
            of the leading axes is resized on its own.
        size: Target length of each resized axis.
        dims: 2 (bilinear over the last two axes) or 3 (trilinear over the last three).
        antialias: ``None``: antialias when some resized axis shrinks (2-D only); ``True``: always
            (2-D only); ``False``: never.

    Returns:
        ``x`` itself when it already has the size; else a new image of the same kind, an array as
        float32, a tensor in its own dtype.

    Raises:
        ValueError: ``dims`` is not 2 or 3, or ``antialias=True`` with ``dims=3``.
    """
    import torch
    import torch.nn.functional as F

    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    if antialias and dims == 3:
        raise ValueError("antialiasing is only available for 2-D (bilinear) resizing")
    spatial = tuple(x.shape[-dims:])
    if spatial == (size,) * dims:
        return x
    if antialias is None:
        antialias = dims == 2 and any(s > size for s in spatial)
    is_numpy = isinstance(x, np.ndarray)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) if is_numpy else x
    lead = tuple(t.shape[:-dims])
    y = F.interpolate(
        t.reshape(-1, 1, *spatial),
        size=(size,) * dims,
        mode="bilinear" if dims == 2 else "trilinear",
        align_corners=False,
        antialias=antialias,
    )
    y = y.reshape(*lead, *(size,) * dims)
    return y.numpy() if is_numpy else y
