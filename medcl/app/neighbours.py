"""Nearest neighbours of an image in embedding space (cosine similarity)."""

from __future__ import annotations

import numpy as np


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit Euclidean norm (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def nearest_neighbours(
    vectors: np.ndarray, index: int, k: int, candidates: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows most cosine-similar to row ``index``, excluding the row itself.

    Args:
        vectors: Embeddings ``(N, F)``.
        index: Query row.
        k: Number of neighbours (fewer when there are fewer candidates).
        candidates: Optional boolean mask ``(N,)`` of rows allowed as neighbours.

    Returns:
        ``(indices, similarities)``, most similar first; ties keep the lower index first.
    """
    v = unit_rows(vectors)
    sim = v @ v[index]
    allowed = np.ones(len(v), dtype=bool) if candidates is None else np.asarray(candidates, bool)
    allowed = allowed.copy()
    allowed[index] = False
    idx = np.flatnonzero(allowed)
    if k <= 0 or idx.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    order = np.lexsort((idx, -sim[idx]))[:k]
    chosen = idx[order]
    return chosen.astype(np.int64), sim[chosen].astype(np.float32)
