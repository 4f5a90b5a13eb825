"""Types shared by the readers: a source file, a decoded image, and a rejection.

A reader turns one :class:`Source` (the bytes of one file plus its path relative to the ingest
root) into :class:`Decoded` images, one per future manifest row, or raises :class:`Unreadable` with
a reason.

Identifiers leave a reader already pseudonymised (:class:`~medcl.data.pseudonym.Pseudonymizer`),
so no header value that identifies a person travels further than the reader. Rejection reasons are
built from a fixed vocabulary plus safe values (transfer-syntax and SOP-class names from the DICOM
dictionary, attribute keywords, sizes): they never quote a header value or a library's exception
text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medcl.data.pseudonym import Pseudonymizer

#: What the cached values of a row mean (manifest column ``intensity``).
HU = "hu"
UNIT = "unit"


class Unreadable(Exception):  # noqa: N818 - a reason, not an error of the program
    """A file that cannot become a manifest row; ``reason`` is safe to write anywhere (no PHI)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Source:
    """One input file, read once.

    Attributes:
        path: Absolute path.
        rel: Path relative to the ingest root, POSIX separators (the key of the labels CSV).
        data: The file's bytes.
        sha256: Hex digest of ``data``.
    """

    path: Path
    rel: str
    data: bytes
    sha256: str

    @classmethod
    def load(cls, path: Path, rel: str) -> Source:
        """Read ``path`` and hash it."""
        data = path.read_bytes()
        return cls(path, rel, data, hashlib.sha256(data).hexdigest())

    @property
    def parent(self) -> str:
        """Folder of the file relative to the ingest root (``""`` at the root)."""
        parts = self.rel.rsplit("/", 1)
        return parts[0] if len(parts) == 2 else ""


@dataclass
class ReadContext:
    """What a reader needs besides the file.

    Attributes:
        pseudonymize: Keyed pseudonym function (namespaces ``patient``, ``study``, ``series``,
            ``image``).
        dims: 2 (one row per image, frame or slice) or 3 (one row per volume).
    """

    pseudonymize: Pseudonymizer
    dims: int = 2

    def picture_row(
        self,
        src: Source,
        family: str,
        item: str,
        array: np.ndarray,
        suffix: str,
        order: int,
        image: object = None,
        **more: Any,
    ) -> Decoded:
        """A row of a format that names no patient and has no modality (NIfTI, PNG/TIFF/JPEG,
        MedMNIST).

        Such an ``item`` (a file, or one image of a MedMNIST file) is its own patient and study:
        both keys are pseudonyms of ``item``, the image key one of ``item`` and ``image`` (the
        row's ``suffix`` when ``None``). The row is modality ``OT``, scaled to [0, 1]
        (:data:`UNIT`), not inverted, with the file's digest and path; ``more`` sets other
        :class:`Decoded` fields.
        """
        pz = self.pseudonymize
        return Decoded(
            array=array,
            suffix=suffix,
            order=order,
            modality="OT",
            intensity=UNIT,
            invert=False,
            patient_key=pz("patient", item),
            study_key=pz("study", item),
            image_base=pz("image", f"{item}\x00{suffix if image is None else image}"),
            family=family,
            sha256=src.sha256,
            path=src.rel,
            **more,
        )


@dataclass
class Decoded:
    """One future manifest row: a decoded array in physical units plus de-identified metadata.

    Attributes:
        array: ``(H, W)`` or ``(D, H, W)`` numbers before normalisation (HU for CT).
        suffix: Distinguishes rows of one file in the cache key (``""``, ``"_f003"``, ``"_s012"``
            …).
        order: Position of the row within its file (rows sort by path, then order).
        modality: ``CT``, ``MR``, ``XR``, ``US``, ``OT`` …
        intensity: :data:`HU` (kept as is) or :data:`UNIT` (percentile-scaled to [0, 1]).
        invert: Invert after scaling (DICOM MONOCHROME1); ignored for :data:`HU`.
        patient_key: Pseudonymous patient.
        study_key: Pseudonymous study.
        image_base: Pseudonymous image id before de-duplication across files.
        spacing: ``(x, y, z)`` in mm, ``None`` when unknown.
        split: Split carried by the source (MedMNIST), else ``""``.
        label: Label carried by the source (MedMNIST class index as text), else ``""``.
        family: Reader that produced it: ``dicom``, ``nifti``, ``raster`` or ``npz``.
        sha256: Digest recorded in the manifest (file digest; series digest for 3-D DICOM).
        path: Row path relative to the ingest root (file, or series folder for 3-D DICOM).
        members: The slice files of a 3-D DICOM series row.
        label_keys: DICOM: keyed pseudonyms of the header keys a labels CSV may name
            (:func:`medcl.data.readers.dicom.label_keys`); never written to the manifest.
    """

    array: np.ndarray
    suffix: str
    order: int
    modality: str
    intensity: str
    invert: bool
    patient_key: str
    study_key: str
    image_base: str
    spacing: tuple[float | None, float | None, float | None] = (None, None, None)
    split: str = ""
    label: str = ""
    family: str = ""
    sha256: str = ""
    path: str = ""
    members: list[str] = field(default_factory=list)
    label_keys: dict[str, str] = field(default_factory=dict)


def frame_suffix(kind: str, index: int) -> str:
    """Cache-key suffix of frame/slice ``index`` (0-based): ``frame_suffix("f", 2) == "_f003"``."""
    return f"_{kind}{index + 1:03d}"


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` of a ``(..., 3)`` array, as float64.

    This is medcl's single rule for colour sources (ultrasound, photographs, palette colour): one
    grey channel that keeps perceived brightness. Alpha channels are dropped before.
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
