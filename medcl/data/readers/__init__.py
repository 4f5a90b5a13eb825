"""Readers: one module per source format, each turning a file into de-identified decoded images.

============ ==================================================================================
module       reads
============ ==================================================================================
``dicom``    DICOM files, any extension or none (``DICM`` prefix or a parseable raw data set)
``series``   3-D mode: single-frame CT/MR DICOM slices stacked into series volumes
``geometry`` slice order and regular-stack checks shared by ``series`` and ``dicom``
``nifti``    NIfTI-1/-2 ``.nii`` and ``.nii.gz``
``raster``   PNG, TIFF, JPEG
``npz``      MedMNIST ``.npz``
``codecs``   which DICOM decoder plug-in a transfer syntax needs
============ ==================================================================================

The format is decided from the file's content, never its name (:func:`sniff`). Every reader raises
:class:`Unreadable` with a PHI-free reason for a file it cannot turn into rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from medcl.data.readers import dicom, nifti, npz, raster
from medcl.data.readers.base import (
    HU,
    UNIT,
    Decoded,
    ReadContext,
    Source,
    Unreadable,
    frame_suffix,
    luma,
)

__all__ = [
    "HU",
    "UNIT",
    "Decoded",
    "ReadContext",
    "Source",
    "Unreadable",
    "frame_suffix",
    "luma",
    "sniff",
    "read",
    "READERS",
]

READERS: dict[str, Callable[[Source, ReadContext], Iterable[Decoded]]] = {
    "dicom": dicom.read,
    "nifti": nifti.read,
    "raster": raster.read,
    "npz": npz.read,
}


def sniff(src: Source) -> str:
    """The reader for ``src`` from its content: ``dicom``, ``nifti``, ``raster`` or ``npz``.

    Files that are none of these but look like DICOM after all are left to the DICOM reader, which
    refuses them when ``dcmread(force=True)`` finds no DICOM attributes.

    Raises:
        Unreadable: Empty files and recognised formats medcl does not read, with the reason.
    """
    data = src.data
    if not data:
        raise Unreadable("empty file (0 bytes)")
    if data[128:132] == b"DICM":
        return "dicom"
    if raster.magic_format(data[:16]):
        return "raster"
    kind = nifti.header_kind(data[:544])
    if kind == "nifti":
        return "nifti"
    if kind == "nifti-pair":
        raise Unreadable("NIfTI header of a .hdr/.img pair (save the image as one .nii/.nii.gz)")
    if kind == "analyze":
        raise Unreadable(
            "Analyze 7.5 header (no NIfTI magic): orientation is undefined, convert it to NIfTI"
        )
    if data[:2] == b"\x1f\x8b":
        if nifti.header_kind(nifti.gunzip_head(data)) == "nifti":
            return "nifti"
        raise Unreadable("gzip-compressed file that is not a NIfTI image (decompress it first)")
    if data[:4] == b"PK\x03\x04":
        if npz.is_medmnist(data):
            return "npz"
        raise Unreadable(
            "zip/NPZ archive without MedMNIST arrays (train_images, val_images, test_images)"
        )
    if data[:6] == b"\x93NUMPY":
        raise Unreadable(
            "bare .npy array (no labels, splits or geometry; use the MedMNIST .npz layout)"
        )
    return "dicom"


def read(src: Source, ctx: ReadContext) -> Iterable[Decoded]:
    """Decode ``src`` with the reader :func:`sniff` picks.

    Raises:
        Unreadable: When the file cannot become rows.
    """
    return READERS[sniff(src)](src, ctx)
