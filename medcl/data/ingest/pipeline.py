"""The ingest run: discover → decode (in workers) → label → write manifest, rejects, log."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from medcl.data import cache
from medcl.data.ingest.decode import decode_files, series_stage
from medcl.data.ingest.discover import Task, check_arguments, own_outputs, partition, walk
from medcl.data.ingest.labels import apply_labels, read_labels, resolve_classes
from medcl.data.ingest.outputs import (
    RULES_VERSION,
    IngestReport,
    manifest_frame,
    rejects_path,
    sidecar,
    write_log,
    write_rejects,
)
from medcl.data.ingest.workers import Pool, WorkerConfig, quiet_loggers
from medcl.data.manifest import Manifest, write_manifest
from medcl.data.pseudonym import Pseudonymizer, load_or_create_secret
from medcl.errors import MedclError


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
    check_arguments(source, out, labels, classes, dims, workers, size)
    root = source if source.is_dir() else source.parent
    pz = Pseudonymizer(load_or_create_secret(secret))
    cache_root = cache.cache_dir(out)
    files, skipped_own = walk(source, own_outputs(out, secret), cache_root.resolve())
    if not files:
        raise MedclError(f"{source}: no files to ingest")
    table = read_labels(Path(labels), root) if labels is not None else None

    state_file = cache_root / cache.STATE_NAME
    fingerprint = _fingerprint(dims, size, pz)
    old = cache.IngestState.load(state_file, fingerprint)
    new = cache.IngestState(fingerprint)
    label_file = Path(labels).resolve() if labels is not None else None
    todo, unchanged = partition(files, root, label_file, old, new, cache_root)
    caught: Counter[str] = Counter()
    config = WorkerConfig(str(root), pz, dims, size, str(cache_root))
    series_rows, series_reasons, redone = _decode(todo, config, workers, progress, old, new, caught)

    rows, reasons = collect(files, new, series_rows, series_reasons)
    how_labelled = apply_labels(rows, table, pz)
    declared = resolve_classes(rows, classes)  # before the frame: MedMNIST indices become names
    counts = Counter(reasons.values())
    manifest = Manifest(
        manifest_frame(rows, root, cache_root),
        declared,
        sidecar(rows, dims, size, how_labelled, counts),
    )
    write_manifest(manifest, out)
    write_rejects(reasons, root, out)
    cache.prune(cache_root, {r["cache_key"] for r in rows})
    new.save(state_file)

    report = IngestReport(
        manifest=out,
        rejects=rejects_path(out),
        files_seen=len(files),
        rows=len(manifest.df),
        rejected=len(reasons),
        skipped_unchanged=len(unchanged - redone),
        reasons=dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
    )
    elapsed = time.monotonic() - started
    write_log(report, rows, caught, skipped_own, dims, workers, size, how_labelled, elapsed)
    return report


def _fingerprint(dims: int, size: int | None, pz: Pseudonymizer) -> dict:
    """The settings cached results depend on; a saved state with another one is not reused."""
    return {
        "version": RULES_VERSION,
        "dims": dims,
        "size": size,
        "secret_check": pz("medcl-state", "fingerprint"),
    }


def _decode(
    todo: list[Task],
    config: WorkerConfig,
    workers: int,
    progress: bool,
    old: cache.IngestState,
    new: cache.IngestState,
    caught: Counter[str],
) -> tuple[dict[str, list[dict]], dict[str, str], set[str]]:
    """Read the changed files in the worker pool, then (3-D) stack their series.

    Returns:
        What :func:`medcl.data.ingest.decode.series_stage` returns; empty in 2-D mode.
    """
    with quiet_loggers(), Pool(workers, config, progress) as pool:
        decode_files(todo, config.dims, pool, new, caught)
        if config.dims != 3:
            return {}, {}, set()
        return series_stage(new, old, pool, Path(config.cache_root), caught)


def collect(
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
