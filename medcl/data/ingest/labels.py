"""Labels and classes: the labels CSV, class folders and MedMNIST indices (precedence and rules:
:mod:`medcl.data.ingest`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import pandas as pd

from medcl.data.pseudonym import Pseudonymizer
from medcl.errors import MedclError


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


def read_labels(path: Path, root: Path) -> dict[str, tuple[str, str]]:
    """``{relative path: (label, patient)}`` from a labels CSV.

    Raises:
        MedclError: The CSV is unreadable, lacks ``path`` or ``label``, has an empty path, or
            lists a path twice with different values.
    """
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


def apply_labels(
    rows: list[dict], table: dict[str, tuple[str, str]] | None, pz: Pseudonymizer
) -> str:
    """Set ``label`` (and CSV patients) on rows; returns how rows were labelled."""
    if table is not None:
        return _apply_labels_csv(rows, table, pz)
    raster = [r for r in rows if r["family"] == "raster"]
    if raster and all(len(PurePosixPath(r["path"]).parts) == 2 for r in raster):
        for r in raster:
            r["label"] = PurePosixPath(r["path"]).parts[0]
        return "class folders (SOURCE/<class>/<image>)"
    if any(r["family"] == "npz" for r in rows):
        return "MedMNIST labels"
    return "none"


def _apply_labels_csv(
    rows: list[dict], table: dict[str, tuple[str, str]], pz: Pseudonymizer
) -> str:
    """Labels (and patients) from the labels CSV; a series takes its slices' common label."""
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


_INT = re.compile(r"^-?\d+$")


def _sort_names(names: set[str]) -> list[str]:
    """Sorted numerically when every name is an integer, else as text."""
    if names and all(_INT.match(n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def resolve_classes(rows: list[dict], classes: Sequence[str] | None) -> list[str]:
    """Resolve the class list; MedMNIST indices become names.

    Raises:
        MedclError: A MedMNIST index has no declared name, or a label is not declared.
    """
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
