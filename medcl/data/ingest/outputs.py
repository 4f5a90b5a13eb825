"""What an ingest writes besides the cache: the manifest frame and sidecar, the rejects CSV, the
log and the report (file names: :func:`rejects_path`, :func:`log_path`)."""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medcl.data import cache
from medcl.data.ingest.rowblock import RowBlock, ShardKeys
from medcl.data.manifest import COLUMNS, normalise_frame
from medcl.data.readers import npz as npz_reader
from medcl.data.readers.base import HU, UNIT
from medcl.io import atomic_path, write_text

RULES_VERSION = 1
"""Version of the ingest rules: written to the sidecar, part of the incremental state's key."""


def rejects_path(manifest: str | os.PathLike[str]) -> Path:
    """``dir/name.csv`` → ``dir/name.rejects.csv``."""
    p = Path(manifest)
    return p.with_name(p.stem + ".rejects.csv")


def log_path(manifest: str | os.PathLike[str]) -> Path:
    """``dir/name.csv`` → ``dir/name.ingest.log``."""
    p = Path(manifest)
    return p.with_name(p.stem + ".ingest.log")


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
        phi_paths: Source files whose path repeats one of their identifying header values.
        paths: The ``--paths`` mode the outputs were written with.
        labels: How the rows were labelled (the sidecar's and the log's line).
        label_warnings: Problems of the labels CSV that did not stop the ingest (rows that
            matched no image, by row number).
    """

    manifest: Path
    rejects: Path
    files_seen: int
    rows: int
    rejected: int
    skipped_unchanged: int
    reasons: dict[str, int] = field(default_factory=dict)
    phi_paths: int = 0
    paths: str = "pseudonymise"
    labels: str = ""
    label_warnings: list[str] = field(default_factory=list)


PATH_MODES = ("pseudonymise", "relative", "keep")
"""``--paths``: what the manifest and rejects say about each source file (:func:`shown_path`)."""


def shown_path(mode: str, root: Path, rel: str, phi: bool) -> str:
    """The ``path`` a shared output carries for the source ``rel`` (relative to ``root``).

    ``pseudonymise`` (the default): none (``""``), only the ``source_id``; ``relative``: the path
    when it passed the header check (``phi`` false), else none; ``keep``: always the path. The
    manifest writes a path relative to its own folder when the source lies below it.
    """
    if mode == "pseudonymise" or (mode == "relative" and phi):
        return ""
    return str(root / rel) if rel else str(root)


def manifest_frame(
    rows: RowBlock,
    root: Path,
    cache_root: Path,
    paths: str = "pseudonymise",
    sids: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Manifest frame with unique image ids (later duplicates of one SOP instance re-keyed).

    Args:
        rows: Row metadata in manifest order (:data:`medcl.data.ingest.pipeline.TABLE_FIELDS`);
            ``phi_path`` marks a row whose source path repeats header PHI.
        root: The ingest root.
        cache_root: The cache folder.
        paths: One of :data:`PATH_MODES` (see :func:`shown_path`).
        sids: Relative path → ``source_id``.
    """
    sids = sids or {}
    bases = rows.column("image_base")
    if len(set(bases)) == len(bases):
        ids = bases
    else:  # the same instance in several files: keep both, ids distinct
        seen: set[str] = set()
        ids = []
        for image_id, path, order in zip(
            bases, rows.column("path"), rows.column("order"), strict=True
        ):
            if image_id in seen:
                image_id = _duplicate_id(image_id, path, order)
            seen.add(image_id)
            ids.append(image_id)
    if "path" in rows.constants and "phi_path" in rows.constants:  # one file (or one kind)
        rel, phi = rows.constants["path"], bool(rows.constants["phi_path"])
        shown_col: Sequence = _repeat(shown_path(paths, root, rel, phi), len(rows))
        sid_col: Sequence = _repeat(sids.get(rel, ""), len(rows))
    else:
        shown: dict[tuple[str, bool], str] = {}  # rows of one file share their path
        keys = list(zip(rows.column("path"), map(bool, rows.column("phi_path")), strict=True))
        for k in set(keys):
            shown[k] = shown_path(paths, root, *k)
        shown_col = [shown[k] for k in keys]
        sid_col = [sids.get(p, "") for p in rows.column("path")]
    root_text = str(cache_root.resolve())
    derived: dict[str, Sequence] = {
        "image_id": ids,
        "source_id": sid_col,
        "path": shown_col,
        "cache_path": _cache_refs(root_text, rows.column("cache_key")),
    }
    # every other schema column is carried over from the row metadata as it is
    columns = {c: derived[c] if c in derived else _frame_column(rows, c) for c in COLUMNS}
    return normalise_frame(pd.DataFrame(columns))


def _cache_refs(root: str, keys: Sequence[str]) -> list[str]:
    """:func:`medcl.data.cache.cache_ref` of every key (shard keys made from their names)."""
    if isinstance(keys, ShardKeys):
        return keys.refs(root)
    return [cache.cache_ref(root, k) for k in keys]


def _repeat(value: str, n: int) -> pd.Series:
    """``value`` ``n`` times, as the column a list of it gives (converted once, not ``n`` times)."""
    return pd.Series([value]).repeat(n).reset_index(drop=True)


def _frame_column(rows: RowBlock, name: str) -> Sequence:
    """A field's values for the frame; text and integer constants without a list per row."""
    if name in rows.constants and len(rows):
        value = rows.constants[name]
        if type(value) is str:
            return _repeat(value, len(rows))
        if type(value) is int:
            return np.full(len(rows), value, dtype=np.int64)
    return rows.column(name)


def _duplicate_id(image_id: str, path: str, order: int) -> str:
    """A distinct id of the same length for a later copy of an image (path and order decide)."""
    text = f"{image_id}\x00{path}\x00{order}"
    return hashlib.sha256(text.encode()).hexdigest()[: len(image_id)]


def sidecar(
    rows: RowBlock,
    dims: int,
    size: int | None,
    how_labelled: str,
    counts: Counter[str],
    paths: str = "pseudonymise",
) -> dict:
    """The manifest sidecar's ``ingest`` section: settings and the rules the rows follow."""
    families = rows.counts("family")
    notes = []
    with_ids = sum(n for v, n in rows.counts("patient_ids").items() if v)
    if families.get("npz", 0) > with_ids:
        notes.append(npz_reader.NOTE)
    if with_ids:
        notes.append(npz_reader.NOTE_IDS)
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
                "(1, D, H, W) in 3-D; key = source sha256 + frame/slice suffix; MedMNIST .npz "
                "rows in shards <sha>_<split>_c<first>.npy (n, 1, ...), cache_path "
                "<shard>.npy#<row>",
                "resize": (
                    f"in-plane {size}x{size}, bilinear with antialiasing; rows/cols/"
                    "spacing describe the cached array"
                )
                if size
                else None,
            },
            "patient_key": "DICOM: HMAC of PatientID, else PatientName + PatientBirthDate, else "
            "the file's folder; NIfTI/PNG/TIFF/JPEG: HMAC of the path relative to SOURCE "
            "(or the labels CSV 'patient' column); MedMNIST .npz: HMAC of "
            "<split>_patient_ids / <split>_groups when the file has them (as a DICOM "
            "PatientID), else each image is its own patient",
            "source_id": "HMAC of the source path relative to SOURCE; the real paths are kept "
            "only in the private path map next to the project secret",
            "paths": paths,
            "image_id": "DICOM: HMAC of SOPInstanceUID (+ frame), 3-D: of SeriesInstanceUID; "
            "others: of path + frame/slice",
            "labels": how_labelled,
            "notes": notes,
        }
    }


def write_rejects(
    reasons: dict[str, str],
    root: Path,
    out: Path,
    paths: str = "pseudonymise",
    sids: dict[str, str] | None = None,
    phi: set[str] | None = None,
) -> None:
    """Write the rejects CSV (``source_id,path,reason``; ``path`` as :func:`shown_path` decides,
    relative to the CSV when below its folder)."""
    target = rejects_path(out)
    base = target.resolve().parent
    sids, phi = sids or {}, phi or set()
    records = []
    for rel in sorted(reasons):
        if not shown_path(paths, root, rel, rel in phi):
            records.append({"source_id": sids.get(rel, ""), "path": "", "reason": reasons[rel]})
            continue
        p = (root / rel).resolve()
        try:
            shown = Path(os.path.relpath(p, base)).as_posix() if p.is_relative_to(base) else str(p)
        except ValueError:
            shown = str(p)
        records.append({"source_id": sids.get(rel, ""), "path": shown, "reason": reasons[rel]})
    df = pd.DataFrame(records, columns=["source_id", "path", "reason"])
    with atomic_path(target) as tmp:
        df.to_csv(tmp, index=False)


def write_log(
    report: IngestReport,
    rows: RowBlock,
    caught: Counter[str],
    skipped_own: int,
    dims: int,
    workers: int,
    size: int | None,
    elapsed: float,
) -> None:
    """The ingest log: settings, counts, reasons and captured warnings. No paths, no values."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    families = rows.counts("family")
    intensities = rows.counts("intensity")
    lines = [
        f"medcl ingest, {stamp}",
        f"settings: dims={dims} workers={workers} size={size or 'source'}",
        f"files seen: {report.files_seen} (ingest's own outputs and secret ignored: {skipped_own})",
        f"rows: {report.rows}; rejected files: {report.rejected}; "
        f"skipped unchanged: {report.skipped_unchanged}",
        "rows by reader: " + (", ".join(f"{k} {v}" for k, v in sorted(families.items())) or "-"),
        "rows by intensity rule: "
        + (", ".join(f"{k} {v}" for k, v in sorted(intensities.items())) or "-"),
        f"labels: {report.labels}",
        *[f"  warning: {w}" for w in report.label_warnings],
        f"labelled rows: {sum(n for v, n in rows.counts('label').items() if v)} of {len(rows)}",
        f"paths: {report.paths}; {report.phi_paths} path(s) carried header PHI",
        "rejected files by reason:",
        *[f"  {n:6d}  {reason}" for reason, n in report.reasons.items()],
        f"captured library warnings and log records (not shown on the console): "
        f"{sum(caught.values())}",
        *[f"  {n:6d}  {what}" for what, n in sorted(caught.items(), key=lambda kv: -kv[1])],
        f"elapsed: {elapsed:.1f} s",
    ]
    write_text("\n".join(lines) + "\n", log_path(report.manifest))
