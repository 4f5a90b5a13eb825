"""The training cache: decoded, intensity-normalised arrays stored once, and what ingest remembers.

Layout, next to the manifest ``dir/name.csv``::

    dir/name.cache/<key[:2]>/<key>.npy   float32, (1, H, W) for 2-D rows, (1, D, H, W) for 3-D rows
    dir/name.cache/<key[:2]>/<shard>.npy float32 (n, 1, H, W): a shard of an array file's rows
    dir/name.cache/packed/<size>/…       packed arrays of the streamed datasets (medcl.data.packed)
    dir/name.cache/state.json            per-file results of the last ingest (for incremental runs)

``key`` is the sha256 of the source file plus a frame/slice suffix (``<sha>_f003``, ``<sha>_s012``
…); for a 3-D DICOM series it is the digest of the sorted slice digests. Array files (MedMNIST
``.npz``) are not split into one file per image: their rows are written in shards of up to
:data:`SHARD_ROWS` images (``<sha>_<split>_c0000000`` …, the suffix is the first row), and a row's
key (and the manifest's ``cache_path``) names its shard and its position in it:
``<shard>#<row>`` (``…/<shard>.npy#17``). :func:`load_cached` reads either form.

Intensity convention (fixed; training and evaluation rely on it):

* ``hu`` — CT (DICOM modality CT, monochrome): Hounsfield units after the modality LUT, unclipped,
  no window applied.
* ``unit`` — everything else: clipped at the image's (or volume's) 0.5th and 99.5th percentiles and
  scaled to [0, 1]; constant images become 0; MONOCHROME1 is inverted (``1 - x``).

An optional ``size`` resizes in-plane to ``size × size`` (bilinear with antialiasing, which averages
like area interpolation when shrinking; :func:`medcl.data.resize.resize_to`) after the intensity
mapping.

The state file holds sizes, modification times, digests, pseudonymous row metadata and rejection
reasons — nothing read from a header in clear; ingest keys it by ``source_id`` (no paths). A re-run
trusts a file whose path, size and modification time are unchanged and reuses its rows without
reading it again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medcl.data.packed import PACKED_DIR, ArrayFile, reading_array, split_ref
from medcl.data.readers.base import HU, UNIT
from medcl.data.resize import resize_to
from medcl.io import _plain, atomic_path, write_text

if TYPE_CHECKING:
    from medcl.data.ingest.rowblock import RowBlock

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
STATE_NAME = "state.json"
STATE_VERSION = 1
SHARD_ROWS = 8192
"""Images per shard of an array file (about 25 MB at 28², 130 MB at 64²)."""


def cache_dir(manifest: str | os.PathLike[str]) -> Path:
    """Cache folder of a manifest: ``dir/name.csv`` → ``dir/name.cache``."""
    p = Path(manifest)
    return p.with_name(p.stem + ".cache")


def cache_key(sha256: str, suffix: str = "") -> str:
    """Cache key of a file digest plus frame/slice suffix."""
    return f"{sha256}{suffix}"


def cache_file(root: str | os.PathLike[str], key: str) -> Path:
    """Where the array for ``key`` lives under the cache folder ``root`` (``…/<shard>.npy#<row>``
    for a row of a shard: see :func:`array_file` for the file itself)."""
    name, sep, row = key.partition("#")
    return Path(root) / name[:2] / (f"{name}.npy{sep}{row}")


def cache_ref(root: str, key: str) -> str:
    """:func:`cache_file` as a string, for ``root`` already absolute (fast for many rows)."""
    name, sep, row = key.partition("#")
    return f"{root}/{name[:2]}/{name}.npy{sep}{row}"


def array_file(ref: str | os.PathLike[str]) -> Path:
    """The file that holds a cached array: ``…/<shard>.npy#17`` → ``…/<shard>.npy``."""
    return Path(split_ref(str(ref))[0])


def key_present(root: str | os.PathLike[str], key: str) -> bool:
    """Whether the file holding ``key``'s array exists (a shard row: its shard)."""
    return array_file(cache_file(root, key)).is_file()


def to_cache_intensity(array: np.ndarray, intensity: str, invert: bool = False) -> np.ndarray:
    """Map physical values to the cache's intensity convention (module docstring), as float32.

    CT keeps its Hounsfield units; every other image is clipped at its 0.5th and 99.5th
    percentiles and scaled to [0, 1]. (Training maps this to the model's input range later, with
    :func:`medcl.transforms.to_model_intensity`.)

    Args:
        array: Physical values (HU for CT).
        intensity: ``"hu"`` or ``"unit"``.
        invert: MONOCHROME1 (ignored for ``"hu"``).
    """
    a = np.asarray(array, dtype=np.float64)
    if intensity == HU:
        return np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
    if intensity != UNIT:
        raise ValueError(f"unknown intensity rule {intensity!r}")
    finite = np.isfinite(a)
    values = a[finite] if not finite.all() else a
    out = np.zeros(a.shape, dtype=np.float64)
    if values.size:
        lo, hi = np.percentile(values, [LOW_PERCENTILE, HIGH_PERCENTILE])
        if hi > lo:
            out = np.clip((a - lo) / (hi - lo), 0.0, 1.0)
            out[~finite] = 0.0
    if invert:
        out = 1.0 - out
    return out.astype(np.float32)


def prepare(
    array: np.ndarray, intensity: str, invert: bool = False, size: int | None = None
) -> np.ndarray:
    """Apply the intensity convention, add the channel axis, resize: the array that gets cached.

    Args:
        array: ``(H, W)`` or ``(D, H, W)`` physical values.
        intensity: ``"hu"`` or ``"unit"``.
        invert: MONOCHROME1.
        size: In-plane size, or None to keep the source size.

    Returns:
        float32 ``(1, H, W)`` or ``(1, D, H, W)``.
    """
    out = to_cache_intensity(array, intensity, invert)[None]
    if size is not None:
        out = resize_to(out, size, 2, antialias=True)  # in-plane only, also for volumes
    return np.ascontiguousarray(out, dtype=np.float32)


def store(array: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write ``array`` as ``.npy`` atomically (safe with several worker processes)."""
    p = Path(path)
    with atomic_path(p) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
    return p


def load_cached(path: str | os.PathLike[str]) -> np.ndarray:
    """Load a cached array (a manifest's ``cache_path``: a file, or ``<shard>.npy#<row>``).

    Returns:
        float32 ``(1, H, W)`` or ``(1, D, H, W)``.

    Raises:
        MedclError: When the file is missing or not a cached array.
    """
    name, row = split_ref(str(path))
    if row is not None:
        return ArrayFile(name).row(row)
    p = Path(path)
    with reading_array(p, "; re-run medcl ingest"):
        return np.load(p, allow_pickle=False)


def load_many(refs: Sequence[str]) -> list[np.ndarray]:
    """:func:`load_cached` of every reference, rows of one shard read together (run by run)."""
    out: list[np.ndarray | None] = [None] * len(refs)
    by_shard: dict[str, list[tuple[int, int]]] = {}
    for i, ref in enumerate(refs):
        name, row = split_ref(str(ref))
        if row is None:
            out[i] = load_cached(ref)
        else:
            by_shard.setdefault(name, []).append((i, row))
    for name, pairs in by_shard.items():
        block = ArrayFile(name).rows([r for _, r in pairs])
        for (i, _), arr in zip(pairs, block, strict=True):
            out[i] = arr
    return out  # type: ignore[return-value]


def prune(root: str | os.PathLike[str], keep: set[str]) -> int:
    """Delete cached arrays (and stale temporary files) whose key is not in ``keep`` (a shard is
    kept while one of its rows is); when any was removed, also the packed arrays (derived data,
    rebuilt on demand by the streamed datasets).

    Returns:
        How many files were removed.
    """
    removed = 0
    base = Path(root)
    if not base.is_dir():
        return 0
    keep = {k.partition("#")[0] for k in keep}
    for p in base.glob("*/*"):
        stale = p.name.endswith(".tmp") or (p.suffix == ".npy" and p.stem not in keep)
        if stale and p.is_file():
            p.unlink()
            removed += 1
    packed = base / PACKED_DIR
    if removed and packed.is_dir():  # derived data: rebuilt on demand from the remaining files
        shutil.rmtree(packed, ignore_errors=True)
    return removed


@dataclass
class FileRecord:
    """What ingest learnt from one file.

    Attributes:
        size: Bytes.
        mtime_ns: Modification time.
        sha256: Digest of the content (``""`` when unreadable).
        rows: Row metadata (pseudonymous; see :mod:`medcl.data.ingest`): dicts, or an array
            file's rows by column (:class:`medcl.data.ingest.rowblock.RowBlock`, fresh results
            only; a loaded state holds dicts).
        reason: Rejection reason, or None.
        slice: 3-D mode: series-slice geometry and keys (the file's rows come from its series).
        phi_path: The file's path (relative to the ingest root) repeats one of its identifying
            header values (:mod:`medcl.data.ingest.phi`).
    """

    size: int
    mtime_ns: int
    sha256: str
    rows: list[dict] | RowBlock = field(default_factory=list)
    reason: str | None = None
    slice: dict | None = None
    phi_path: bool = False


@dataclass
class IngestState:
    """Per-file and per-series results of an ingest, saved for the next run.

    Attributes:
        fingerprint: Settings the results depend on (dims, size, secret check, version); a state
            with another fingerprint is ignored.
        files: Relative path → :class:`FileRecord`.
        series: Series id → ``{"rows": [...], "reason": str | None}`` (3-D mode).
    """

    fingerprint: dict
    files: dict[str, FileRecord] = field(default_factory=dict)
    series: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike[str], fingerprint: dict) -> IngestState:
        """The saved state if it exists and matches ``fingerprint``, else an empty one."""
        p = Path(path)
        try:
            raw = json.loads(p.read_text())
            if raw.get("fingerprint") != fingerprint:
                return cls(fingerprint)
            files = {k: FileRecord(**v) for k, v in raw.get("files", {}).items()}
            return cls(fingerprint, files, dict(raw.get("series", {})))
        except (OSError, ValueError, TypeError, AttributeError):
            return cls(fingerprint)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically as JSON.

        Rows held by column (:class:`medcl.data.ingest.rowblock.RowBlock`) are written as the
        same text their rows as dicts give, built by column: the encoder sees a placeholder.
        """
        blocks: dict[str, RowBlock] = {}
        tag = uuid.uuid4().hex

        def shallow(rec: FileRecord) -> dict:
            d = _shallow(rec)
            if not isinstance(d["rows"], list):
                token = f"<rows {tag} {len(blocks)}>"
                blocks[json.dumps(token)] = d["rows"]
                d["rows"] = token
            return d

        data = {
            "fingerprint": self.fingerprint,
            "files": {k: shallow(v) for k, v in sorted(self.files.items())},
            "series": dict(sorted(self.series.items())),
        }
        text = json.dumps(data, indent=None, separators=(",", ":"), default=_plain)
        pieces = [text]
        if blocks:  # the envelope cut at the placeholders, each replaced by its rows' text
            pieces = re.split("(" + "|".join(map(re.escape, blocks)) + ")", text)
            pieces = [p if i % 2 == 0 else blocks[p].to_json() for i, p in enumerate(pieces)]
        try:  # ensure_ascii: the text is ASCII, written as bytes piece by piece (no joined copy)
            raw = [p.encode("ascii") for p in pieces]
        except UnicodeEncodeError:  # a default= str() of an odd value
            write_text("".join(pieces), path)
            return
        del pieces, text
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            for chunk in raw:
                fh.write(chunk)


def _shallow(rec: FileRecord) -> dict:
    """``asdict`` without the deep copy (the rows are written, not kept: 10⁶ rows took minutes)."""
    return {f.name: getattr(rec, f.name) for f in fields(rec)}
