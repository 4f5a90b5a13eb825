"""Nearest neighbours of an image in embedding space (cosine similarity)."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Which images may be neighbours.
NEIGHBOUR_POOLS = ("all images", "labelled images", "labelled training images")
#: Columns of the neighbour table (after ``similarity``).
NEIGHBOUR_COLUMNS = ("image_id", "patient_key", "split", "label", "prediction")


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


def neighbour_candidates(df: pd.DataFrame, pool: str) -> np.ndarray:
    """Boolean mask of the rows of the embeddings table ``df`` that ``pool`` allows.

    Raises:
        ValueError: ``pool`` is not one of :data:`NEIGHBOUR_POOLS`.
    """
    if pool not in NEIGHBOUR_POOLS:
        raise ValueError(f"unknown neighbour pool {pool!r}")
    cand = np.ones(len(df), dtype=bool)
    if pool != "all images":
        cand = df["labelled"].to_numpy().copy()
    if pool == "labelled training images":
        cand &= (df["split"] == "train").to_numpy()
    return cand


def neighbour_table(
    df: pd.DataFrame, indices: np.ndarray, similarity: np.ndarray, unlabelled: str
) -> pd.DataFrame:
    """The neighbours' rows: ``similarity`` (4 decimals), then :data:`NEIGHBOUR_COLUMNS`; an
    empty label reads ``unlabelled``."""
    nn = df.iloc[indices][list(NEIGHBOUR_COLUMNS)].copy()
    nn.insert(0, "similarity", np.round(similarity, 4))
    nn["label"] = nn["label"].replace("", unlabelled)
    return nn


def label_votes(labels: pd.Series, unlabelled: str) -> str:
    """``Labels among the neighbours: a 3, b 1`` (most frequent first); ``""`` when none is
    labelled."""
    lab = labels[labels != unlabelled]
    if not len(lab):
        return ""
    return "Labels among the neighbours: " + ", ".join(
        f"{c} {n}" for c, n in lab.value_counts().items()
    )
