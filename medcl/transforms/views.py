"""Several independently augmented views per sample, for contrastive learning.

Data flow for training (V = ``n_views``)::

    Dataset.__getitem__:  views = preset.sample_views(image, V)     # (V, 1, ...) CPU, stored units
                          # = preset.per_sample(image) called V times (torchio artifacts), or V
                          #   copies of the image when preset.per_sample is None
    DataLoader collate:   batch (B, V, 1, ...)
    on the device:        MultiViewAugment(preset, V)(batch.to(device))  -> (B, V, 1, ...) in [0, 1]

A plain ``(B, 1, ...)`` batch is also accepted (each image is then repeated V times before the
batched augmentation); use it when the preset has no per-sample part.

:func:`original_and_views` runs the same path for one image with seeded draws, and
:func:`views_of_images` for a list of stored images, for the views that ``medcl augment-preview``
and the dashboard show.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from medcl.data.resize import resize_to
from medcl.errors import ConfigError, MedclError
from medcl.seeding import SEED_STRIDE, mix_seed
from medcl.transforms.presets import AugmentPreset


class MultiViewAugment(nn.Module):
    """Apply a preset's batched part to V views of every sample, each with its own parameters.

    Args:
        preset: The preset whose ``batched`` module is applied.
        n_views: Number of views V (>= 1).
    """

    def __init__(self, preset: AugmentPreset, n_views: int = 2) -> None:
        super().__init__()
        if n_views < 1:
            raise ConfigError(f"n_views must be >= 1, got {n_views}")
        self.preset_name = preset.name
        self.dims = preset.dims
        self.n_views = n_views
        self.batched = preset.batched

    def extra_repr(self) -> str:
        return f"preset={self.preset_name!r}, n_views={self.n_views}"

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment every view.

        Args:
            x: ``(B, C, *spatial)`` (one image per sample, repeated V times here) or
                ``(B, V, C, *spatial)`` (views already prepared by ``preset.sample_views``).
            generator: Optional source of randomness.

        Returns:
            ``(B, V, C, *spatial)`` in [0, 1]; all B * V images are augmented independently.

        Raises:
            ValueError: Wrong number of dimensions or a view count different from ``n_views``.
        """
        if x.ndim == self.dims + 2:
            x = x.unsqueeze(1).expand(-1, self.n_views, *x.shape[1:])
        elif x.ndim != self.dims + 3:
            raise ValueError(
                f"MultiViewAugment (dims={self.dims}) expects (B, C, ...) or (B, V, C, ...), "
                f"got {tuple(x.shape)}"
            )
        elif x.shape[1] != self.n_views:
            raise ValueError(f"expected {self.n_views} views on axis 1, got {x.shape[1]}")
        b, v = x.shape[:2]
        out = self.batched(x.reshape(b * v, *x.shape[2:]), generator=generator)
        return out.reshape(b, v, *out.shape[1:])


def original_and_views(
    x: Tensor, preset: AugmentPreset, multi: MultiViewAugment, seed: int, index: int
) -> Tensor:
    """The normalised image and ``multi.n_views`` seeded views of it, through the training path.

    ``preset.sample_views`` (per-sample artifacts) then ``multi`` (the batched part), as in
    training; the draws depend on ``seed`` and ``index`` only, so the same call gives the same
    views.

    Args:
        x: One image ``(1, *spatial)`` in stored units, on the CPU.
        preset: The preset.
        multi: ``MultiViewAugment(preset, n_views)``.
        seed: Seed of the draws.
        index: Position of the image in its request (images of one request get different draws).

    Returns:
        ``(n_views + 1, 1, *spatial)``: index 0 is ``preset.normalize(x)``, then the views, all in
        [0, 1].
    """
    n_views = multi.n_views
    original = torch.as_tensor(preset.normalize(x))
    views = preset.sample_views(
        x, n_views, seed=mix_seed((seed, SEED_STRIDE), (index * n_views, 1))
    )
    generator = torch.Generator().manual_seed(mix_seed((seed, SEED_STRIDE), (index, 1)))
    with torch.no_grad():
        augmented = multi(views.unsqueeze(0), generator=generator)[0]  # (V, 1, ...)
    return torch.cat([original[None], augmented], dim=0)


def views_of_images(
    images: Sequence[np.ndarray],
    preset: AugmentPreset,
    n_views: int,
    seed: int = 0,
    image_size: int | None = None,
) -> Iterator[Tensor]:
    """:func:`original_and_views` of each image, in order (image ``r`` draws with ``seed``, ``r``).

    Args:
        images: Images in stored units, each ``(H, W)`` / ``(1, H, W)`` for a 2-D preset or
            ``(D, H, W)`` / ``(1, D, H, W)`` for a 3-D preset.
        preset: The preset.
        n_views: Views per image (>= 1).
        seed: Seed of every draw.
        image_size: Resize every image to this size first (as a training set at that size
            does), or None to augment it as given.

    Yields:
        ``(n_views + 1, 1, *spatial)`` per image: the normalised original, then the views.

    Raises:
        ConfigError: ``n_views`` < 1.
        MedclError: An image has the wrong number of dimensions.
    """
    multi = MultiViewAugment(preset, n_views)
    for index, image in enumerate(images):
        x = _channel_first(image, preset.dims, index)
        if image_size is not None:
            x = resize_to(x, image_size, preset.dims)
        yield original_and_views(x, preset, multi, seed, index)


def _channel_first(image: np.ndarray, dims: int, index: int) -> Tensor:
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == dims:
        a = a[None]
    if a.ndim != dims + 1 or a.shape[0] != 1:
        raise MedclError(
            f"image {index} has shape {a.shape}; a {dims}-D preset needs "
            f"{'(H, W)' if dims == 2 else '(D, H, W)'} or a leading channel of 1"
        )
    return torch.from_numpy(np.ascontiguousarray(a))
