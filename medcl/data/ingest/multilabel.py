"""Multi-label labels at ingest: a set of findings per image, from three sources.

The manifest of a multi-label task (sidecar ``"task": "multilabel"``, findings in ``classes``)
holds each image's findings as the text of :mod:`medcl.data.findings` (``lesion|vessel``, ``-``
for none, ``?name`` for an unknown finding, empty for unlabelled). Ingest reads them from:

1. **A labels CSV with one column per finding** (CheXpert's layout): the key column (as for single
   labels) and a column per finding holding ``1`` (present), ``0`` (absent), blank (unknown: not
   read) or ``-1`` (uncertain; ``uncertain`` maps it to unknown (default), absent or present).
   ``1.0``, ``0.0`` and ``-1.0`` are read as ``1``, ``0`` and ``-1``. The findings are the CSV's
   columns other than the key and ``patient``, in CSV order, or the columns ``findings`` names
   (in that order; the other columns are then ignored).
2. **A ``|``-separated ``label`` column** (ChestX-ray14's "Finding Labels"): the present findings'
   names, ``No Finding`` for none, blank for unlabelled; a name after ``?`` is unknown. Every
   finding not named is absent. The findings are ``findings`` when declared (a name outside them is
   refused by row), else every name used, sorted.
3. **A MedMNIST ``.npz`` whose ``<split>_labels`` are N×K** (ChestMNIST: K = 14), read by
   :mod:`medcl.data.readers.npz`: finding names from a ``findings`` (or ``label_names``) array in
   the file, else ``finding_0`` … ``finding_K-1``; ``findings`` renames them in column order.

**Which CSV is multi-label** (``task``, ``medcl ingest --task``): ``multiclass`` needs a
``label`` column (one class per image; other columns ignored); ``multilabel`` reads the
``label`` column as form 2 when there is one, else the finding columns (form 1); ``auto`` (the
default) is ``multiclass`` when the CSV has a ``label`` column and ``multilabel`` (form 1) when it
has none and two or more other columns; a CSV with neither is refused in one line. An ``.npz``
with N×K labels is multi-label whatever ``auto`` says; ``multiclass`` refuses it.

Every problem is one :class:`~medcl.errors.MedclError` line naming the CSV (or file) and the
column, and the first bad row by its number (the header is row 1); no key value is quoted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from medcl.data import findings as fnd
from medcl.data.ingest.rowblock import RowBlock
from medcl.errors import MedclError

TASKS = ("auto", "multiclass", "multilabel")
"""``task`` values of :func:`medcl.data.ingest.ingest` (``medcl ingest --task``)."""

UNCERTAIN = {"unknown": fnd.MISSING, "zero": fnd.ABSENT, "one": fnd.PRESENT}
"""``uncertain``: the state a ``-1`` cell of a finding column becomes."""

NO_FINDING = "no finding"
"""ChestX-ray14's label of an image without findings (matched case-blind)."""

_VALUE = {"1": fnd.PRESENT, "1.0": fnd.PRESENT, "0": fnd.ABSENT, "0.0": fnd.ABSENT, "": None}
_UNCERTAIN_VALUES = ("-1", "-1.0")
_FINDING_PREFIX = "finding_"


def csv_task(columns: Sequence[str], value_columns: Sequence[str], task: str, path: object) -> str:
    """Whether a labels CSV is ``multiclass`` or ``multilabel`` (rules: module docstring).

    Args:
        columns: Every header name, lower-cased.
        value_columns: The columns besides the key and ``patient``.
        task: ``auto``, ``multiclass`` or ``multilabel``.
        path: The CSV (for messages).

    Raises:
        MedclError: An unknown ``task``, or a CSV that fits none.
    """
    if task not in TASKS:
        raise MedclError(f"--task must be one of {', '.join(TASKS)}, not {task!r}")
    has_label = "label" in columns
    if task == "auto":
        if has_label:
            return "multiclass"
        if len(value_columns) >= 2:
            return "multilabel"
        raise MedclError(
            f"{path}: labels CSV needs a label column, or one 1/0/blank column per finding "
            "(two or more; a single finding column with --task multilabel)"
        )
    if task == "multiclass" and not has_label:
        raise MedclError(f"{path}: labels CSV needs a label column (--task multiclass)")
    if task == "multilabel" and not has_label and not value_columns:
        raise MedclError(f"{path}: labels CSV has no finding column (--task multilabel)")
    return task


def column_labels(
    df: pd.DataFrame,
    value_columns: Sequence[str],
    declared: Sequence[str] | None,
    uncertain: str,
    path: object,
) -> tuple[list[str], list[str]]:
    """Form 1: the findings and each row's label text from one 1/0/blank/−1 column per finding.

    Raises:
        MedclError: A declared finding with no column, a name that cannot be a finding, or a cell
            that is none of the values (by column and row).
    """
    if uncertain not in UNCERTAIN:
        raise MedclError(f"--uncertain must be one of {', '.join(UNCERTAIN)}, not {uncertain!r}")
    if declared is not None:
        missing = [f for f in declared if f not in value_columns]
        if missing:
            raise MedclError(f"{path}: no column for finding {missing[0]!r} of --findings")
        cols = list(declared)
    else:
        cols = list(value_columns)
    findings = _names(cols, path)
    states = np.empty((len(df), len(cols)), dtype=np.int64)
    mapping = {**_VALUE, **dict.fromkeys(_UNCERTAIN_VALUES, UNCERTAIN[uncertain])}
    for k, col in enumerate(cols):
        cells = df[col].astype(str).str.strip()
        bad = ~cells.isin(list(mapping))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0]) + 2
            raise MedclError(
                f"{path}: column {col!r}, row {row}: a finding column holds 1, 0, -1 or blank "
                "(declare the finding columns with --findings when the CSV has others)"
            )
        values = cells.map(mapping)
        states[:, k] = values.fillna(fnd.MISSING).astype(np.int64).to_numpy()
    return findings, fnd.encode_matrix(states, findings)


def pipe_labels(
    texts: Sequence[str], declared: Sequence[str] | None, path: object
) -> tuple[list[str], list[str]]:
    """Form 2: the findings and each row's label text from a ``|``-separated ``label`` column.

    Raises:
        MedclError: A name outside ``declared``, ``No Finding`` beside a finding, a name given
            twice, or a name that cannot be a finding (by row).
    """
    parsed: list[dict[str, int] | None] = []
    for i, text in enumerate(texts, start=2):
        tokens = [t.strip() for t in str(text).split(fnd.SEP) if t.strip()]
        if not tokens:
            parsed.append(None)
            continue
        if any(t.lower() == NO_FINDING for t in tokens):
            if len(tokens) > 1:
                raise MedclError(f"{path}: row {i}: 'No Finding' beside a finding in label")
            parsed.append({})
            continue
        states: dict[str, int] = {}
        for t in tokens:
            unknown = t.startswith(fnd.UNKNOWN)
            name = t[1:].strip() if unknown else t
            if name in states:
                raise MedclError(f"{path}: row {i}: finding {name!r} named twice in label")
            states[name] = fnd.MISSING if unknown else fnd.PRESENT
        parsed.append(states)
    used = sorted({n for s in parsed if s for n in s})
    if declared is not None:
        findings = _names(declared, "--findings")
        outside = [
            (i, n) for i, s in enumerate(parsed, start=2) for n in s or {} if n not in findings
        ]
        if outside:
            i, name = outside[0]
            raise MedclError(f"{path}: row {i}: finding {name!r} is not among --findings")
    else:
        findings = _names(used, path)
    index = {n: k for k, n in enumerate(findings)}
    out = []
    for s in parsed:
        if s is None:
            out.append("")
            continue
        row = [fnd.ABSENT] * len(findings)
        for name, state in s.items():
            row[index[name]] = state
        out.append(fnd.encode_states(row, findings))
    return findings, out


def _names(names: Sequence[str], where: object) -> list[str]:
    """:func:`medcl.data.findings.check_finding_names`, its refusal prefixed with ``where``."""
    if not names:
        raise MedclError(f"{where}: no finding named")
    try:
        return fnd.check_finding_names(names)
    except MedclError as exc:
        raise MedclError(f"{where}: {exc}") from None


def default_names(k: int) -> list[str]:
    """``finding_0`` … ``finding_{k-1}``: the findings of an ``.npz`` that names none."""
    return [f"{_FINDING_PREFIX}{i}" for i in range(k)]


def resolve_findings(
    rows: list[dict],
    blocks: Sequence[RowBlock],
    csv_findings: Sequence[str] | None,
    declared: Sequence[str] | None,
) -> tuple[list[str], list[RowBlock]] | None:
    """The findings of a multi-label ingest, or None when it is single-label.

    Multi-label sources: the labels CSV (``csv_findings``) and the ``.npz`` files with N×K labels
    (their rows carry ``findings``). An ``.npz`` source's labels are renamed to ``declared``
    (``--findings``) in column order when given.

    Args:
        rows: The rows held as dicts (changed in place: renamed ``.npz`` labels).
        blocks: Array files' rows by column.
        csv_findings: The CSV's findings when it is multi-label, else None.
        declared: ``--findings``, or None.

    Returns:
        The findings and ``blocks`` (new ones where renamed), or None.

    Raises:
        MedclError: Sources that disagree on the task or on the findings, or ``declared`` of
            another length than an ``.npz`` file's findings.
    """
    own: dict[str, list[str]] = {}  # npz path -> its findings
    single: set[str] = set()
    for r in rows:
        if r["family"] != "npz":
            continue
        if r.get("findings"):
            own[r["path"]] = list(r["findings"])
        elif r["label"] != "":
            single.add(r["path"])
    for b in blocks:
        path = b.constants.get("path", "")
        if "findings" in b.fields:
            own[path] = list(b.constants["findings"])
        elif b.distinct("label") - {""}:
            single.add(path)
    if csv_findings is None and not own:
        return None
    if single:
        raise MedclError(
            f"{sorted(single)[0]}: its labels are class indices (N×1), the task is multi-label; "
            "ingest the two kinds into separate manifests"
        )
    target = list(declared) if declared is not None else None
    if csv_findings is not None:
        target = list(csv_findings)
    rename: dict[str, dict[str, str]] = {}
    for path, names in sorted(own.items()):
        if target is None:
            target = list(names)
        if len(names) != len(target):
            raise MedclError(
                f"{path}: {len(names)} finding columns, but the findings are {len(target)} "
                f"({', '.join(target[:5])}{' …' if len(target) > 5 else ''})"
            )
        if declared is None and names != target:
            raise MedclError(
                f"{path}: its findings ({', '.join(names[:5])} …) differ from the others'; "
                "name them with --findings"
            )
        if names != target:
            rename[path] = dict(zip(names, target, strict=True))
    assert target is not None
    findings = _names(target, "--findings" if declared is not None else "findings")
    if not rename:
        return findings, list(blocks)
    for r in rows:
        if r["path"] in rename and r["family"] == "npz":
            r["label"] = _renamed(r["label"], rename[r["path"]])
    out = []
    for b in blocks:
        names = rename.get(b.constants.get("path", ""))
        if names is not None:
            b = b.mapped("label", lambda t, m=names: _renamed(t, m))
        out.append(b)
    return findings, out


_TOKEN = re.compile(r"[^|]+")


def _renamed(text: str, names: dict[str, str]) -> str:
    """A label text with every finding renamed (order kept: the columns' order is the same)."""
    if text in ("", fnd.EMPTY):
        return text

    def one(m: re.Match[str]) -> str:
        t = m.group(0)
        return fnd.UNKNOWN + names[t[1:]] if t.startswith(fnd.UNKNOWN) else names[t]

    return _TOKEN.sub(one, text)
