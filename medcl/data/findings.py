"""Multi-label findings: how a manifest's ``label`` column holds a set of findings.

A multi-label manifest (sidecar ``"task": "multilabel"``) declares its findings in ``classes``
(e.g. ``["lesion", "nodule", "vessel"]``); each finding of an image is present (1), absent (0) or
unknown (−1: not read, or uncertain). The ``label`` column writes that state as text, ChestX-ray14's
"Finding Labels" extended with unknowns:

- the present findings by name, in declared order, joined by ``|`` (``lesion|vessel``);
- an unknown finding as its name after ``?`` (``lesion|?nodule``: nodule not read);
- every finding not named is absent; ``-`` is the label of an image whose findings are all known
  and absent (the empty set);
- an empty ``label`` is an unlabelled image (every finding unknown), as in a single-label manifest.

Finding names may not be empty, be ``-``, start with ``?``, or hold ``|``. The matrix form used by
losses and metrics is ``(N, K)`` integers in ``{1, 0, −1}`` (:func:`decode_labels`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from medcl.errors import MedclError

TASKS = ("multiclass", "multilabel")
SEP = "|"
UNKNOWN = "?"
EMPTY = "-"
PRESENT, ABSENT, MISSING = 1, 0, -1


def check_finding_names(findings: Sequence[str]) -> list[str]:
    """The finding names as strings, refused when one cannot be written in a ``label``.

    Raises:
        MedclError: Naming the first bad name, or a repeated one.
    """
    names = [str(f) for f in findings]
    for name in names:
        bad = (
            not name.strip()
            or name == EMPTY
            or name.startswith(UNKNOWN)
            or SEP in name
            or name != name.strip()
        )
        if bad:
            raise MedclError(
                f"finding name {name!r} cannot be written in a label: names must be non-empty, "
                f"not {EMPTY!r}, not start with {UNKNOWN!r} or a space, and hold no {SEP!r}"
            )
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise MedclError(f"finding {name!r} is declared twice")
        seen.add(name)
    return names


def encode_states(states: Sequence[int], findings: Sequence[str]) -> str:
    """The ``label`` text of one image's finding states (1 present, 0 absent, −1 unknown).

    Returns ``""`` when every finding is unknown (an unlabelled image).
    """
    if len(states) != len(findings):
        raise ValueError(f"{len(states)} states for {len(findings)} findings")
    if all(int(s) == MISSING for s in states):
        return ""
    tokens = []
    for s, name in zip(states, findings, strict=True):
        s = int(s)
        if s == PRESENT:
            tokens.append(name)
        elif s == MISSING:
            tokens.append(UNKNOWN + name)
        elif s != ABSENT:
            raise ValueError(f"finding state must be 1, 0 or -1, got {s}")
    return SEP.join(tokens) if tokens else EMPTY


def encode_matrix(states: np.ndarray, findings: Sequence[str]) -> list[str]:
    """:func:`encode_states` of every row of an ``(N, K)`` state matrix (distinct rows once)."""
    y = np.asarray(states, dtype=np.int64)
    if y.ndim != 2 or y.shape[1] != len(findings):
        raise ValueError(f"states must be (N, {len(findings)}), got {y.shape}")
    if len(y) == 0:
        return []
    uniq, inverse = np.unique(y, axis=0, return_inverse=True)
    texts = [encode_states(row, findings) for row in uniq]
    return [texts[i] for i in np.asarray(inverse).reshape(-1)]


def parse_label(text: str, findings: Sequence[str]) -> np.ndarray:
    """The ``(K,)`` states written by ``text`` (see the module docstring).

    Raises:
        ValueError: On a name that is not a declared finding, or one named twice.
    """
    k = len(findings)
    if text == "":
        return np.full(k, MISSING, dtype=np.int64)
    out = np.zeros(k, dtype=np.int64)
    if text == EMPTY:
        return out
    index = {name: i for i, name in enumerate(findings)}
    seen: set[str] = set()
    for token in text.split(SEP):
        state = MISSING if token.startswith(UNKNOWN) else PRESENT
        name = token[1:] if state == MISSING else token
        if name not in index:
            raise ValueError(f"{name!r} is not a declared finding")
        if name in seen:
            raise ValueError(f"finding {name!r} named twice")
        seen.add(name)
        out[index[name]] = state
    return out


def decode_labels(labels: pd.Series | Sequence[str], findings: Sequence[str]) -> np.ndarray:
    """The ``(N, K)`` int64 states of a ``label`` column (each distinct text parsed once).

    Raises:
        ValueError: Naming the first text that does not parse.
    """
    col = pd.Series(labels, dtype=object).astype(str)
    codes, uniques = pd.factorize(col)
    table = np.empty((len(uniques), len(findings)), dtype=np.int64)
    for j, text in enumerate(uniques):
        try:
            table[j] = parse_label(text, findings)
        except ValueError as exc:
            raise ValueError(f"label {text!r}: {exc}") from exc
    if len(col) == 0:
        return np.empty((0, len(findings)), dtype=np.int64)
    return table[codes]


def bad_labels(labels: pd.Series, findings: Sequence[str]) -> tuple[pd.Index, list[str]]:
    """The index of rows whose ``label`` does not parse, and the distinct bad texts."""
    uniques = pd.unique(labels.astype(str))
    bad = []
    for text in uniques:
        try:
            parse_label(text, findings)
        except ValueError:
            bad.append(text)
    return labels.index[labels.isin(bad)], sorted(bad)
