"""Downsampling a large scatter plot without losing the points that matter.

A browser draws tens of thousands of WebGL points comfortably, but each rerun ships every point's
coordinates and hover data. Above a cap, :func:`downsample_indices` keeps every *kept* point (the
labelled images and the current selection) and fills the rest of the cap with other points in a
fixed pseudo-random order.

The fill is stable: with ``order`` a seeded permutation, the result is ``keep ∪ (the first
cap − |keep| non-kept points in that order)``. Adding to ``keep`` points that were already shown
(selecting them) therefore leaves the shown set unchanged, so a selection does not make the
scatter plot jump.
"""

from __future__ import annotations

import numpy as np


def downsample_indices(
    n: int, cap: int, keep: np.ndarray | None = None, seed: int = 0
) -> np.ndarray:
    """Indices (sorted) of the points to draw.

    Args:
        n: Number of points.
        cap: Maximum number of points drawn; exceeded only when ``keep`` alone is larger.
        keep: Boolean mask ``(n,)`` of points that must be drawn, or ``None``.
        seed: Seed of the fill order.

    Returns:
        ``arange(n)`` when ``n <= cap``; otherwise every kept index plus
        ``max(0, cap − keep.sum())`` others, chosen in a seeded order.

    Raises:
        ValueError: If ``cap < 1`` or ``keep`` has the wrong shape.
    """
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    keep_mask = np.zeros(n, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    if keep_mask.shape != (n,):
        raise ValueError(f"keep must have shape ({n},), got {keep_mask.shape}")
    if n <= cap:
        return np.arange(n)
    order = np.random.default_rng(seed).permutation(n)
    others = order[~keep_mask[order]]
    fill = others[: max(0, cap - int(keep_mask.sum()))]
    return np.sort(np.concatenate([np.flatnonzero(keep_mask), fill]))
