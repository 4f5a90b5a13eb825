r"""Which unlabelled images to label next: uncertainty combined with diversity in embedding space.

For the unlabelled training images :math:`i` with predicted class probabilities :math:`p_i`
(:math:`C` classes) and embedding :math:`f_i`:

**Uncertainty** :math:`u_i \in [0, 1]`, one of

- ``entropy``: :math:`u_i = -\sum_k p_{ik} \log p_{ik} / \log C` (normalised predictive entropy);
- ``margin``: :math:`u_i = 1 - (p_{i(1)} - p_{i(2)})`, one minus the gap between the two largest
  probabilities.

**Diversity** :math:`\delta_i \in [0, 1]`: with :math:`R` the reference set — the labelled
training images plus the images already chosen — :math:`D_i = \min_{j \in R} (1 - \cos(f_i,
f_j))` is the cosine distance to the nearest reference, and :math:`\delta_i = \min(1, D_i / D^*)`
where :math:`D^*` is the largest :math:`D_i` over the candidates when :math:`R` is first non-empty
(at the start, or after the first pick when nothing is labelled). While :math:`R` is empty,
:math:`\delta_i = 1`.

**Score** :math:`s_i = (1 - \beta)\, u_i + \beta\, \delta_i` with the diversity weight
:math:`\beta \in [0, 1]`.

**Ranking** is greedy (the k-center greedy of Sener & Savarese, ICLR 2018, blended with
uncertainty): pick the candidate with the largest :math:`s_i` (lowest index on ties), add it to
:math:`R`, update every :math:`D_i`, repeat. The score reported for an image is its :math:`s_i` at
the moment it was picked, so scores never increase down the list. :math:`\beta = 0` ranks by
uncertainty alone; :math:`\beta = 1` is pure k-center greedy (each pick the image farthest from
everything labelled or chosen), which avoids spending the annotation budget on near-duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from medcl.app.neighbours import unit_rows
from medcl.app.run import probabilities

UNCERTAINTIES = ("entropy", "margin")
#: Columns of :func:`ranking_table`.
RANKING_COLUMNS = (
    "rank",
    "image_id",
    "patient_key",
    "score",
    "uncertainty",
    "diversity",
    "predicted",
    "confidence",
)
_CHUNK = 4096


@dataclass
class Acquisition:
    """A ranking of candidates, best first.

    Attributes:
        order: Candidate indices (rows of the ``proba``/``vectors`` passed in), best first.
        score: :math:`s` of each ranked candidate when it was picked.
        uncertainty: :math:`u` of each ranked candidate.
        diversity: :math:`\\delta` of each ranked candidate when it was picked.
    """

    order: np.ndarray
    score: np.ndarray
    uncertainty: np.ndarray
    diversity: np.ndarray


def uncertainty_scores(proba: np.ndarray, kind: str = "entropy") -> np.ndarray:
    """Uncertainty :math:`u \\in [0, 1]` of each row of ``proba`` ``(N, C)`` (see module doc).

    Raises:
        ValueError: On an unknown ``kind``.
    """
    p = np.clip(np.asarray(proba, dtype=np.float64), 0.0, 1.0)
    n, c = p.shape
    if kind == "entropy":
        if c < 2:
            return np.zeros(n)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
        return np.clip(h / np.log(c), 0.0, 1.0)
    if kind == "margin":
        if c < 2:
            return np.zeros(n)
        top2 = -np.sort(-p, axis=1)[:, :2]
        return np.clip(1.0 - (top2[:, 0] - top2[:, 1]), 0.0, 1.0)
    raise ValueError(f"unknown uncertainty {kind!r}; expected one of {UNCERTAINTIES}")


def distance_to_set(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine distance of each row of ``vectors`` to its nearest row of ``reference``.

    Both are unit-normalised here; ``inf`` for every row when ``reference`` is empty.
    """
    u = unit_rows(vectors)
    if len(reference) == 0:
        return np.full(len(u), np.inf)
    r = unit_rows(reference)
    out = np.empty(len(u))
    for s in range(0, len(u), _CHUNK):
        out[s : s + _CHUNK] = 1.0 - (u[s : s + _CHUNK] @ r.T).max(axis=1)
    return np.maximum(out, 0.0)


def rank_for_labelling(
    proba: np.ndarray,
    vectors: np.ndarray,
    labelled_vectors: np.ndarray,
    budget: int,
    beta: float = 0.5,
    uncertainty: str = "entropy",
) -> Acquisition:
    """Rank up to ``budget`` candidates by the greedy acquisition score (see module doc).

    Args:
        proba: Class probabilities of the candidates ``(N, C)``.
        vectors: Embeddings of the candidates ``(N, F)``.
        labelled_vectors: Embeddings of the labelled training images ``(M, F)`` (``M`` may be 0).
        budget: Number of candidates to rank (clipped to ``N``).
        beta: Diversity weight :math:`\\beta` in [0, 1].
        uncertainty: ``"entropy"`` or ``"margin"``.

    Raises:
        ValueError: If ``beta`` is outside [0, 1] or the shapes disagree.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    n = len(proba)
    if len(vectors) != n:
        raise ValueError(f"{n} probability rows but {len(vectors)} embeddings")
    u = uncertainty_scores(proba, uncertainty) if n else np.zeros(0)
    unit = unit_rows(vectors) if n else np.zeros((0, 1), np.float32)
    d = distance_to_set(unit, labelled_vectors) if n else np.zeros(0)
    scale = _scale(d, np.ones(n, dtype=bool))
    chosen = np.zeros(n, dtype=bool)
    picks, scores, us, deltas = [], [], [], []
    for _ in range(min(max(budget, 0), n)):
        delta = _delta(d, scale)
        s = (1.0 - beta) * u + beta * delta
        s[chosen] = -np.inf
        i = int(np.argmax(s))
        picks.append(i)
        scores.append(s[i])
        us.append(u[i])
        deltas.append(delta[i])
        chosen[i] = True
        d = np.minimum(d, np.maximum(1.0 - unit @ unit[i], 0.0))
        if scale is None:
            scale = _scale(d, ~chosen)
    return Acquisition(
        np.asarray(picks, dtype=np.int64),
        np.asarray(scores, dtype=np.float64),
        np.asarray(us, dtype=np.float64),
        np.asarray(deltas, dtype=np.float64),
    )


def labelling_pools(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the embeddings table: unlabelled training rows (candidates) and labelled ones."""
    train = (df["split"] == "train").to_numpy()
    labelled = df["labelled"].to_numpy().astype(bool)
    return train & ~labelled, train & labelled


def ranking_table(
    df: pd.DataFrame,
    classes: list[str],
    vectors: np.ndarray,
    candidates: np.ndarray,
    reference: np.ndarray,
    budget: int,
    beta: float,
    uncertainty: str,
) -> pd.DataFrame:
    """The ranked candidates of the embeddings table, best first (columns :data:`RANKING_COLUMNS`).

    Args:
        df: The embeddings table (``prob_<class>``, ``prediction``, ``confidence`` …).
        classes: Class names.
        vectors: Embeddings of every row of ``df``.
        candidates: Mask of the rows to rank.
        reference: Mask of the labelled rows (the start of the reference set).
        budget: Number of candidates to rank.
        beta: Diversity weight.
        uncertainty: ``"entropy"`` or ``"margin"``.
    """
    t = df.loc[candidates].reset_index(drop=True)
    res = rank_for_labelling(
        probabilities(t, classes),
        vectors[candidates],
        vectors[reference],
        budget,
        beta,
        uncertainty,
    )
    chosen = t.iloc[res.order]
    return pd.DataFrame(
        {
            "rank": np.arange(1, len(res.order) + 1),
            "image_id": chosen["image_id"].to_numpy(),
            "patient_key": chosen["patient_key"].to_numpy(),
            "score": res.score,
            "uncertainty": res.uncertainty,
            "diversity": res.diversity,
            "predicted": chosen["prediction"].to_numpy(),
            "confidence": chosen["confidence"].to_numpy(dtype=np.float64),
        },
        columns=list(RANKING_COLUMNS),
    )


def _scale(d: np.ndarray, among: np.ndarray) -> float | None:
    """:math:`D^*`: the largest finite distance among ``among``; ``None`` while none is finite."""
    finite = d[among & np.isfinite(d)]
    return float(finite.max()) if finite.size else None


def _delta(d: np.ndarray, scale: float | None) -> np.ndarray:
    """:math:`\\delta = \\min(1, D / D^*)`, 1 where ``D`` is infinite, 0 when ``D^* = 0``."""
    out = np.ones_like(d, dtype=np.float64)
    if scale is None:
        return out
    finite = np.isfinite(d)
    out[finite] = np.clip(d[finite] / scale, 0.0, 1.0) if scale > 0 else 0.0
    return out
