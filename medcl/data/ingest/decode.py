"""Decoding in the workers: files to cached arrays and row metadata; 3-D series from slices.

In 2-D mode every file is read completely (:func:`file_task`). In 3-D mode DICOM CT/MR files are
only scanned for their slice geometry (:func:`scan_task`); :func:`series_stage` then groups the
slices into series (:func:`medcl.data.readers.series.plan_series`) and decodes each series as one
volume. Every failure becomes a reason from a fixed vocabulary, never an exception's text.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter, defaultdict
from pathlib import Path

from medcl.data import cache
from medcl.data.ingest.arrays import bulk_file, file_rows, looks_like_array_file
from medcl.data.ingest.discover import Task, cache_present, unreadable_reason
from medcl.data.ingest.phi import header_values, path_hits, tokens
from medcl.data.ingest.workers import Pool, WorkerConfig, capture_warnings, worker_config
from medcl.data.readers import READERS, ReadContext, Source, Unreadable, sniff
from medcl.data.readers import dicom as dicom_reader
from medcl.data.readers.base import Decoded
from medcl.data.readers.series import SeriesPlan, decode_series, plan_series
from medcl.errors import MedclError

BULK_BYTES = 4 << 20
"""Array files from this size on are converted by chunks across the workers (:mod:`.arrays`)."""

#: A worker's answer for one file: path, record, captured warnings, fatal error (or None).
FileResult = tuple[str, cache.FileRecord, Counter[str], str | None]


def decode_files(
    todo: list[Task], dims: int, pool: Pool, new: cache.IngestState, caught: Counter[str]
) -> None:
    """Read every file of ``todo`` in the pool (3-D: scan DICOM slices); record it in ``new``.

    Raises:
        MedclError: A reader's error that must stop the ingest (e.g. a multi-label MedMNIST file).
    """
    task = scan_task if dims == 3 else file_task
    if pool.workers > 1:  # a large array file is cut into chunks that use every worker
        root = Path(pool.config.root)
        bulk = [t for t in todo if t[1] >= BULK_BYTES and looks_like_array_file(root / t[0])]
        for rel, size, mtime_ns in bulk:
            rec = cache.FileRecord(size, mtime_ns, "")
            bulk_file(root, rel, rec, pool, caught)
            new.files[rel] = rec
        todo = [t for t in todo if t not in set(bulk)]
    for rel, rec, counts, fatal in pool.map(task, todo, "scan" if dims == 3 else "ingest"):
        caught.update(counts)
        if fatal:
            raise MedclError(fatal)
        new.files[rel] = rec


def _row(d: Decoded, cfg: WorkerConfig) -> dict:
    """Cache one decoded image and return its row metadata."""
    arr = cache.prepare(d.array, d.intensity, d.invert, cfg.size)
    key = cache.cache_key(d.sha256, d.suffix)
    cache.store(arr, cache.cache_file(cfg.cache_root, key))
    src_h, src_w = d.array.shape[-2:]
    h, w = arr.shape[-2:]
    sx, sy, sz = d.spacing
    return {
        "image_base": d.image_base,
        "order": d.order,
        "path": d.path,
        "patient_key": d.patient_key,
        "study_key": d.study_key,
        "modality": d.modality,
        "sha256": d.sha256,
        "dims": 3 if arr.ndim == 4 else 2,
        "rows": int(h),
        "cols": int(w),
        "slices": int(arr.shape[1]) if arr.ndim == 4 else 1,
        "spacing_x": sx * src_w / w if sx else None,
        "spacing_y": sy * src_h / h if sy else None,
        "spacing_z": sz,
        "cache_key": key,
        "intensity": d.intensity,
        "split": d.split,
        "label": d.label,
        "family": d.family,
        "members": list(d.members),
        "label_keys": dict(d.label_keys),  # matched by the labels CSV, never in the manifest
    }


def file_task(task: Task) -> FileResult:
    """Worker: read one file completely (2-D mode)."""
    return _run_file(task, scan=False)


def scan_task(task: Task) -> FileResult:
    """Worker: 3-D mode; DICOM CT/MR slices are only scanned, other files read completely."""
    return _run_file(task, scan=True)


def _run_file(task: Task, scan: bool) -> FileResult:
    """Read (or, with ``scan``, only scan) one file; every failure becomes a reason."""
    cfg = worker_config()
    rel, size, mtime_ns = task
    counts: Counter[str] = Counter()
    rec = cache.FileRecord(size, mtime_ns, "")
    fatal = None
    ctx = ReadContext(cfg.pseudonymize, cfg.dims)
    with capture_warnings(counts):
        try:
            src = Source.load(Path(cfg.root) / rel, rel)
            rec.sha256 = src.sha256
            kind = sniff(src)
            if kind == "dicom":
                rec.phi_path = _path_repeats_header(src)
            if kind == "npz":  # converted in bulk and cached as shards
                rec.rows = file_rows(src, cfg)
            elif scan and kind == "dicom":
                info, decoded = dicom_reader.scan(src, ctx)
                rec.slice = info.to_dict() if info is not None else None
                rec.rows = [_row(d, cfg) for d in decoded]
            else:
                rec.rows = [_row(d, cfg) for d in READERS[kind](src, ctx)]
        except Unreadable as exc:
            rec.rows, rec.slice, rec.reason = [], None, exc.reason
        except MedclError as exc:
            fatal = str(exc)
        except MemoryError:
            rec.rows, rec.slice = [], None
            rec.reason = "image too large to decode in memory"
        except OSError as exc:
            rec.rows, rec.slice = [], None
            rec.reason = unreadable_reason(exc)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop an ingest
            rec.rows, rec.slice = [], None
            rec.reason = f"internal error while reading ({type(exc).__name__}); please report it"
    return rel, rec, counts, fatal


def _path_repeats_header(src: Source) -> bool:
    """Whether a component of the file's relative path repeats an identifying header value."""
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(src.data), stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - no readable header: nothing to compare (path pseudonymised)
        return False
    return path_hits(src.rel, tokens(header_values(ds)))


def _series_task(plan: SeriesPlan) -> tuple[SeriesPlan, list[dict], str | None, Counter[str]]:
    """Worker: decode and cache one planned series."""
    cfg = worker_config()
    counts: Counter[str] = Counter()
    rows: list[dict] = []
    reason = None
    with capture_warnings(counts):
        try:
            rows = [_row(decode_series(plan, cfg.root), cfg)]
        except Unreadable as exc:
            reason = exc.reason
        except MemoryError:
            reason = "series rejected: volume too large to decode in memory"
        except OSError as exc:
            reason = f"series rejected: a slice cannot be read ({type(exc).__name__})"
        except Exception as exc:  # noqa: BLE001
            reason = f"internal error while stacking a series ({type(exc).__name__}); please report"
    return plan, rows, reason, counts


def series_stage(
    new: cache.IngestState,
    old: cache.IngestState,
    pool: Pool,
    cache_root: Path,
    caught: Counter[str],
) -> tuple[dict[str, list[dict]], dict[str, str], set[str]]:
    """3-D mode: group scanned slices, reuse unchanged series, decode the others.

    Returns:
        Rows per series id, the reason of every slice file of a rejected series, and the slice
        files whose series was decoded again.
    """
    series_rows, reasons, todo = _plan_series(new, old, cache_root)
    redone: set[str] = set()
    for plan, rows, reason, counts in pool.map(_series_task, todo, "series"):
        caught.update(counts)
        sid = _series_id(plan)
        redone.update(plan.members)
        new.series[sid] = {"rows": rows, "reason": reason}
        if reason is not None:
            reasons.update({m: reason for m in plan.members})
        else:
            series_rows[sid] = rows
    return series_rows, reasons, redone


def _plan_series(
    new: cache.IngestState, old: cache.IngestState, cache_root: Path
) -> tuple[dict[str, list[dict]], dict[str, str], list[SeriesPlan]]:
    """Group the scanned slices into series; reuse the unchanged ones; plan the others."""
    groups: dict[str, list] = defaultdict(list)
    for rel in sorted(new.files):
        rec = new.files[rel]
        if rec.slice is not None and rec.reason is None:
            info = dicom_reader.SliceInfo(**rec.slice)
            groups[info.series].append((rel, rec.sha256, info))
    series_rows: dict[str, list[dict]] = {}
    reasons: dict[str, str] = {}
    todo: list[SeriesPlan] = []
    for key in sorted(groups):
        plan = plan_series(key, groups[key])
        sid = _series_id(plan)
        if plan.reason is not None:
            reasons.update({m: plan.reason for m in plan.members})
            continue
        prior = old.series.get(sid)
        if prior is not None and prior.get("rows") and cache_present(prior["rows"], cache_root):
            series_rows[sid] = prior["rows"]
            new.series[sid] = prior
        elif prior is not None and prior.get("reason"):
            reasons.update({m: prior["reason"] for m in plan.members})
            new.series[sid] = prior
        else:
            todo.append(plan)
    return series_rows, reasons, todo


def _series_id(plan: SeriesPlan) -> str:
    """A series' identity: the digest of its members' paths and contents."""
    text = "\n".join(f"{m}\x00{s}" for m, s in sorted(zip(plan.members, plan.shas, strict=True)))
    return hashlib.sha256(text.encode()).hexdigest()
