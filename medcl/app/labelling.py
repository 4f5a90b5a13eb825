"""The annotation round trip: an export sheet of images to label, and importing its labels.

The sheet (``labels_to_annotate.csv``) has the columns :data:`SHEET_COLUMNS`: ``image_id``,
``patient_key`` (pseudonyms only), ``score`` (the acquisition score, see
:mod:`medcl.app.acquisition`), ``predicted`` (the model's class, a hint) and ``label`` (empty, for
the annotator). :func:`import_labels` writes a new manifest with those labels filled in; it is also
the ``medcl import-labels`` command.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medcl.data.manifest import read_manifest, write_manifest
from medcl.errors import MedclError

SHEET_COLUMNS = ("image_id", "patient_key", "score", "predicted", "label")
_MAX_NAMED = 5


@dataclass
class LabelImport:
    """What :func:`import_labels` did.

    Attributes:
        path: The new manifest.
        added: Images that received a label.
        unchanged: Images that already had the same label.
        blank: Sheet rows left without a label (skipped).
    """

    path: Path
    added: int
    unchanged: int
    blank: int


def labelling_sheet(
    image_ids: list[str], patient_keys: list[str], scores: list[float], predicted: list[str]
) -> pd.DataFrame:
    """The export sheet, one row per image in the given (ranked) order, ``label`` empty."""
    return pd.DataFrame(
        {
            "image_id": list(image_ids),
            "patient_key": list(patient_keys),
            "score": [round(float(s), 6) for s in scores],
            "predicted": list(predicted),
            "label": [""] * len(image_ids),
        },
        columns=list(SHEET_COLUMNS),
    )


def _names(values: list[str]) -> str:
    shown = ", ".join(repr(v) for v in values[:_MAX_NAMED])
    more = f" (+{len(values) - _MAX_NAMED} more)" if len(values) > _MAX_NAMED else ""
    return shown + more


def import_labels(
    manifest_path: str | os.PathLike[str],
    labels_csv: str | os.PathLike[str],
    out_manifest: str | os.PathLike[str],
) -> LabelImport:
    """Fill ``label`` for the sheet's image ids and write the result as a new manifest.

    Rows whose ``label`` is blank are skipped (not annotated yet). Only training images (or images
    not yet assigned to a split) may be labelled: validation and test labels are fixed, so that
    evaluation stays comparable between runs.

    Args:
        manifest_path: The manifest the sheet was made from (e.g. ``RUN/data/split.csv``).
        labels_csv: The annotated sheet; needs the columns ``image_id`` and ``label``.
        out_manifest: Where the new manifest goes (must differ from ``manifest_path``).

    Returns:
        What was done.

    Raises:
        MedclError: One line naming the offending values, when the sheet is unreadable or lacks a
            column, names unknown classes, unknown image ids or val/test image ids, gives one
            image two labels, or relabels an already-labelled image differently; or when
            ``out_manifest`` is the input manifest.
    """
    src, out, sheet_path = Path(manifest_path), Path(out_manifest), Path(labels_csv)
    if out.resolve() == src.resolve():
        raise MedclError(f"{out}: refusing to overwrite the input manifest; choose a new file")
    manifest = read_manifest(src)
    try:
        sheet = pd.read_csv(sheet_path, dtype=str, keep_default_na=False)
    except FileNotFoundError as exc:
        raise MedclError(f"{sheet_path}: labels file not found") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MedclError(f"{sheet_path}: not a readable CSV ({exc})") from exc
    missing = [c for c in ("image_id", "label") if c not in sheet.columns]
    if missing:
        raise MedclError(f"{sheet_path}: missing column(s) {', '.join(missing)}")
    ids = sheet["image_id"].str.strip()
    labels = sheet["label"].str.strip()
    filled = labels != ""
    blank = int((~filled).sum())
    ids, labels = ids[filled], labels[filled]

    df = manifest.df
    problems: list[str] = []
    bad_classes = sorted(set(labels) - set(manifest.classes))
    if bad_classes:
        problems.append(
            f"unknown class(es) {_names(bad_classes)} "
            f"(expected one of {', '.join(manifest.classes)})"
        )
    pairs = pd.DataFrame({"image_id": ids, "label": labels}).drop_duplicates()
    twice = sorted(pairs["image_id"][pairs["image_id"].duplicated()].unique())
    if twice:
        problems.append(f"image id(s) given two different labels: {_names(twice)}")
    known = set(df["image_id"])
    unknown = sorted(set(pairs["image_id"]) - known)
    if unknown:
        problems.append(f"unknown image id(s) {_names(unknown)}")
    split_of = dict(zip(df["image_id"], df["split"], strict=True))
    held_out = sorted(i for i in set(pairs["image_id"]) if split_of.get(i) in ("val", "test"))
    if held_out:
        problems.append(
            f"image id(s) in the val/test split, whose labels stay fixed: {_names(held_out)}"
        )
    current = dict(zip(df["image_id"], df["label"], strict=True))
    new = dict(zip(pairs["image_id"], pairs["label"], strict=False))
    relabel = sorted(
        i
        for i, lab in new.items()
        if i in current and current[i] not in ("", lab) and i not in held_out
    )
    if relabel:
        problems.append(f"image id(s) already labelled differently: {_names(relabel)}")
    if problems:
        raise MedclError(f"{sheet_path}: " + "; ".join(problems))

    unchanged = sum(1 for i, lab in new.items() if current[i] == lab)
    out_df = df.copy()
    mask = out_df["image_id"].isin(list(new))
    out_df.loc[mask, "label"] = out_df.loc[mask, "image_id"].map(new)
    manifest.df = out_df
    manifest.extra = dict(manifest.extra)
    manifest.extra["labels_imported"] = {"sheet": sheet_path.name, "added": len(new) - unchanged}
    path = write_manifest(manifest, out)
    return LabelImport(path=path, added=len(new) - unchanged, unchanged=unchanged, blank=blank)
