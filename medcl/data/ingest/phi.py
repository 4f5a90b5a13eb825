"""Does a source path repeat its own file's identifying header values?

PACS and CD exports often name folders after the patient (``HANSEN_PAUL_MRN5309188/ST01/…``). Each
DICOM file's path (relative to the ingest root) is compared with the values of its own header that
identify a person: PatientName and its parts, PatientID, OtherPatientIDs, AccessionNumber, birth and
study dates in the usual spellings, institution and physician names. Comparison is case-insensitive
on normalised text (non-alphanumerics removed); a token of at least :data:`MIN_TOKEN` characters
found inside a normalised path component is a hit. The values never leave this module: only the
yes/no answer does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePosixPath

MIN_TOKEN = 3
"""Shorter tokens (initials, ``DR``) are not compared: they would match almost any name."""

NAME_ATTRIBUTES = (
    "PatientName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "InstitutionName",
)
ID_ATTRIBUTES = ("PatientID", "OtherPatientIDs", "AccessionNumber")
DATE_ATTRIBUTES = ("PatientBirthDate", "StudyDate")

_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")


def normalise(text: str) -> str:
    """Lower case, every non-alphanumeric character removed."""
    return _NON_ALNUM.sub("", text.lower())


def date_spellings(value: str) -> list[str]:
    """The usual spellings of a DICOM date ``YYYYMMDD`` (``19750214``, ``1975-02-14``,
    ``14.02.1975``, ``02/14/1975`` …); empty when ``value`` is not such a date."""
    m = _DATE.match(value.strip())
    if not m:
        return []
    y, mo, d = m.groups()
    out = [f"{y}{mo}{d}"]
    for sep in ("-", ".", "/", "_"):
        out += [f"{y}{sep}{mo}{sep}{d}", f"{d}{sep}{mo}{sep}{y}", f"{mo}{sep}{d}{sep}{y}"]
    return out


def header_values(ds) -> list[str]:
    """The identifying values of a pydicom dataset (strings; missing or unreadable ones skipped).

    Names are split into their parts (on ``^`` and spaces) as well as kept whole.
    """
    values: list[str] = []
    for key in NAME_ATTRIBUTES + ID_ATTRIBUTES + DATE_ATTRIBUTES:
        try:
            raw = ds.get(key)
        except Exception:  # noqa: BLE001 - a malformed value is just not compared
            continue
        items = (
            raw if isinstance(raw, (list, tuple)) or type(raw).__name__ == "MultiValue" else [raw]
        )
        for item in items:
            if item is None:
                continue
            text = str(item)
            values.append(text)
            if key in NAME_ATTRIBUTES:
                values.extend(p for p in re.split(r"[\^\s,]+", text) if p)
            if key in DATE_ATTRIBUTES:
                values.extend(date_spellings(text))
    return values


def tokens(values: Iterable[str]) -> set[str]:
    """Normalised tokens worth comparing (at least :data:`MIN_TOKEN` characters)."""
    return {t for t in (normalise(v) for v in values) if len(t) >= MIN_TOKEN}


def path_hits(rel: str, toks: set[str]) -> bool:
    """Whether a component of ``rel`` (POSIX, relative to the ingest root) contains a token.

    A component is compared whole and with its file extension removed; a token matches when it
    occurs inside the normalised component (``HANSEN_PAUL_MRN5309188`` contains ``hansen``,
    ``paul`` and ``mrn5309188``).
    """
    if not toks:
        return False
    for part in PurePosixPath(rel).parts:
        comp = normalise(part)
        if comp and any(t in comp for t in toks):
            return True
    return False
