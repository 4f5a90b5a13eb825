"""Suspected near-duplicate images across train/val/test: leakage that patient ids do not catch.

A split by patient keeps one patient's images on one side, but not the same image filed under two
patient ids: re-exported from the archive under another id, re-windowed, resized. Such a pair
across splits inflates test scores as a slice-level split does (Yagis et al. 2021). Exact copies
share their ``sha256``; near-copies are found here in two passes:

1. **Perceptual hash** (Zauner 2010, "pHash"): the image (the middle slice of a volume) is resized
   to ``4k × 4k`` by area averaging, its 2-D DCT-II taken, and the ``k × k`` lowest-frequency
   coefficients (without the constant term) compared with their median: ``k² − 1`` bits. The
   DCT's low frequencies keep the image's layout and drop fine detail, so a resized copy keeps
   nearly every bit; a positive affine change of intensity (re-windowing, rescaling) multiplies
   every non-constant coefficient by the same positive factor and keeps every bit. Two images are
   suspected when their Hamming distance is at most ``max_bits`` (default :data:`MAX_BITS`).
2. **Embedding distance**, when an encoder is given: the cosine distance ``1 − cos`` of the two
   images' encoder features is listed with each pair, and cross-split pairs closer than
   ``max_cosine`` are added (copies a hash misses, e.g. a cropped one, and neighbouring slices).

Only pairs in *different* splits are reported (within a split a copy does not leak), by their
pseudonymous ``image_id``, with the distances. :func:`drop_leaks` removes the copy in the later
split (``train`` < ``val`` < ``test``) from the manifest and lists it in the sidecar.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.fft import dctn

from medcl.data.cache import load_cached
from medcl.data.manifest import SPLITS, Manifest
from medcl.io import atomic_path

HASH_SIZE = 16
"""``k``: the hash keeps the ``k × k`` lowest DCT frequencies (255 bits). The common 8 × 8 hash
(63 bits) is too coarse for medical images, whose anatomy looks alike at low frequencies: on the
phantom cohort two different patients' images came within 2 of 63 bits, while at 255 bits they
stay 20 or more bits apart and re-windowed or resized copies within 6."""
MAX_BITS = 12
"""Default largest Hamming distance (of 255 bits) of a suspected pair."""
MAX_COSINE = 0.02
"""Default largest embedding cosine distance of a suspected pair (with an encoder)."""
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


@functools.lru_cache(maxsize=64)
def _area_weights(n: int, size: int) -> np.ndarray:
    """``(size, n)``: row ``i`` averages the source pixels under target cell ``i`` (sub-pixel
    overlaps weighted by their length)."""
    edges = np.linspace(0, n, size + 1)
    w = np.zeros((size, n))
    for i in range(size):
        lo, hi = edges[i], edges[i + 1]
        for j in range(int(np.floor(lo)), min(n, int(np.ceil(hi)))):
            w[i, j] = min(hi, j + 1) - max(lo, j)
    return w / w.sum(axis=1, keepdims=True)


def _area_resize(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` (2-D) resampled to ``size × size`` by area averaging."""
    h, w = image.shape
    return _area_weights(h, size) @ image @ _area_weights(w, size).T


def plane(array: np.ndarray) -> np.ndarray:
    """The 2-D image a hash is taken of: the array itself, or the middle slice of a volume."""
    a = np.asarray(array, dtype=np.float64)
    while a.ndim > 2:
        a = a[a.shape[0] // 2] if a.shape[0] > 1 else a[0]
    return a


def phash(image: np.ndarray, hash_size: int = HASH_SIZE) -> np.ndarray:
    """The perceptual hash of a 2-D image (or a volume's middle slice), ``k² − 1`` bools.

    Args:
        image: ``(H, W)``, ``(1, H, W)`` or ``(1, D, H, W)`` values.
        hash_size: ``k``.

    Returns:
        Bit ``i`` says whether the ``i``-th lowest-frequency DCT coefficient (row-major, the
        constant term left out) exceeds their median.
    """
    small = _area_resize(plane(image), 4 * hash_size)
    coeffs = dctn(small, type=2, norm="ortho")[:hash_size, :hash_size].ravel()[1:]
    return coeffs > np.median(coeffs)


def packed(bits: np.ndarray) -> np.ndarray:
    """``(N, B)`` bools packed into ``(N, ceil(B/8))`` bytes for :func:`hamming`."""
    return np.packbits(np.asarray(bits, dtype=bool), axis=1)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances ``(len(a), len(b))`` of packed hashes."""
    x = np.bitwise_xor(a[:, None, :], b[None, :, :])
    return _POPCOUNT[x].sum(axis=2, dtype=np.int64)


@dataclass
class LeakReport:
    """Suspected cross-split near-duplicates.

    Attributes:
        pairs: One row per pair: ``image_id_a``, ``split_a``, ``image_id_b``, ``split_b`` (``a``
            in the earlier split), ``hash_bits`` (Hamming distance), ``cosine`` (embedding
            distance, NaN without an encoder), ``found_by`` (``hash``, ``embedding`` or both).
        hashed: Rows compared.
        max_bits: The hash threshold used.
    """

    pairs: pd.DataFrame
    hashed: int
    max_bits: int

    def summary(self) -> str:
        """One console line."""
        if not len(self.pairs):
            return f"leak check: no suspected near-duplicates across splits ({self.hashed} images)"
        counts = self.pairs.groupby(["split_a", "split_b"]).size()
        parts = ", ".join(f"{a}–{b}: {n}" for (a, b), n in counts.items())
        return (
            f"leak check: {len(self.pairs)} suspected near-duplicate pair(s) across splits "
            f"({parts}) among {self.hashed} images; check them before trusting a test score"
        )

    def table(self) -> str:
        """The pairs as aligned text, one line each (pseudonymous ids and distances only)."""
        if not len(self.pairs):
            return ""
        return self.pairs.to_string(index=False, float_format=lambda v: f"{v:.4f}")


_COLUMNS = ["image_id_a", "split_a", "image_id_b", "split_b", "hash_bits", "cosine", "found_by"]
_ORDER = {s: i for i, s in enumerate(SPLITS)}


def find_leaks(
    manifest: Manifest,
    max_bits: int = MAX_BITS,
    embed: Callable[[Manifest], np.ndarray] | None = None,
    max_cosine: float = MAX_COSINE,
    chunk: int | None = None,
) -> LeakReport:
    """Suspected near-duplicate pairs across the splits of ``manifest``.

    Args:
        manifest: A split manifest with cached images (``cache_path``).
        max_bits: Largest Hamming distance of the perceptual hashes of a suspected pair.
        embed: Optional ``rows → (N, F)`` encoder features of the rows, in their order.
        max_cosine: Largest embedding cosine distance of a pair added by the embedding pass.
        chunk: Rows compared with all others at once (default: about 64 MB of work memory).

    Returns:
        The :class:`LeakReport`.
    """
    df = manifest.df
    rows = manifest.subset(df["split"].isin(SPLITS) & (df["cache_path"] != ""))
    sub = rows.df
    n = len(sub)
    if n == 0:
        return LeakReport(pd.DataFrame(columns=_COLUMNS), 0, max_bits)
    codes = packed(np.stack([phash(load_cached(p)) for p in sub["cache_path"]]))
    split = sub["split"].map(_ORDER).to_numpy()
    chunk = chunk or max(1, 2**26 // (n * codes.shape[1] * 8))
    found: dict[tuple[int, int], dict[str, float | int | str]] = {}
    for start in range(0, n, chunk):
        d = hamming(codes[start : start + chunk], codes)
        for i, j in zip(*np.nonzero(d <= max_bits), strict=True):
            a, b = start + int(i), int(j)
            if split[a] < split[b]:
                found[(a, b)] = {"hash_bits": int(d[i, j]), "found_by": "hash"}
    if embed is not None:
        feats = np.asarray(embed(rows), dtype=np.float64)
        feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        for start in range(0, n, chunk):
            cos = 1.0 - feats[start : start + chunk] @ feats.T
            near = cos <= max_cosine
            for (a, b), rec in found.items():
                if start <= a < start + chunk:
                    rec["cosine"] = float(cos[a - start, b])
            for i, j in zip(*np.nonzero(near), strict=True):
                a, b = start + int(i), int(j)
                if split[a] < split[b]:
                    rec = found.setdefault((a, b), {"found_by": "embedding"})
                    rec["cosine"] = float(cos[i, j])
                    if rec["found_by"] == "hash":
                        rec["found_by"] = "hash+embedding"
        for (a, b), rec in found.items():
            if "hash_bits" not in rec:
                rec["hash_bits"] = int(hamming(codes[a : a + 1], codes[b : b + 1])[0, 0])
    ids, splits = sub["image_id"].to_numpy(), sub["split"].to_numpy()
    table = pd.DataFrame(
        [
            {
                "image_id_a": ids[a],
                "split_a": splits[a],
                "image_id_b": ids[b],
                "split_b": splits[b],
                "hash_bits": rec["hash_bits"],
                "cosine": rec.get("cosine", np.nan),
                "found_by": rec["found_by"],
            }
            for (a, b), rec in sorted(found.items())
        ],
        columns=_COLUMNS,
    )
    table = table.sort_values(["hash_bits", "image_id_a", "image_id_b"], kind="stable")
    return LeakReport(table.reset_index(drop=True), n, max_bits)


def drop_leaks(manifest: Manifest, report: LeakReport) -> tuple[Manifest, list[str]]:
    """Take each suspected pair's later-split copy (``image_id_b``) out of the manifest.

    The row is removed (not just left without a split, which a later split would fill again);
    the sidecar keeps what was removed and why under ``dropped_leaks`` (pseudonymous ids and
    distances only), so the choice can be checked and undone by splitting again.

    Returns:
        The new manifest and the ``image_id`` of the rows taken out.
    """
    dropped = sorted(set(report.pairs["image_id_b"]))
    keep = ~manifest.df["image_id"].isin(dropped)
    extra = dict(manifest.extra)
    extra["dropped_leaks"] = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        for row in report.pairs.to_dict("records")
    ]
    out = Manifest(manifest.df[keep].reset_index(drop=True), list(manifest.classes), extra)
    return out, dropped


def leak_report_path(split_manifest: str | os.PathLike[str]) -> Path:
    """Where :func:`write_leak_report` puts the pairs of a split manifest:
    ``dir/name.csv`` → ``dir/name.leaks.csv``."""
    p = Path(split_manifest)
    return p.with_name(p.stem + ".leaks.csv")


def write_leak_report(report: LeakReport, split_manifest: str | os.PathLike[str]) -> Path:
    """Write the pairs (pseudonymous ids and distances only) beside the split manifest."""
    target = leak_report_path(split_manifest)
    with atomic_path(target) as tmp:
        report.pairs.to_csv(tmp, index=False)
    return target


def read_leak_report(split_manifest: str | os.PathLike[str]) -> pd.DataFrame | None:
    """The pairs :func:`write_leak_report` wrote for a split manifest, or ``None``."""
    p = leak_report_path(split_manifest)
    if not p.is_file():
        return None
    return pd.read_csv(p, dtype={"image_id_a": str, "image_id_b": str}, keep_default_na=False)
