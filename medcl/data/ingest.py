"""``medcl ingest``: a folder (or one file) of medical images → a de-identified manifest.

Every regular file under SOURCE is considered, whatever its name; its format is read from its
content (:func:`medcl.data.readers.sniff`). Each file ends up either as one or more manifest rows or
as one line of the rejects file with a reason. Outputs, next to ``MANIFEST.csv``:

=========================== ======================================================================
``MANIFEST.csv``            rows (see :mod:`medcl.data.manifest`), ``MANIFEST.meta.json`` sidecar
``MANIFEST.rejects.csv``    ``path,reason`` for every file that gave no row
``MANIFEST.ingest.log``     counts, reasons and captured library warnings (no paths, no PHI)
``MANIFEST.cache/``         normalised float32 arrays and the incremental state (:mod:`.cache`)
=========================== ======================================================================

De-identification: readers pseudonymise identifiers as soon as they read them (keyed HMAC, project
secret); reasons and log lines are built from a fixed vocabulary and never quote a header value or a
library's exception message; library warnings are captured and only counted.

Labels, in order of precedence:

1. MedMNIST ``.npz`` rows carry their own labels (and splits).
2. ``labels`` CSV with columns ``path,label`` (optional ``patient``), ``path`` relative to SOURCE.
   A 3-D series row takes the label of its folder, else the common label of its slice files.
   ``patient`` (if present) replaces the path-based patient key of non-DICOM images.
3. Without a labels CSV, PNG/TIFF/JPEG images are labelled by class folder when **every** such
   image sits directly in a first-level folder (``SOURCE/<class>/<image>``); otherwise they stay
   unlabelled.

Classes: ``classes`` when given (labels must be among them; MedMNIST index ``i`` becomes
``classes[i]``), else the labels found (MedMNIST: ``"0"`` … ``"K-1"``), sorted numerically when
all are integers.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import re
import sys
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd
from tqdm import tqdm

from medcl.data import cache
from medcl.data.manifest import Manifest, meta_path, new_frame, write_manifest
from medcl.data.pseudonym import Pseudonymizer, load_or_create_secret, secret_path
from medcl.data.readers import READERS, ReadContext, Source, Unreadable, sniff
from medcl.data.readers import dicom as dicom_reader
from medcl.data.readers import npz as npz_reader
from medcl.data.readers.base import HU, UNIT, Decoded
from medcl.data.readers.series import SeriesPlan, decode_series, plan_series
from medcl.errors import MedclError

RULES_VERSION = 1
LABELS_REASON = "the labels CSV given with --labels (not an image)"
_QUIET_LOGGERS = ("pydicom", "nibabel", "PIL")
_WARNING_SOURCES = ("pydicom", "nibabel", "PIL", "numpy", "torch", "medcl")


@dataclass
class IngestReport:
    """What one ingest did.

    Attributes:
        manifest: The manifest CSV written.
        rejects: The rejects CSV written (``path,reason``).
        files_seen: Regular files considered under SOURCE.
        rows: Manifest rows.
        rejected: Files that gave no row.
        skipped_unchanged: Files not read again because path, size and mtime were unchanged.
        reasons: Rejected files per reason.
    """

    manifest: Path
    rejects: Path
    files_seen: int
    rows: int
    rejected: int
    skipped_unchanged: int
    reasons: dict[str, int] = field(default_factory=dict)


def rejects_path(manifest: str | os.PathLike[str]) -> Path:
    """``dir/name.csv`` → ``dir/name.rejects.csv``."""
    p = Path(manifest)
    return p.with_name(p.stem + ".rejects.csv")


def log_path(manifest: str | os.PathLike[str]) -> Path:
    """``dir/name.csv`` → ``dir/name.ingest.log``."""
    p = Path(manifest)
    return p.with_name(p.stem + ".ingest.log")


def ingest(
    source: Path,
    out: Path,
    labels: Path | None = None,
    classes: list[str] | None = None,
    dims: int = 2,
    workers: int = 1,
    size: int | None = None,
    secret: Path | None = None,
    progress: bool = True,
) -> IngestReport:
    """Build (or incrementally update) a manifest and its training cache from SOURCE.

    Args:
        source: A folder (walked recursively, every regular file) or a single file.
        out: Manifest CSV to write; rejects, log, sidecar and cache go next to it.
        labels: CSV ``path,label[,patient]`` with paths relative to ``source``.
        classes: Declared class names (order = class index).
        dims: 2 (a row per image, frame or slice) or 3 (a row per volume / CT-MR series).
        workers: Processes decoding in parallel; results are identical for any number.
        size: Resize cached arrays in-plane to ``size × size`` pixels.
        secret: Project secret file for the pseudonyms (default: see
            :func:`medcl.data.pseudonym.secret_path`).
        progress: Show a progress bar on stderr.

    Returns:
        The report; the rejects file lists every file that gave no row.

    Raises:
        MedclError: Bad arguments, an unusable labels CSV, labels outside ``classes``, or a
            multi-label MedMNIST file.
    """
    started = time.monotonic()
    source, out = Path(source), Path(out)
    _check_arguments(source, out, labels, classes, dims, workers, size)
    root = source if source.is_dir() else source.parent
    pz = Pseudonymizer(load_or_create_secret(secret))
    cache_root = cache.cache_dir(out)
    label_file = Path(labels).resolve() if labels is not None else None
    key_file = secret_path(secret)
    exclude = {
        p.resolve()
        for p in (
            out,
            meta_path(out),
            rejects_path(out),
            log_path(out),
            out.with_name(out.name + ".tmp"),
            key_file,
            key_file.parent / ".gitignore",
        )
    }
    files, skipped_own = _walk(source, exclude, cache_root.resolve())
    if not files:
        raise MedclError(f"{source}: no files to ingest")
    table = _read_labels(Path(labels), root) if labels is not None else None
    fingerprint = {
        "version": RULES_VERSION,
        "dims": dims,
        "size": size,
        "secret_check": pz("medcl-state", "fingerprint"),
    }
    state_file = cache_root / cache.STATE_NAME
    old = cache.IngestState.load(state_file, fingerprint)
    new = cache.IngestState(fingerprint)
    caught: Counter[str] = Counter()
    config = _WorkerConfig(str(root), pz, dims, size, str(cache_root))

    todo, unchanged = _partition(files, root, label_file, old, new, cache_root)
    with _quiet_loggers(), _Pool(workers, config, progress) as pool:
        task = _scan_task if dims == 3 else _file_task
        for rel, rec, counts, fatal in pool.map(task, todo, "scan" if dims == 3 else "ingest"):
            caught.update(counts)
            if fatal:
                raise MedclError(fatal)
            new.files[rel] = rec
        series_rows, series_reasons, redone = (
            _series_stage(new, old, pool, cache_root, caught) if dims == 3 else ({}, {}, set())
        )

    rows, reasons = _collect(files, new, series_rows, series_reasons)
    how_labelled = _apply_labels(rows, table, pz)
    declared = _classes(rows, classes)
    df = _frame(rows, root, cache_root)
    skipped = len(unchanged - redone)
    counts = Counter(reasons.values())
    extra = _sidecar(rows, dims, size, how_labelled, counts)
    manifest = Manifest(df, declared, extra)
    write_manifest(manifest, out)
    _write_rejects(reasons, root, out)
    keep = {r["cache_key"] for r in rows}
    cache.prune(cache_root, keep)
    new.save(state_file)
    report = IngestReport(
        manifest=out,
        rejects=rejects_path(out),
        files_seen=len(files),
        rows=len(df),
        rejected=len(reasons),
        skipped_unchanged=skipped,
        reasons=dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
    )
    _write_log(
        report,
        rows,
        caught,
        skipped_own,
        dims,
        workers,
        size,
        how_labelled,
        time.monotonic() - started,
    )
    return report


def _partition(
    files: list[str],
    root: Path,
    label_file: Path | None,
    old: cache.IngestState,
    new: cache.IngestState,
    cache_root: Path,
) -> tuple[list[tuple[str, int, int]], set[str]]:
    """Split files into work ``(rel, size, mtime_ns)`` and unchanged ones (records reused)."""
    todo: list[tuple[str, int, int]] = []
    unchanged: set[str] = set()
    for rel in files:
        path = root / rel
        if label_file is not None and path.name == label_file.name and path.resolve() == label_file:
            new.files[rel] = cache.FileRecord(0, 0, "", reason=LABELS_REASON)
            continue
        try:
            st = path.stat()
        except OSError as exc:  # vanished or unreadable since the walk
            new.files[rel] = cache.FileRecord(0, 0, "", reason=_unreadable(exc))
            continue
        rec = old.files.get(rel)
        if (
            rec is not None
            and rec.size == st.st_size
            and rec.mtime_ns == st.st_mtime_ns
            and _cache_present(rec.rows, cache_root)
        ):
            new.files[rel] = rec
            unchanged.add(rel)
        else:
            todo.append((rel, st.st_size, st.st_mtime_ns))
    return todo, unchanged


def _collect(
    files: list[str],
    new: cache.IngestState,
    series_rows: dict[str, list[dict]],
    series_reasons: dict[str, str],
) -> tuple[list[dict], dict[str, str]]:
    """All rows (copies, sorted by path and order) and every rejected file's reason."""
    rows: list[dict] = []
    reasons: dict[str, str] = {}
    for rel in files:
        rec = new.files[rel]
        if rec.reason is not None:
            reasons[rel] = rec.reason
        elif rec.slice is not None:
            if rel in series_reasons:
                reasons[rel] = series_reasons[rel]
        else:
            rows.extend(dict(r) for r in rec.rows)  # copies: labels must not reach the state
    for series_rowset in series_rows.values():
        rows.extend(dict(r) for r in series_rowset)
    rows.sort(key=lambda r: (r["path"], r["order"]))
    in_rows = {r["path"] for r in rows} | {m for r in rows for m in r.get("members", ())}
    for rel in files:  # defensive: every file must be accounted for
        if rel not in reasons and rel not in in_rows:
            reasons[rel] = "internal error: file produced neither a row nor a reason; please report"
    return rows, reasons


def _unreadable(exc: OSError) -> str:
    return f"file cannot be read ({type(exc).__name__})"


# --------------------------------------------------------------------------------------------------
# arguments, walking, labels


def _check_arguments(source, out, labels, classes, dims, workers, size) -> None:
    if not source.exists():
        raise MedclError(f"{source}: no such file or folder")
    if dims not in (2, 3):
        raise MedclError(f"--dims must be 2 or 3, not {dims}")
    if workers < 1:
        raise MedclError(f"--workers must be at least 1, not {workers}")
    if size is not None and size < 1:
        raise MedclError(f"--size must be a positive number of pixels, not {size}")
    if out.suffix.lower() != ".csv":
        raise MedclError(f"{out}: the manifest must be a .csv file")
    if labels is not None and not Path(labels).is_file():
        raise MedclError(f"{labels}: labels CSV not found")
    if classes is not None:
        names = [str(c) for c in classes]
        if not names or any(not c.strip() for c in names) or len(set(names)) != len(names):
            raise MedclError(f"--classes must be distinct non-empty names, got {names}")


def _walk(source: Path, exclude: set[Path], cache_root: Path) -> tuple[list[str], int]:
    """Relative POSIX paths of all regular files, sorted; ingest's own outputs left out."""
    if source.is_file():
        return [source.name], 0
    found: list[str] = []
    own = 0
    names = {p.name for p in exclude}
    for dirpath, dirnames, filenames in os.walk(source, followlinks=False):
        here = Path(dirpath)
        if here.resolve() == cache_root:
            own += sum(len(f) for _, _, f in os.walk(here))
            dirnames[:] = []
            continue
        dirnames.sort()
        for name in filenames:
            p = here / name
            if not p.is_file():
                continue
            if name in names and p.resolve() in exclude:
                own += 1
                continue
            found.append(p.relative_to(source).as_posix())
    return sorted(found), own


def _norm_rel(value: str, root: Path) -> str:
    s = value.strip().replace("\\", "/")
    p = Path(s)
    if p.is_absolute():
        try:
            s = p.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return s
    while s.startswith("./"):
        s = s[2:]
    return PurePosixPath(s).as_posix() if s else s


def _read_labels(path: Path, root: Path) -> dict[str, tuple[str, str]]:
    """``{relative path: (label, patient)}`` from a labels CSV."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MedclError(f"{path}: not a readable CSV ({type(exc).__name__})") from None
    missing = [c for c in ("path", "label") if c not in df.columns]
    if missing:
        raise MedclError(
            f"{path}: labels CSV needs columns path,label (missing: {', '.join(missing)})"
        )
    has_patient = "patient" in df.columns
    table: dict[str, tuple[str, str]] = {}
    for i, row in enumerate(df.itertuples(index=False), start=2):
        rel = _norm_rel(str(row.path), root)
        if not rel:
            raise MedclError(f"{path}: empty path on line {i}")
        entry = (str(row.label).strip(), str(row.patient).strip() if has_patient else "")
        if rel in table and table[rel] != entry:
            raise MedclError(f"{path}: {rel} is listed twice with different values (line {i})")
        table[rel] = entry
    return table


def _apply_labels(
    rows: list[dict], table: dict[str, tuple[str, str]] | None, pz: Pseudonymizer
) -> str:
    """Set ``label`` (and CSV patients) on rows; returns how rows were labelled."""
    if table is not None:
        matched = set()
        for r in rows:
            if r["family"] == "npz":
                continue
            entry = table.get(r["path"])
            if entry is not None:
                matched.add(r["path"])
            elif r.get("members"):
                found = {m: table[m] for m in r["members"] if m in table}
                matched.update(found)
                values = {v[0] for v in found.values()}
                if len(values) > 1:
                    raise MedclError(
                        f"labels CSV gives different labels to slices of one series "
                        f"(folder {r['path'] or '.'})"
                    )
                entry = (values.pop(), "") if values else None
            if entry is None:
                continue
            r["label"] = entry[0]
            if entry[1] and r["family"] in ("raster", "nifti"):
                r["patient_key"] = pz("patient", f"labels-csv\x00{entry[1]}")
        rows_with_path = [r for r in rows if r["family"] != "npz"]
        if table and rows_with_path and not matched:
            example = rows_with_path[0]["path"]
            raise MedclError(
                f"labels CSV: none of its {len(table)} paths matches an ingested "
                f"image (paths must be relative to SOURCE, e.g. {example!r})"
            )
        return f"labels CSV ({len(matched)} of {len(table)} paths matched)"
    raster = [r for r in rows if r["family"] == "raster"]
    if raster and all(len(PurePosixPath(r["path"]).parts) == 2 for r in raster):
        for r in raster:
            r["label"] = PurePosixPath(r["path"]).parts[0]
        return "class folders (SOURCE/<class>/<image>)"
    if any(r["family"] == "npz" for r in rows):
        return "MedMNIST labels"
    return "none"


_INT = re.compile(r"^-?\d+$")


def _sort_names(names: set[str]) -> list[str]:
    if names and all(_INT.match(n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _classes(rows: list[dict], classes: Sequence[str] | None) -> list[str]:
    """Resolve the class list; MedMNIST indices become names."""
    npz_indices = [int(r["label"]) for r in rows if r["family"] == "npz" and r["label"] != ""]
    if classes is not None:
        declared = [str(c) for c in classes]
        if npz_indices and max(npz_indices) >= len(declared):
            raise MedclError(
                f"MedMNIST class index {max(npz_indices)} has no name in --classes "
                f"({len(declared)} given)"
            )
        for r in rows:
            if r["family"] == "npz" and r["label"] != "":
                r["label"] = declared[int(r["label"])]
        unknown = sorted({r["label"] for r in rows if r["label"]} - set(declared))
        if unknown:
            raise MedclError(
                f"label(s) {', '.join(map(repr, unknown[:5]))} not in --classes {declared}"
            )
        return declared
    names = {r["label"] for r in rows if r["label"]}
    if npz_indices:
        names |= {str(i) for i in range(max(npz_indices) + 1)}
    return _sort_names(names)


# --------------------------------------------------------------------------------------------------
# workers


@dataclass
class _WorkerConfig:
    root: str
    pseudonymize: Pseudonymizer
    dims: int
    size: int | None
    cache_root: str


_CONFIG: _WorkerConfig | None = None
_LOG_COUNTS: Counter[str] = Counter()


class _CountingHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:  # noqa: D102
        _LOG_COUNTS[f"{record.name.split('.')[0]} log {record.levelname}"] += 1


_HANDLER = _CountingHandler(level=logging.DEBUG)


@contextmanager
def _quiet_loggers() -> Iterator[None]:
    """Route library log records to a counter instead of the console, for the duration."""
    saved = []
    for name in _QUIET_LOGGERS:
        lg = logging.getLogger(name)
        saved.append((lg, lg.propagate))
        lg.addHandler(_HANDLER)
        lg.propagate = False
    try:
        yield
    finally:
        for lg, propagate in saved:
            lg.removeHandler(_HANDLER)
            lg.propagate = propagate


def _init_worker(config: _WorkerConfig, in_main: bool = False) -> None:
    global _CONFIG
    _CONFIG = config
    if not in_main:
        for name in _QUIET_LOGGERS:
            lg = logging.getLogger(name)
            lg.addHandler(_HANDLER)
            lg.propagate = False


def _warning_source(filename: str) -> str:
    parts = Path(filename).parts
    for name in _WARNING_SOURCES:
        if name in parts:
            return name
    return "other"


@contextmanager
def _capture(counts: Counter[str]) -> Iterator[None]:
    """Count warnings (category and library only, never their text) and library log records."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                counts[f"{_warning_source(w.filename)} {w.category.__name__}"] += 1
            counts.update(_LOG_COUNTS)
            _LOG_COUNTS.clear()


def _row(d: Decoded, cfg: _WorkerConfig) -> dict:
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
    }


def _file_task(task: tuple[str, int, int]):
    """Worker: read one file completely (2-D mode)."""
    return _run_file(task, scan=False)


def _scan_task(task: tuple[str, int, int]):
    """Worker: 3-D mode; DICOM CT/MR slices are only scanned, other files read completely."""
    return _run_file(task, scan=True)


def _run_file(task: tuple[str, int, int], scan: bool):
    cfg = _CONFIG
    assert cfg is not None, "worker not initialised"
    rel, size, mtime_ns = task
    counts: Counter[str] = Counter()
    rec = cache.FileRecord(size, mtime_ns, "")
    fatal = None
    ctx = ReadContext(cfg.pseudonymize, cfg.dims)
    with _capture(counts):
        try:
            src = Source.load(Path(cfg.root) / rel, rel)
            rec.sha256 = src.sha256
            kind = sniff(src)
            if scan and kind == "dicom":
                info, decoded = dicom_reader.scan(src, ctx)
                rec.slice = info.to_dict() if info is not None else None
            else:
                decoded = READERS[kind](src, ctx)
            rec.rows = [_row(d, cfg) for d in decoded]
        except Unreadable as exc:
            rec.rows, rec.slice, rec.reason = [], None, exc.reason
        except MedclError as exc:
            fatal = str(exc)
        except MemoryError:
            rec.rows, rec.slice = [], None
            rec.reason = "image too large to decode in memory"
        except OSError as exc:
            rec.rows, rec.slice = [], None
            rec.reason = _unreadable(exc)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop an ingest
            rec.rows, rec.slice = [], None
            rec.reason = f"internal error while reading ({type(exc).__name__}); please report it"
    return rel, rec, counts, fatal


def _series_task(plan: SeriesPlan):
    """Worker: decode and cache one planned series."""
    cfg = _CONFIG
    assert cfg is not None, "worker not initialised"
    counts: Counter[str] = Counter()
    rows, reason = [], None
    with _capture(counts):
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


def _series_stage(
    new: cache.IngestState,
    old: cache.IngestState,
    pool: _Pool,
    cache_root: Path,
    caught: Counter[str],
) -> tuple[dict[str, list[dict]], dict[str, str], set[str]]:
    """3-D mode: group scanned slices, reuse unchanged series, decode the others."""
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
        if prior is not None and prior.get("rows") and _cache_present(prior["rows"], cache_root):
            series_rows[sid] = prior["rows"]
            new.series[sid] = prior
        elif prior is not None and prior.get("reason"):
            reasons.update({m: prior["reason"] for m in plan.members})
            new.series[sid] = prior
        else:
            todo.append(plan)
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


def _series_id(plan: SeriesPlan) -> str:
    text = "\n".join(f"{m}\x00{s}" for m, s in sorted(zip(plan.members, plan.shas, strict=True)))
    return hashlib.sha256(text.encode()).hexdigest()


class _Pool:
    """Runs tasks inline (1 worker) or in a process pool (chunked), with a progress bar."""

    def __init__(self, workers: int, config: _WorkerConfig, progress: bool) -> None:
        self.workers = workers
        self.config = config
        self.progress = progress
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> _Pool:
        _init_worker(self.config, in_main=True)
        return self

    def __exit__(self, *exc) -> None:
        global _CONFIG
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        _CONFIG = None

    def map(self, fn: Callable, tasks: Sequence, desc: str) -> Iterator:
        """Results of ``fn`` over ``tasks`` in task order."""
        if not tasks:
            return
        with tqdm(
            total=len(tasks),
            desc=desc,
            unit="file",
            disable=not self.progress,
            leave=False,
            dynamic_ncols=True,
        ) as bar:
            if self.workers == 1 or len(tasks) == 1:
                for t in tasks:
                    yield fn(t)
                    bar.update()
                return
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=_mp_context(),
                    initializer=_init_worker,
                    initargs=(self.config,),
                )
            chunk = max(1, min(64, len(tasks) // (self.workers * 8)))
            try:
                for result in self._executor.map(fn, tasks, chunksize=chunk):
                    yield result
                    bar.update()
            except BrokenProcessPool:
                raise MedclError(
                    "a worker process died while decoding (out of memory or a codec "
                    "crash); re-run with --workers 1 to find the file"
                ) from None


def _mp_context() -> multiprocessing.context.BaseContext:
    """``fork`` on Linux (workers start at once, no re-import of the caller's ``__main__``, the
    model PyTorch's own data loader uses), ``spawn`` elsewhere (fork is unsafe on macOS)."""
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _cache_present(rows: list[dict], cache_root: Path) -> bool:
    return all(cache.cache_file(cache_root, r["cache_key"]).is_file() for r in rows)


# --------------------------------------------------------------------------------------------------
# outputs


def _frame(rows: list[dict], root: Path, cache_root: Path) -> pd.DataFrame:
    """Manifest frame with unique image ids (later duplicates of one SOP instance re-keyed)."""
    seen: set[str] = set()
    out = []
    cache_root = cache_root.resolve()
    for r in rows:
        image_id = r["image_base"]
        if image_id in seen:  # the same instance in several files: keep both, ids distinct
            image_id = _duplicate_id(image_id, r)
        seen.add(image_id)
        out.append(
            {
                "image_id": image_id,
                "path": str(root / r["path"]) if r["path"] else str(root),
                "patient_key": r["patient_key"],
                "study_key": r["study_key"],
                "modality": r["modality"],
                "label": r["label"],
                "split": r["split"],
                "sha256": r["sha256"],
                "dims": r["dims"],
                "rows": r["rows"],
                "cols": r["cols"],
                "slices": r["slices"],
                "spacing_x": r["spacing_x"],
                "spacing_y": r["spacing_y"],
                "spacing_z": r["spacing_z"],
                "cache_path": str(cache.cache_file(cache_root, r["cache_key"])),
                "intensity": r["intensity"],
            }
        )
    return new_frame(out)


def _duplicate_id(image_id: str, r: dict) -> str:
    text = f"{image_id}\x00{r['path']}\x00{r['order']}"
    return hashlib.sha256(text.encode()).hexdigest()[: len(image_id)]


def _sidecar(
    rows: list[dict], dims: int, size: int | None, how_labelled: str, counts: Counter[str]
) -> dict:
    families = Counter(r["family"] for r in rows)
    notes = []
    if families.get("npz"):
        notes.append(npz_reader.NOTE)
    return {
        "ingest": {
            "rules_version": RULES_VERSION,
            "dims": dims,
            "size": size,
            "rows_by_reader": dict(sorted(families.items())),
            "rejected_files": sum(counts.values()),
            "intensity": {
                HU: "CT (DICOM Modality CT, monochrome): Hounsfield units after the modality LUT "
                "(RescaleSlope/RescaleIntercept or Modality LUT Sequence); no window applied",
                UNIT: "all other images: clipped at their 0.5th and 99.5th percentiles and "
                "scaled to [0, 1] (per cached image or volume); DICOM MONOCHROME1 inverted",
            },
            "window": "DICOM VOI LUT / Window Center-Width not applied (windowing is left to "
            "augmentation and display)",
            "colour": "RGB, YBR and palette colour -> one channel, BT.601 luma 0.299 R + 0.587 G + "
            "0.114 B (alpha dropped)",
            "cache": {
                "layout": "<manifest stem>.cache/<key[:2]>/<key>.npy, float32, (1, H, W) in 2-D, "
                "(1, D, H, W) in 3-D; key = source sha256 + frame/slice suffix",
                "resize": (
                    f"in-plane {size}x{size}, bilinear with antialiasing; rows/cols/"
                    "spacing describe the cached array"
                )
                if size
                else None,
            },
            "patient_key": "DICOM: HMAC of PatientID, else PatientName + PatientBirthDate, else "
            "the file's folder; NIfTI/PNG/TIFF/JPEG: HMAC of the path relative to SOURCE "
            "(or the labels CSV 'patient' column); MedMNIST: each image is its own "
            "patient",
            "image_id": "DICOM: HMAC of SOPInstanceUID (+ frame), 3-D: of SeriesInstanceUID; "
            "others: of path + frame/slice",
            "labels": how_labelled,
            "notes": notes,
        }
    }


def _write_rejects(reasons: dict[str, str], root: Path, out: Path) -> None:
    target = rejects_path(out)
    base = target.resolve().parent
    records = []
    for rel in sorted(reasons):
        p = (root / rel).resolve()
        try:
            shown = Path(os.path.relpath(p, base)).as_posix() if p.is_relative_to(base) else str(p)
        except ValueError:
            shown = str(p)
        records.append({"path": shown, "reason": reasons[rel]})
    df = pd.DataFrame(records, columns=["path", "reason"])
    tmp = target.with_name(target.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, target)


def _write_log(
    report: IngestReport,
    rows: list[dict],
    caught: Counter[str],
    skipped_own: int,
    dims: int,
    workers: int,
    size: int | None,
    how_labelled: str,
    elapsed: float,
) -> None:
    """The ingest log: settings, counts, reasons and captured warnings. No paths, no values."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    families = Counter(r["family"] for r in rows)
    intensities = Counter(r["intensity"] for r in rows)
    lines = [
        f"medcl ingest, {stamp}",
        f"settings: dims={dims} workers={workers} size={size or 'source'}",
        f"files seen: {report.files_seen} (ingest's own outputs and secret ignored: {skipped_own})",
        f"rows: {report.rows}; rejected files: {report.rejected}; "
        f"skipped unchanged: {report.skipped_unchanged}",
        "rows by reader: " + (", ".join(f"{k} {v}" for k, v in sorted(families.items())) or "-"),
        "rows by intensity rule: "
        + (", ".join(f"{k} {v}" for k, v in sorted(intensities.items())) or "-"),
        f"labels: {how_labelled}",
        "rejected files by reason:",
        *[f"  {n:6d}  {reason}" for reason, n in report.reasons.items()],
        f"captured library warnings and log records (not shown on the console): "
        f"{sum(caught.values())}",
        *[f"  {n:6d}  {what}" for what, n in sorted(caught.items(), key=lambda kv: -kv[1])],
        f"elapsed: {elapsed:.1f} s",
    ]
    log_path(report.manifest).write_text("\n".join(lines) + "\n")
