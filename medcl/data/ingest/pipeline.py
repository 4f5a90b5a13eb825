"""The ingest run: discover → decode (in workers) → label → write manifest, rejects, log."""

from __future__ import annotations

import bisect
import dataclasses
import time
from collections import Counter
from pathlib import Path
from typing import Any

from medcl.data import cache
from medcl.data.ingest.decode import decode_files, series_stage
from medcl.data.ingest.discover import Task, check_arguments, own_outputs, partition, walk
from medcl.data.ingest.labels import LabelTable, apply_labels, read_labels, resolve_classes
from medcl.data.ingest.multilabel import TASKS, resolve_findings
from medcl.data.ingest.outputs import (
    PATH_MODES,
    RULES_VERSION,
    IngestReport,
    manifest_frame,
    rejects_path,
    sidecar,
    write_log,
    write_rejects,
)
from medcl.data.ingest.rowblock import RowBlock, ShardKeys
from medcl.data.ingest.workers import Pool, WorkerConfig, quiet_loggers
from medcl.data.manifest import COLUMNS, Manifest, write_manifest
from medcl.data.pseudonym import PathMap, Pseudonymizer, load_or_create_secret, source_id
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
    paths: str = "pseudonymise",
    series_may_differ: bool = False,
    task: str = "auto",
    findings: list[str] | None = None,
    uncertain: str = "unknown",
) -> IngestReport:
    """Build (or incrementally update) a manifest and its training cache from SOURCE.

    Args:
        source: A folder (walked recursively, every regular file) or a single file.
        out: Manifest CSV to write; rejects, log, sidecar and cache go next to it.
        labels: Labels CSV: a key column (``path`` relative to ``source``, or the DICOM
            ``AccessionNumber``, ``StudyInstanceUID``, ``SeriesInstanceUID`` or ``PatientID``)
            and ``label`` (rules, errors and warnings: :mod:`medcl.data.ingest.labels`).
        classes: Declared class names (order = class index).
        dims: 2 (a row per image, frame or slice) or 3 (a row per volume / CT-MR series).
        workers: Processes decoding in parallel; results are identical for any number.
        size: Resize cached arrays in-plane to ``size × size`` pixels.
        secret: Project secret file for the pseudonyms (default: see
            :func:`medcl.data.pseudonym.secret_path`).
        progress: Show a progress bar on stderr.
        paths: What the manifest and rejects carry about each source file besides its
            ``source_id`` (keyed hash of the path relative to SOURCE): ``pseudonymise`` (default)
            nothing; ``relative`` the path when it repeats none of its file's identifying header
            values (non-DICOM files: always); ``keep`` the path. The real paths are kept in the
            private path map next to the secret (:class:`medcl.data.pseudonym.PathMap`), whatever
            the mode; the incremental state holds ``source_id`` only.
        series_may_differ: Labels keyed by ``SeriesInstanceUID``: series of one study may carry
            different labels (a series-level task); by default that is refused.
        task: ``auto`` (default), ``multiclass`` or ``multilabel``: how the labels CSV is read
            (one class, one column per finding, or a ``|``-separated ``label``) and whether an
            ``.npz`` with N×K labels is accepted (:mod:`medcl.data.ingest.multilabel`). A
            multi-label manifest has ``"task": "multilabel"`` in its sidecar and its findings as
            ``classes``.
        findings: Declared findings of a multi-label task (their order is the columns' order);
            names an ``.npz`` file's K columns. Implies ``multilabel`` for a labels CSV.
        uncertain: A ``-1`` cell of a finding column is ``unknown`` (default), ``zero`` or
            ``one``.

    Returns:
        The report; the rejects file lists every file that gave no row.

    Raises:
        MedclError: Bad arguments, an unusable labels CSV (by row number, never a key's value),
            labels outside ``classes``, or sources that disagree on the task or the findings.
    """
    started = time.monotonic()
    source, out = Path(source), Path(out)
    check_arguments(source, out, labels, classes, dims, workers, size)
    if paths not in PATH_MODES:
        raise MedclError(f"--paths must be one of {', '.join(PATH_MODES)}, not {paths!r}")
    root = source if source.is_dir() else source.parent
    pz = Pseudonymizer(load_or_create_secret(secret))
    cache_root = cache.cache_dir(out)
    files, skipped_own = walk(source, own_outputs(out, secret), cache_root.resolve())
    if not files:
        raise MedclError(f"{source}: no files to ingest")
    if task not in TASKS:
        raise MedclError(f"--task must be one of {', '.join(TASKS)}, not {task!r}")
    if findings is not None and classes is not None:
        raise MedclError("--classes names single-label classes, --findings multi-label findings")
    table = None
    if labels is not None:
        table = read_labels(Path(labels), root, pz, task, findings, uncertain)

    state_file = cache_root / cache.STATE_NAME
    fingerprint = _fingerprint(dims, size, pz)
    sids = _source_ids(files, pz)
    old = _from_disk(cache.IngestState.load(state_file, fingerprint), sids)
    new = cache.IngestState(fingerprint)
    label_file = Path(labels).resolve() if labels is not None else None
    todo, unchanged = partition(files, root, label_file, old, new, cache_root)
    caught: Counter[str] = Counter()
    config = WorkerConfig(str(root), pz, dims, size, str(cache_root))
    series_rows, series_reasons, redone = _decode(todo, config, workers, progress, old, new, caught)

    rows, blocks, reasons = collect(files, new, series_rows, series_reasons)
    phi = {rel for rel in files if new.files[rel].phi_path}
    for r in rows:
        r["phi_path"] = r["path"] in phi or any(m in phi for m in r.get("members", ()))
        if r["path"] not in sids:
            sids[r["path"]] = source_id(pz, r["path"])
    blocks = [_mark_phi(b, phi) for b in blocks]  # array files: no members
    labelling = apply_labels(rows, table, pz, series_may_differ, arrays=bool(blocks))
    # before the frame: MedMNIST indices become names, or the findings are settled
    declared, blocks, extra = _resolve(rows, blocks, table, task, classes, findings)
    rowset = row_table(rows, blocks)
    del rows, blocks
    counts = Counter(reasons.values())
    manifest = Manifest(
        manifest_frame(rowset, root, cache_root, paths, sids),
        declared,
        {**extra, **sidecar(rowset, dims, size, labelling.how, counts, paths)},
    )
    used = rowset.distinct("path") | set(reasons)
    PathMap.beside(secret).update({sids[rel]: str(root / rel) for rel in used})
    write_manifest(manifest, out)
    write_rejects(reasons, root, out, paths, sids, phi)
    cache.prune(cache_root, _cache_keys(rowset))
    _to_disk(new, sids).save(state_file)

    report = IngestReport(
        manifest=out,
        rejects=rejects_path(out),
        files_seen=len(files),
        rows=len(manifest.df),
        rejected=len(reasons),
        skipped_unchanged=len(unchanged - redone),
        reasons=dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        phi_paths=len(phi),
        paths=paths,
        labels=labelling.how,
        label_warnings=list(labelling.warnings),
    )
    elapsed = time.monotonic() - started
    write_log(report, rowset, caught, skipped_own, dims, workers, size, elapsed)
    return report


def _resolve(
    rows: list[dict],
    blocks: list[RowBlock],
    table: LabelTable | None,
    task: str,
    classes: list[str] | None,
    findings: list[str] | None,
) -> tuple[list[str], list[RowBlock], dict]:
    """The classes (or findings), the blocks with their labels named, and the sidecar's task."""
    csv_findings = table.findings if table is not None else None
    multi = resolve_findings(rows, blocks, csv_findings, findings)
    if multi is None:
        if task == "multilabel":
            raise MedclError("--task multilabel: no multi-label labels (CSV or N×K .npz) found")
        if findings is not None:
            raise MedclError("--findings goes with multi-label labels (CSV or N×K .npz)")
        declared, blocks = resolve_classes(rows, classes, blocks)
        return declared, blocks, {}
    if task == "multiclass":
        raise MedclError("--task multiclass: an .npz file holds N×K multi-label labels")
    if table is not None and table.findings is None:
        raise MedclError(
            f"{table.source}: single-label, but an .npz file holds N×K multi-label labels; "
            "ingest them into separate manifests"
        )
    if classes is not None:
        raise MedclError("--classes: a multi-label task declares its findings with --findings")
    names, blocks = multi
    return names, blocks, {"task": "multilabel"}


def _source_ids(files: list[str], pz: Pseudonymizer) -> dict[str, str]:
    """``source_id`` of every file and of every folder above one (3-D rows name their folder)."""
    rels = set(files)
    for rel in files:
        parts = rel.split("/")
        rels.update("/".join(parts[:i]) for i in range(len(parts)))
    return {rel: source_id(pz, rel) for rel in sorted(rels)}


def _map_rows(rows: list[dict] | RowBlock, name: dict[str, str]) -> list[dict] | RowBlock | None:
    """Rows with ``path`` and ``members`` renamed by ``name``; None if a name is unknown."""
    if isinstance(rows, RowBlock):
        if not all(p in name for p in rows.distinct("path")):
            return None
        if rows.constants.get("members") == []:  # array-file rows name no other file
            return rows.mapped("path", name.__getitem__)
        rows = list(rows)
    out = []
    for r in rows:
        members = r.get("members", ())
        if r["path"] not in name or any(m not in name for m in members):
            return None
        out.append({**r, "path": name[r["path"]], "members": [name[m] for m in members]})
    return out


def _to_disk(state: cache.IngestState, sids: dict[str, str]) -> cache.IngestState:
    """The state as saved: files keyed by ``source_id``, rows naming ``source_id`` (no paths)."""
    files = {}
    for rel, rec in state.files.items():
        rows = _map_rows(rec.rows, sids)
        files[sids[rel]] = dataclasses.replace(rec, rows=rows if rows is not None else [])
    return cache.IngestState(state.fingerprint, files, _map_series(state.series, sids))


def _map_series(series: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    """Series entries with their rows' references mapped; entries with an unmapped row dropped."""
    out = {}
    for key, entry in series.items():
        rows = _map_rows(entry.get("rows") or [], mapping)
        if rows is not None:
            out[key] = {**entry, "rows": rows}
    return out


def _from_disk(state: cache.IngestState, sids: dict[str, str]) -> cache.IngestState:
    """A saved state back in relative paths; entries of files no longer under SOURCE dropped."""
    rel_of = {sid: rel for rel, sid in sids.items()}
    files = {}
    for key, rec in state.files.items():
        rows = _map_rows(rec.rows, rel_of)
        if key in rel_of and rows is not None:
            files[rel_of[key]] = dataclasses.replace(rec, rows=rows)
    return cache.IngestState(state.fingerprint, files, _map_series(state.series, rel_of))


STATE_VERSION = 2
"""Version of what the incremental state records per row (2: the labels-CSV key pseudonyms); a
state of another version is not reused."""


def _fingerprint(dims: int, size: int | None, pz: Pseudonymizer) -> dict:
    """The settings cached results depend on; a saved state with another one is not reused."""
    return {
        "version": RULES_VERSION,
        "state": STATE_VERSION,
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
) -> tuple[list[dict], list[RowBlock], dict[str, str]]:
    """All rows and every rejected file's reason.

    Returns:
        The rows held as dicts (copies, sorted by path and order), the array files' row blocks
        (in file order; never changed in place: labels must not reach the state) and the reasons.
    """
    rows: list[dict] = []
    blocks: list[RowBlock] = []
    reasons: dict[str, str] = {}
    for rel in files:
        rec = new.files[rel]
        if rec.reason is not None:
            reasons[rel] = rec.reason
        elif rec.slice is not None:
            if rel in series_reasons:
                reasons[rel] = series_reasons[rel]
        elif isinstance(rec.rows, RowBlock):
            blocks.append(rec.rows)
        else:
            rows.extend(dict(r) for r in rec.rows)  # copies: labels must not reach the state
    for series_rowset in series_rows.values():
        rows.extend(dict(r) for r in series_rowset)
    rows.sort(key=lambda r: (r["path"], r["order"]))
    in_rows = {r["path"] for r in rows} | {m for r in rows for m in r.get("members", ())}
    for b in blocks:
        in_rows |= b.distinct("path")
    for rel in files:  # defensive: every file must be accounted for
        if rel not in reasons and rel not in in_rows:
            reasons[rel] = "internal error: file produced neither a row nor a reason; please report"
    return rows, blocks, reasons


def _cache_keys(rows: RowBlock) -> set[str]:
    """The rows' cache keys for :func:`medcl.data.cache.prune` (shards named once)."""
    keys = rows.columns.get("cache_key")
    if isinstance(keys, ShardKeys):
        return keys.shards()
    return rows.distinct("cache_key")


def _mark_phi(b: RowBlock, phi: set[str]) -> RowBlock:
    """``phi_path`` on an array file's rows: whether their path repeats header PHI."""
    if "path" in b.constants:
        return b.with_field("phi_path", b.constants["path"] in phi, per_row=False)
    return b.with_field("phi_path", [p in phi for p in b.columns["path"]], per_row=True)


TABLE_FIELDS = (
    "image_base",
    "order",
    "path",
    "phi_path",
    "cache_key",
    "family",
    "patient_ids",
    *(c for c in COLUMNS if c not in ("image_id", "source_id", "path", "cache_path")),
)
"""What the manifest, the sidecar and the log need of a row."""


def row_table(rows: list[dict], blocks: list[RowBlock]) -> RowBlock:
    """Every row in manifest order (by path, then order) as one block.

    ``rows`` are sorted; each array file's block (one path, its rows in order) goes where its path
    sorts among them.
    """
    paths = [r["path"] for r in rows]
    own = set(paths)
    placed: list[tuple[str, RowBlock]] = []
    for b in blocks:
        if "path" in b.constants and b.constants["path"] not in own:
            placed.append((b.constants["path"], b.select(TABLE_FIELDS)))
        else:  # not one array file (never made so): sorted in with the dict rows
            rows = sorted([*rows, *b], key=lambda r: (r["path"], r["order"]))
            paths = [r["path"] for r in rows]
    placed.sort(key=lambda pb: pb[0])
    parts: list[RowBlock] = []
    start = 0
    for path, b in placed:
        at = bisect.bisect_left(paths, path, lo=start)
        if at > start:
            parts.append(RowBlock.from_dicts(rows[start:at], TABLE_FIELDS))
        parts.append(b)
        start = at
    if start < len(rows) or not parts:
        parts.append(RowBlock.from_dicts(rows[start:], TABLE_FIELDS))
    return parts[0] if len(parts) == 1 else RowBlock.concat(parts)
