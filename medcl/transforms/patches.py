"""Patches of 3-D volumes: random regions for pretraining, a covering grid for inference.

A volume ``(1, D, H, W)`` is seen through cubes of edge ``P`` voxels (``data.patch_size``), taken
at the stored resolution of the cache, so a finding of a few voxels keeps them (a whole-volume
resize to a small cube would average it away). A box is the start corner ``(z, y, x)`` of a cube.

Pretraining (:func:`region_views`): a region is a uniformly drawn start ``s ∈ [0, S − P]`` per axis;
each of its V views is cropped at ``s + δ`` with an independent shift ``δ ∈ [−m, m]`` per axis,
``m = ⌊VIEW_SHIFT · P⌋``, clamped to the volume. Two views of one region therefore overlap by at
least ``P − 2m`` voxels per axis (at least ``(1 − 2·VIEW_SHIFT)³ ≈ 42 %`` of a patch with
``VIEW_SHIFT = 1/8``): they show the same anatomy, slightly displaced, before the augmentation
makes them differ further (SimCLR's positive pair of two crops of one image, Chen et al. 2020,
here two crops of one neighbourhood of the volume; self-supervision on 3-D sub-volumes as in
Taleb et al. 2020).

Inference (:func:`grid_starts`, :func:`grid_boxes`): along an axis of length ``L`` the starts are
``0, t, 2t, …`` with stride ``t = max(1, ⌊P (1 − o)⌋)`` for overlap ``o ∈ [0, 1)``, while
``start + P < L``, and a last start ``L − P`` flush with the end; every voxel is covered and no box
leaves the volume. :func:`aggregate_patches` encodes the patches in batches and averages their
outputs: ``f(V) = (1/n) Σ_i g(crop_i(V))`` (the grid mean of the patch features, the embedding of
the whole volume).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from medcl.errors import MedclError

VIEW_SHIFT = 0.125
"""Largest shift of a view from its region, as a fraction of the patch edge (per axis)."""

Box = tuple[int, ...]


def check_fits(shape: Sequence[int], patch_size: int, name: str = "volume") -> None:
    """Refuse a volume smaller than a patch along some axis.

    Args:
        shape: Spatial shape ``(D, H, W)``.
        patch_size: Patch edge ``P``.
        name: What to call the volume in the message (e.g. its image_id).

    Raises:
        MedclError: One line naming ``data.patch_size`` and ``name``.
    """
    if min(shape) < patch_size:
        raise MedclError(
            f"data.patch_size={patch_size} is larger than {name} "
            f"(shape {'×'.join(str(int(s)) for s in shape)}); lower data.patch_size or use "
            "data.volume_mode=resize"
        )


def grid_starts(length: int, patch_size: int, overlap: float = 0.0) -> list[int]:
    """Start positions of grid patches along one axis (module docstring).

    Args:
        length: Axis length ``L`` (≥ ``patch_size``).
        patch_size: Patch edge ``P``.
        overlap: Fraction ``o`` of ``P`` shared by neighbouring patches, in [0, 1).

    Returns:
        Increasing starts; the first is 0 and the last ``L − P``.

    Raises:
        ValueError: ``P > L`` or ``o`` outside [0, 1).
    """
    if patch_size > length:
        raise ValueError(f"patch size {patch_size} exceeds the axis length {length}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    stride = max(1, int(patch_size * (1.0 - overlap)))
    starts = list(range(0, length - patch_size, stride))
    starts.append(length - patch_size)
    return starts


def grid_boxes(shape: Sequence[int], patch_size: int, overlap: float = 0.0) -> list[Box]:
    """Start corners of the grid patches of a volume: the product of :func:`grid_starts` per axis.

    Args:
        shape: Spatial shape, e.g. ``(D, H, W)``.
        patch_size: Patch edge.
        overlap: Overlap fraction in [0, 1).

    Returns:
        Start corners in C order (last axis fastest).
    """
    axes = [grid_starts(int(n), patch_size, overlap) for n in shape]
    return [tuple(b) for b in itertools.product(*axes)]


def crop(x: Tensor, box: Box, patch_size: int) -> Tensor:
    """The cube of edge ``patch_size`` at ``box`` of a channel-first volume ``(C, *spatial)``."""
    index = (slice(None),) + tuple(slice(s, s + patch_size) for s in box)
    return x[index]


def random_box(
    shape: Sequence[int], patch_size: int, generator: torch.Generator | None = None
) -> Box:
    """A start corner drawn uniformly among those whose cube lies inside ``shape``."""
    return tuple(
        int(torch.randint(0, int(n) - patch_size + 1, (1,), generator=generator)) for n in shape
    )


def view_box(
    region: Box,
    shape: Sequence[int],
    patch_size: int,
    generator: torch.Generator | None = None,
    shift: float = VIEW_SHIFT,
) -> Box:
    """A view's start corner: ``region`` shifted by up to ``⌊shift·P⌋`` voxels per axis, clamped
    to the volume."""
    m = int(shift * patch_size)
    out = []
    for s, n in zip(region, shape, strict=True):
        d = int(torch.randint(-m, m + 1, (1,), generator=generator)) if m > 0 else 0
        out.append(min(max(s + d, 0), int(n) - patch_size))
    return tuple(out)


def sample_regions(
    shape: Sequence[int],
    patch_size: int,
    n_regions: int,
    n_views: int,
    generator: torch.Generator | None = None,
) -> tuple[list[Box], list[list[Box]]]:
    """The corners :func:`region_views` crops at, drawn from the volume's shape alone (so that a
    reader can fetch just those cubes, e.g. from a memory-mapped file).

    Returns:
        The ``n_regions`` region corners and, for each, its ``n_views`` view corners.

    Raises:
        MedclError: The volume is smaller than a patch along some axis.
    """
    shape = tuple(int(n) for n in shape)
    check_fits(shape, patch_size)
    regions = [random_box(shape, patch_size, generator) for _ in range(n_regions)]
    boxes = [[view_box(r, shape, patch_size, generator) for _ in range(n_views)] for r in regions]
    return regions, boxes


def region_views(
    x: Tensor,
    patch_size: int,
    n_regions: int,
    n_views: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, list[Box], list[list[Box]]]:
    """``n_regions`` random regions of a volume, ``n_views`` overlapping crops of each.

    Args:
        x: Volume ``(C, D, H, W)`` (any number of spatial axes works).
        patch_size: Patch edge ``P`` (the volume must be at least that large, see
            :func:`check_fits`).
        n_regions: Regions k.
        n_views: Views V per region.
        generator: Source of randomness (the global one when ``None``).

    Returns:
        ``(k, V, C, P, P, P)`` crops, the k region corners and, for each region, its V view
        corners.
    """
    regions, boxes = sample_regions(tuple(x.shape[1:]), patch_size, n_regions, n_views, generator)
    crops = torch.stack(
        [torch.stack([crop(x, b, patch_size) for b in views]) for views in boxes]
    ).contiguous()
    return crops, regions, boxes


def aggregate_patches(
    encode: Callable[[Tensor], Tensor],
    volume: Tensor,
    patch_size: int,
    overlap: float = 0.0,
    batch_size: int = 64,
) -> Tensor:
    """Mean of ``encode`` over the grid patches of one volume.

    Args:
        encode: ``(n, C, P, P, P) → (n, F)``, e.g. an encoder (its outputs are averaged; for a
            linear head after it, the mean of the logits equals the head of the mean feature).
        volume: ``(C, D, H, W)``.
        patch_size: Patch edge.
        overlap: Grid overlap in [0, 1).
        batch_size: Patches encoded at once.

    Returns:
        ``(F,)``, the mean over the patches.

    Raises:
        MedclError: The volume is smaller than a patch along some axis.
    """
    check_fits(tuple(volume.shape[1:]), patch_size)
    boxes = grid_boxes(tuple(volume.shape[1:]), patch_size, overlap)
    total: Tensor | None = None
    for s in range(0, len(boxes), batch_size):
        batch = torch.stack([crop(volume, b, patch_size) for b in boxes[s : s + batch_size]])
        out = encode(batch).float().sum(0)
        total = out if total is None else total + out
    assert total is not None
    return total / len(boxes)
