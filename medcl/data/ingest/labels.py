"""Labels and classes: the labels CSV, class folders and MedMNIST indices (precedence:
:mod:`medcl.data.ingest`).

The labels CSV
==============

One key column and a ``label`` column (or, multi-label, one column per finding or a
``|``-separated ``label``: :mod:`medcl.data.ingest.multilabel`); the header names the key:

=================================== ==============================================================
``path``                            a file (or, 3-D, a series folder or a slice file) relative to
                                    SOURCE; an optional ``patient`` column names the patient of a
                                    NIfTI or PNG/TIFF/JPEG image
``AccessionNumber``                 a study, as research databases and PACS worklists key it
``StudyInstanceUID``                a study
``SeriesInstanceUID``               a series
``PatientID``                       a patient
=================================== ==============================================================

A DICOM key is matched against the headers read at ingest, so a study's (or a patient's, or a
series') label applies to every image that carries it; non-DICOM images have no header and stay
unlabelled under such a key. Other columns are ignored. An empty ``label`` leaves its images
unlabelled. A multi-label CSV's rows are turned into their label text (``lesion|?vessel``) as it
is read, so everything below applies to them unchanged: a study's findings go to all its images,
and two rows of one key with different findings are ambiguous.

**Privacy.** Every DICOM key is treated as sensitive (AccessionNumber and PatientID are PHI, the
UIDs can be linked to it). A key value is replaced by its keyed pseudonym as soon as the CSV is
read (:func:`medcl.data.readers.dicom.label_key`, the function the reader applies to the headers)
and matched as such; no output, log line, warning or error message carries one. Problems are
reported by CSV **row number** (the header is row 1, as a spreadsheet numbers it), never by value.

**Errors** (:class:`~medcl.errors.MedclError`, one line, nothing is written): an unreadable CSV;
no key column, or more than one; no ``label`` column; a ``patient`` column with a DICOM key
(patients then come from the headers); a row with an empty key; one key listed on several rows
with different labels (ambiguous: the rows are named); no row matching any image; and, for
``SeriesInstanceUID`` keys, a study whose series get different labels: a label is taken to
describe the study its series belongs to, the usual case of a diagnosis keyed by the series a
reader looked at, unless the ingest is told that series of one study may differ
(``series_may_differ``, ``medcl ingest --series-labels-may-differ``: a series-level task such as
the sequence or contrast phase).

**Warnings** (the ingest goes on; they go to the console, the ingest log and the report's
``label_warnings``): rows whose key matches no ingested image, named by row number. Images that
no row names stay unlabelled and are counted in the log.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from medcl.data.ingest import multilabel as ml
from medcl.data.ingest.rowblock import RowBlock
from medcl.data.pseudonym import Pseudonymizer
from medcl.data.readers.dicom import LABEL_KEYS, label_key
from medcl.errors import MedclError

KEY_COLUMNS = ("path", *LABEL_KEYS)
"""The key columns a labels CSV may have (exactly one)."""

_SHOWN_ROWS = 10
"""Row numbers quoted in one message; the rest are counted."""


@dataclass(frozen=True)
class LabelRow:
    """One key of the labels CSV: its label, its ``patient`` (path keys only) and its rows."""

    label: str
    patient: str
    rows: tuple[int, ...]


@dataclass
class LabelTable:
    """A labels CSV as read: what its key is and what each key maps to.

    Attributes:
        source: The CSV.
        key: Its key column, one of :data:`KEY_COLUMNS`.
        entries: Key → :class:`LabelRow`; a ``path`` key is a path relative to SOURCE, a DICOM
            key its keyed pseudonym (the clear value is not kept).
        task: ``multiclass`` or ``multilabel`` (:func:`medcl.data.ingest.multilabel.csv_task`).
        findings: A multi-label CSV's findings (labels are then texts of
            :mod:`medcl.data.findings`), else None.
    """

    source: Path
    key: str
    entries: dict[str, LabelRow] = field(default_factory=dict)
    task: str = "multiclass"
    findings: list[str] | None = None

    @property
    def rows(self) -> int:
        """Data rows of the CSV that named a key."""
        return sum(len(e.rows) for e in self.entries.values())


@dataclass
class Labelling:
    """How the rows were labelled: a line for the sidecar and the log, and warnings."""

    how: str
    warnings: list[str] = field(default_factory=list)


def _norm_rel(value: str, root: Path) -> str:
    """A labels-CSV path as a POSIX path relative to ``root`` (absolute paths under it too)."""
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


def row_list(rows: Sequence[int]) -> str:
    """``"3, 7 and 9"``; past :data:`_SHOWN_ROWS` numbers the rest are counted."""
    shown = [str(r) for r in sorted(rows)[:_SHOWN_ROWS]]
    more = len(rows) - len(shown)
    if more:
        return ", ".join(shown) + f" and {more} more"
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def _key_column(columns: Sequence[str], path: Path) -> tuple[str, str]:
    """``(canonical key name, column as spelled in the CSV)``; header names match case-blind."""
    canonical = {k.lower(): k for k in KEY_COLUMNS}
    found = [(canonical[c.strip().lower()], c) for c in columns if c.strip().lower() in canonical]
    if len(found) != 1:
        what = "none" if not found else ", ".join(c for _, c in found)
        raise MedclError(
            f"{path}: labels CSV needs exactly one key column among {', '.join(KEY_COLUMNS)} "
            f"and a label column (key columns found: {what})"
        )
    return found[0]


def read_labels(
    path: Path,
    root: Path,
    pz: Pseudonymizer,
    task: str = "auto",
    findings: Sequence[str] | None = None,
    uncertain: str = "unknown",
) -> LabelTable:
    """The labels CSV ``path`` as a :class:`LabelTable` (DICOM keys pseudonymised at once).

    Args:
        path: The CSV.
        root: The ingest root (``path`` keys are relative to it).
        pz: The project's pseudonymiser.
        task: ``auto``, ``multiclass`` or ``multilabel`` (which CSV is multi-label:
            :mod:`medcl.data.ingest.multilabel`).
        findings: Declared findings of a multi-label CSV (``--findings``), or None.
        uncertain: A ``-1`` cell of a finding column is ``unknown``, ``zero`` or ``one``.

    Raises:
        MedclError: One of the errors listed in the module docstring, by row number.
    """
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MedclError(f"{path}: not a readable CSV ({type(exc).__name__})") from None
    key, column = _key_column(list(df.columns), path)
    lower = {c.strip().lower(): c for c in df.columns}
    patients = lower.get("patient")
    values = [c for c in df.columns if c not in (column, patients)]
    if task == "auto" and findings is not None:
        task = "multilabel"  # declared findings: a multi-label task
    task = ml.csv_task(list(lower), values, task, path)
    if task == "multiclass" and "label" not in lower:
        raise MedclError(f"{path}: labels CSV needs a label column (with its {key} column)")
    if patients is not None and key != "path":
        raise MedclError(
            f"{path}: a patient column goes with path keys only; with {key} keys the "
            "patients come from the DICOM headers"
        )
    keys = df[column].tolist()
    names = None
    if task == "multiclass":
        if findings is not None:
            raise MedclError(f"{path}: --findings goes with a multi-label labels CSV")
        labels = df[lower["label"]].tolist()
    elif "label" in lower:
        names, labels = ml.pipe_labels(df[lower["label"]].tolist(), findings, path)
    else:
        names, labels = ml.column_labels(df, values, findings, uncertain, path)
    owners = df[patients].tolist() if patients is not None else [""] * len(df)
    found: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for i, (value, label, owner) in enumerate(zip(keys, labels, owners, strict=True), start=2):
        value = str(value).strip()
        if not value:
            raise MedclError(f"{path}: row {i} has an empty {key}")
        k = _norm_rel(value, root) if key == "path" else label_key(pz, key, value)
        found[k].append((i, str(label).strip(), str(owner).strip()))
    table = LabelTable(path, key, task=task, findings=names)
    clashes = []
    for k, items in found.items():
        if len({(lab, own) for _, lab, own in items}) > 1:
            clashes.append([i for i, _, _ in items])
            continue
        _, lab, own = items[0]
        table.entries[k] = LabelRow(lab, own, tuple(i for i, _, _ in items))
    if clashes:
        first = clashes[0]
        more = f" ({len(clashes) - 1} more such keys)" if len(clashes) > 1 else ""
        raise MedclError(
            f"{path}: rows {row_list(first)} give one {key} different labels{more}; keep one "
            "label per key"
        )
    return table


def apply_labels(
    rows: list[dict],
    table: LabelTable | None,
    pz: Pseudonymizer,
    series_may_differ: bool = False,
    arrays: bool = False,
) -> Labelling:
    """Set ``label`` (and CSV patients) on rows; returns how rows were labelled.

    Array files' rows held by column (:class:`~medcl.data.ingest.rowblock.RowBlock`) are not
    passed: they carry their own labels, which nothing here changes.

    Args:
        rows: The ingest's rows (``label_keys`` on DICOM rows).
        table: The labels CSV, or None (class folders, MedMNIST labels).
        pz: The project's pseudonymiser (CSV patients).
        series_may_differ: ``SeriesInstanceUID`` keys: let series of one study carry different
            labels (else refused).
        arrays: Array files gave rows besides ``rows`` (MedMNIST labels).

    Raises:
        MedclError: No row of the CSV matches an image; slices of one 3-D series given different
            labels by path; series of one study given different labels.
    """
    if table is not None:
        if table.key == "path":
            return _apply_path_labels(rows, table, pz)
        return _apply_key_labels(rows, table, series_may_differ)
    raster = [r for r in rows if r["family"] == "raster"]
    if raster and all(len(PurePosixPath(r["path"]).parts) == 2 for r in raster):
        for r in raster:
            r["label"] = PurePosixPath(r["path"]).parts[0]
        return Labelling("class folders (SOURCE/<class>/<image>)")
    if arrays or any(r["family"] == "npz" for r in rows):
        return Labelling("MedMNIST labels")
    return Labelling("none")


def _apply_path_labels(rows: list[dict], table: LabelTable, pz: Pseudonymizer) -> Labelling:
    """Labels (and patients) by path; a 3-D series takes its slices' common label."""
    entries = table.entries
    matched = set()
    for r in rows:
        if r["family"] == "npz":
            continue
        entry = entries.get(r["path"])
        if entry is not None:
            matched.add(r["path"])
        elif r.get("members"):
            found = {m: entries[m] for m in r["members"] if m in entries}
            matched.update(found)
            values = {v.label for v in found.values()}
            if len(values) > 1:
                slice_rows = sorted(i for v in found.values() for i in v.rows)
                raise MedclError(
                    f"{table.source}: rows {row_list(slice_rows)} give different labels to "
                    "slices of one series"
                )
            entry = LabelRow(values.pop(), "", ()) if values else None
        if entry is None:
            continue
        r["label"] = entry.label
        if entry.patient and r["family"] in ("raster", "nifti"):
            r["patient_key"] = pz("patient", f"labels-csv\x00{entry.patient}")
    rows_with_path = [r for r in rows if r["family"] != "npz"]
    if entries and rows_with_path and not matched:
        example = rows_with_path[0]["path"]
        raise MedclError(
            f"{table.source}: none of its {len(entries)} paths matches an ingested "
            f"image (paths must be relative to SOURCE, e.g. {example!r})"
        )
    return _outcome(table, matched)


def _apply_key_labels(rows: list[dict], table: LabelTable, series_may_differ: bool) -> Labelling:
    """Labels by a DICOM key: every image whose header carries a listed key takes its label."""
    matched: set[str] = set()
    by_study: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for r in rows:
        k = (r.get("label_keys") or {}).get(table.key)
        entry = table.entries.get(k) if k is not None else None
        if entry is None:
            continue
        matched.add(k)
        r["label"] = entry.label
        if entry.label:
            by_study[r["study_key"]][entry.label].update(entry.rows)
    if not matched:
        dicom = sum(r["family"] == "dicom" for r in rows)
        raise MedclError(
            f"{table.source}: none of its {table.rows} rows matches the {table.key} of an "
            f"ingested DICOM image ({dicom} DICOM rows ingested)"
        )
    if table.key == "SeriesInstanceUID" and not series_may_differ:
        conflicts = [sorted(set().union(*s.values())) for s in by_study.values() if len(s) > 1]
        if conflicts:
            more = f" ({len(conflicts) - 1} more such studies)" if len(conflicts) > 1 else ""
            raise MedclError(
                f"{table.source}: rows {row_list(conflicts[0])} give different labels to series "
                f"of one study{more}; a series label describes its study unless series of one "
                "study may differ (--series-labels-may-differ)"
            )
    return _outcome(table, matched)


def _outcome(table: LabelTable, matched: set[str]) -> Labelling:
    """The summary line and the warning on rows that matched no image."""
    unmatched = sorted(i for k, e in table.entries.items() if k not in matched for i in e.rows)
    how = (
        f"labels CSV keyed by {table.key}: {table.rows - len(unmatched)} of {table.rows} rows "
        "matched an image"
    )
    if table.findings is not None:
        how += f" (multi-label: {len(table.findings)} findings)"
    warnings = []
    if unmatched:
        warnings.append(
            f"labels CSV: {len(unmatched)} row(s) match no ingested image by {table.key} "
            f"(rows {row_list(unmatched)}); their labels are not used"
        )
    return Labelling(how, warnings)


_INT = re.compile(r"^-?\d+$")


def _sort_names(names: set[str]) -> list[str]:
    """Sorted numerically when every name is an integer, else as text."""
    if names and all(_INT.match(n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def resolve_classes(
    rows: list[dict], classes: Sequence[str] | None, blocks: Sequence[RowBlock] = ()
) -> tuple[list[str], list[RowBlock]]:
    """Resolve the class list; MedMNIST indices become names.

    Args:
        rows: Rows as dicts (changed in place).
        classes: Declared class names, or None.
        blocks: Array files' rows by column (MedMNIST indices as labels).

    Returns:
        The classes, and ``blocks`` with their labels named (new blocks: the given ones are not
        changed).

    Raises:
        MedclError: A MedMNIST index has no declared name, or a label is not declared.
    """
    npz_indices = [int(r["label"]) for r in rows if r["family"] == "npz" and r["label"] != ""]
    block_labels: set[str] = set()
    for b in blocks:
        block_labels |= b.distinct("label")
    npz_indices += [int(v) for v in block_labels if v != ""]
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
        name = {v: declared[int(v)] if v != "" else v for v in block_labels}
        blocks = [b.mapped("label", name.__getitem__) for b in blocks]
        unknown = sorted({r["label"] for r in rows if r["label"]} - set(declared))
        if unknown:
            raise MedclError(
                f"label(s) {', '.join(map(repr, unknown[:5]))} not in --classes {declared}"
            )
        return declared, list(blocks)
    names = {r["label"] for r in rows if r["label"]}
    if npz_indices:
        names |= {str(i) for i in range(max(npz_indices) + 1)}
    return _sort_names(names), list(blocks)
