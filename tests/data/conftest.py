"""Helpers for the data-stage tests: tiny DICOM files written with pydicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

_SOP = {"CT": CTImageStorage, "MR": MRImageStorage}


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    modality: str = "MR",
    photometric: str = "MONOCHROME2",
    slope: float | None = None,
    intercept: float | None = None,
    bits_stored: int | None = None,
    patient_id: str = "PID-TEST",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    position: tuple[float, float, float] | None = None,
    orientation: tuple[float, ...] | None = None,
    spacing: tuple[float, float] | None = (0.5, 0.5),
    **extra,
) -> Path:
    """Write a minimal, valid DICOM Part 10 file.

    ``pixels``: ``(H, W)``, ``(F, H, W)`` for multi-frame, ``(H, W, 3)`` / ``(F, H, W, 3)`` for RGB
    (uint8). Integer dtype decides BitsAllocated and PixelRepresentation. ``extra`` keywords are set
    on the data set as given.
    """
    arr = np.asarray(pixels)
    colour = photometric in ("RGB", "YBR_FULL")
    frames = arr.shape[0] if arr.ndim == (4 if colour else 3) else 1
    meta = FileMetaDataset()
    sop_class = _SOP.get(modality, SecondaryCaptureImageStorage)
    sop_uid = sop_uid or generate_uid()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = "TEST^PATIENT"
    ds.Modality = modality
    ds.Rows, ds.Columns = arr.shape[-3:-1] if colour else arr.shape[-2:]
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric
    if colour:
        ds.PlanarConfiguration = 0
    bits = arr.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if np.issubdtype(arr.dtype, np.signedinteger) else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept or 0
    if spacing is not None:
        ds.PixelSpacing = list(spacing)
    if position is not None:
        ds.ImagePositionPatient = list(position)
        ds.ImageOrientationPatient = list(orientation or (1, 0, 0, 0, 1, 0))
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def dicom_writer():
    """The :func:`write_dicom` helper."""
    return write_dicom


@pytest.fixture
def ingest_secret(tmp_path: Path) -> Path:
    """A per-test project secret file."""
    return tmp_path / "secret" / "key"
