"""Array files (MedMNIST ``.npz``) in bulk: chunks of rows converted together, cached as shards.

A MedMNIST file holds up to a million images in one file. Reading it image by image (one cached
``.npy`` per row, one intensity mapping per call) made ingest run at about 1,500 rows/s on one
core and left 10⁶ tiny files behind. Here a split is cut into chunks of
:data:`medcl.data.cache.SHARD_ROWS` rows; each chunk is converted at once (luma, the ``unit``
percentile scaling per image, the in-plane resize) and written as one shard
``<sha>_<split>_c<first image>.npy`` of shape ``(n, 1, H, W)``; a row's ``cache_key`` is
``<shard>#<row>``. The values are the ones the per-image rule gives
(:func:`medcl.data.cache.prepare`), image by image.

With several workers, the main process reads the file once and the chunks run in the worker pool,
each worker mapping its rows from the source file itself where the images are stored
uncompressed (``np.savez``; :func:`medcl.data.readers.npz.stored_arrays`), else from a
temporary ``.npy`` of the split the main process writes under the cache folder: a single large
file uses every worker.
With one worker (or a small file) the chunks run inline on the arrays already in memory.

A chunk hands back its rows by column (:class:`~medcl.data.ingest.rowblock.RowBlock`), the
pseudonyms already computed: the main process concatenates columns instead of building, pickling
and copying a dict per row, so the second worker is not spent waiting on it.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcl.data import cache
from medcl.data.ingest.rowblock import RowBlock, ShardKeys
from medcl.data.ingest.workers import Pool, WorkerConfig, capture_warnings, worker_config
from medcl.data.pseudonym import source_id
from medcl.data.readers import Source, Unreadable
from medcl.data.readers import npz as npz_reader
from medcl.data.readers.base import UNIT
from medcl.data.resize import resize_to
from medcl.errors import MedclError

TEMP_DIR = "tmp-arrays"


@dataclass
class Chunk:
    """One chunk of a split: what a worker needs besides the images.

    Attributes:
        rel: The file's path relative to the ingest root.
        sha256: The file's digest.
        split: The split.
        kind: Image layout (:func:`medcl.data.readers.npz.pixels`).
        per_image: Rows per image.
        first_order: ``order`` of the split's first row.
        start: Index of the chunk's first image in the split.
        labels: Class indices of the chunk's images (``(n, K)`` finding states of a multi-label
            file), or None.
        patient_ids: Patient id text of the chunk's images, or None.
        images_file: The file the worker reads the split's images from (pool path): the source
            itself when they are stored uncompressed (``images_at``), else a temporary ``.npy``;
            ``""`` inline.
        stop: One past the chunk's last image.
        images_at: Where the split's images lie in the source file, or None.
        findings: A multi-label file's finding names, else None.
    """

    rel: str
    sha256: str
    split: str
    kind: str
    per_image: int
    first_order: int
    start: int
    labels: np.ndarray | None
    patient_ids: np.ndarray | None
    images_file: str = ""
    stop: int = 0
    images_at: npz_reader.StoredArray | None = None
    findings: tuple[str, ...] | None = None


def looks_like_array_file(path: Path) -> bool:
    """A ``.npz`` whose zip directory lists a MedMNIST ``<split>_images`` array (cheap check)."""
    if path.suffix.lower() != ".npz":
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return any(f"{s}_images.npy" in names for s in npz_reader.SPLITS)


def images_per_chunk(per_image: int) -> int:
    """Images per chunk so that a shard holds at most :data:`cache.SHARD_ROWS` rows."""
    return max(1, cache.SHARD_ROWS // max(1, per_image))


def chunks_of(rel: str, sha: str, splits: list[npz_reader.SplitPlan]) -> Iterator[Chunk]:
    """The chunks of every split of the file ``rel`` (digest ``sha``), in row order."""
    for sp in splits:
        step = images_per_chunk(sp.per_image)
        for start in range(0, len(sp.images), step):
            stop = min(start + step, len(sp.images))
            yield Chunk(
                rel,
                sha,
                sp.split,
                sp.kind,
                sp.per_image,
                sp.first_order,
                start,
                None if sp.labels is None else sp.labels[start:stop],
                None if sp.patient_ids is None else sp.patient_ids[start:stop],
                stop=stop,
                images_at=sp.images_at,
                findings=sp.findings,
            )


def file_rows(src: Source, cfg: WorkerConfig) -> RowBlock | list[dict]:
    """Every row of an array file, converted and cached chunk by chunk in this process.

    Raises:
        Unreadable: See :func:`medcl.data.readers.npz.plan`.
        MedclError: Bad finding names or a patient id in two splits.
    """
    splits = npz_reader.plan(src, cfg.dims)
    images = {sp.split: sp.images for sp in splits}
    blocks = [
        chunk_rows(ch, images[ch.split][ch.start : ch.stop], cfg)
        for ch in chunks_of(src.rel, src.sha256, splits)
    ]
    return RowBlock.concat(blocks) if blocks else []


def unit_scale(block: np.ndarray) -> np.ndarray:
    """The ``unit`` rule (:func:`medcl.data.cache.to_cache_intensity`) for each image of a block.

    Each image ``x`` (a row of ``block``, any shape after the first axis) becomes
    ``clip((x - p0.5) / (p99.5 - p0.5), 0, 1)`` with its own percentiles, 0 when constant, computed
    in float64 as the per-image function does (percentiles of integer images are taken on the
    integers: the same order statistics, the same values); an image with non-finite values goes
    through the per-image function.

    Returns:
        float32, the shape of ``block``.
    """
    n = len(block)
    flat = block.reshape(n, -1)
    out = np.zeros(flat.shape, dtype=np.float32)
    if not n or not flat.shape[1]:
        return out.reshape(block.shape)
    integer = np.issubdtype(flat.dtype, np.integer) or flat.dtype == np.bool_
    finite = np.ones(n, bool) if integer else np.isfinite(flat).all(axis=1)
    ok = np.flatnonzero(finite)
    if len(ok):
        vals = flat if len(ok) == n else flat[ok]
        lo, hi = np.percentile(vals, [cache.LOW_PERCENTILE, cache.HIGH_PERCENTILE], axis=1)
        good = hi > lo
        span = np.where(good, hi - lo, 1.0)
        buf = np.subtract(vals, lo[:, None], dtype=np.float64)
        np.divide(buf, span[:, None], out=buf)
        np.clip(buf, 0.0, 1.0, out=buf)
        buf[~good] = 0.0
        out[ok] = buf
    for i in np.flatnonzero(~finite):
        out[i] = cache.to_cache_intensity(block[i], UNIT).reshape(-1)
    return out.reshape(block.shape)


ROW_FIELDS = (
    "image_base",
    "order",
    "path",
    "patient_key",
    "study_key",
    "modality",
    "sha256",
    "dims",
    "rows",
    "cols",
    "slices",
    "spacing_x",
    "spacing_y",
    "spacing_z",
    "cache_key",
    "intensity",
    "split",
    "label",
    "family",
    "members",
    "patient_ids",
)
"""The fields of an array file's row, in the order its dict (and the state file) lists them."""


def chunk_rows(ch: Chunk, images: np.ndarray, cfg: WorkerConfig) -> RowBlock:
    """Convert one chunk's images, write its shard and return its rows' metadata by column.

    The pseudonyms are computed here, in the worker, from the same texts as image by image; the
    patient ids and item texts never leave it.
    """
    pixels = npz_reader.pixels(images, ch.kind, cfg.dims)
    arr = unit_scale(pixels)[:, None]  # float32
    if cfg.size is not None:
        arr = resize_to(arr, cfg.size, 2, antialias=True)  # in-plane, like cache.prepare
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    shard = cache.cache_key(ch.sha256, f"_{ch.split}_c{ch.start:07d}")
    cache.store(arr, cache.cache_file(cfg.cache_root, shard))
    pz = cfg.pseudonymize
    dims = 3 if arr.ndim == 5 else 2
    h, w = arr.shape[-2:]
    slices = int(arr.shape[2]) if dims == 3 else 1
    per = ch.per_image
    ids = None if ch.patient_ids is None else ch.patient_ids.tolist()
    labels = None if ch.labels is None else npz_reader.label_texts(ch.labels, ch.findings)
    known: dict[str, str] = {}
    image_base: list[str] = []
    patients: list[str] = []
    studies: list[str] = []
    label_col: list[str] = []
    for k in range(len(images)):
        i = ch.start + k
        item = npz_reader.item_of(ch.rel, ch.split, i)
        if ids is None:
            patient = pz("patient", item)
        else:
            patient = known.get(ids[k]) or known.setdefault(ids[k], pz("patient", str(ids[k])))
        study = pz("study", item)
        label = "" if labels is None else labels[k]
        for z in range(per):
            suffix = npz_reader.row_suffix(ch.split, i, z if per > 1 else None)
            image_base.append(pz("image", f"{item}\x00{suffix}"))
        patients.extend([patient] * per)
        studies.extend([study] * per)
        label_col.extend([label] * per)
    n = len(image_base)
    first = ch.first_order + ch.start * per
    columns = {
        "image_base": image_base,
        "order": list(range(first, first + n)),
        "patient_key": patients,
        "study_key": studies,
        "cache_key": ShardKeys([(shard, n)]),
        "label": label_col,
    }
    constants = {
        "path": ch.rel,
        "modality": "OT",
        "sha256": ch.sha256,
        "dims": dims,
        "rows": int(h),
        "cols": int(w),
        "slices": slices,
        "spacing_x": None,
        "spacing_y": None,
        "spacing_z": None,
        "intensity": UNIT,
        "split": ch.split,
        "family": "npz",
        "members": [],
        "patient_ids": ch.patient_ids is not None,
    }
    # the state file names the file by its source_id (pipeline._to_disk): its rows' text is
    # rendered here, in the worker, rather than in the main process
    fields = ROW_FIELDS
    if (
        ch.findings is not None
    ):  # a multi-label file's rows name its findings (single-label: as before)
        fields = (*ROW_FIELDS, "findings")
        constants["findings"] = list(ch.findings)
    block = RowBlock(n, fields, columns, constants)
    return block.render_as("path", source_id(pz, ch.rel))


def chunk_task(ch: Chunk) -> tuple[RowBlock | None, Counter[str], str | None]:
    """Worker: one chunk of a split written to a temporary file by :func:`bulk_file`."""
    cfg = worker_config()
    counts: Counter[str] = Counter()
    with capture_warnings(counts):
        try:
            if ch.images_at is not None:  # in the source file itself
                images = ch.images_at.map(ch.images_file)[ch.start : ch.stop]
            else:
                images = np.load(ch.images_file, mmap_mode="r")[ch.start : ch.stop]
            return chunk_rows(ch, np.asarray(images), cfg), counts, None
        except MedclError as exc:
            return None, counts, str(exc)


@contextmanager
def _temporary_arrays(root: Path, sha: str, splits) -> Iterator[dict[str, str]]:
    """Each split's images as a temporary ``.npy`` the workers can map, unless they lie
    uncompressed in the source file (mapped there); removed afterwards."""
    folder = Path(root) / TEMP_DIR
    files: dict[str, str] = {}
    try:
        for sp in splits:
            if sp.images_at is not None:
                continue
            folder.mkdir(parents=True, exist_ok=True)
            f = folder / f"{sha}_{sp.split}.npy"
            np.save(f, np.ascontiguousarray(sp.images), allow_pickle=False)
            files[sp.split] = str(f)
        yield files
    finally:
        for f in files.values():
            Path(f).unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:
            pass


def _sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


CHANGED_REASON = "file changed while it was being read (ingest it again)"


def bulk_file(
    root: Path, rel: str, rec: cache.FileRecord, pool: Pool, caught: Counter[str]
) -> None:
    """Read one array file with the chunks spread over the pool; fill ``rec`` (rows or reason).

    Images stored uncompressed are read by the workers from the source file itself; its size and
    modification time are checked afterwards against ``rec`` (the digest is of what was read
    here).

    Raises:
        MedclError: A fatal reader error (multi-label labels, a patient id in two splits).
    """
    cfg = pool.config
    try:
        data = (root / rel).read_bytes()
        # the digest (hashlib lets go of the GIL) is computed while the arrays are planned
        with ThreadPoolExecutor(1) as hasher:
            digest = hasher.submit(_sha256, data)
            try:
                with capture_warnings(caught):
                    splits = npz_reader.plan(Source(root / rel, rel, data, ""), cfg.dims)
            finally:
                rec.sha256 = digest.result()
        src = Source(root / rel, rel, data, rec.sha256)
        del data
    except Unreadable as exc:
        rec.rows, rec.reason = [], exc.reason
        return
    except OSError:
        rec.rows, rec.reason = [], "file cannot be read (OSError)"
        return
    with _temporary_arrays(Path(cfg.cache_root), src.sha256, splits) as files:
        del src
        tasks = []
        for ch in chunks_of(rel, rec.sha256, splits):
            ch.images_file = files.get(ch.split) or str(root / rel)
            tasks.append(ch)
        del splits
        blocks: list[RowBlock] = []
        for block, counts, fatal in pool.map(chunk_task, tasks, "ingest chunks", chunksize=1):
            caught.update(counts)
            if fatal or block is None:
                raise MedclError(fatal or "internal error: a chunk gave no rows; please report")
            blocks.append(block)
    try:
        st = (root / rel).stat()
        changed = (st.st_size, st.st_mtime_ns) != (rec.size, rec.mtime_ns)
    except OSError:
        changed = True
    if changed and any(t.images_at is not None for t in tasks):
        rec.rows, rec.reason = [], CHANGED_REASON
        return
    rec.rows = RowBlock.concat(blocks) if blocks else []
