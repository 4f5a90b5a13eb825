"""DICOM writing: one phantom image as an ordinary DICOM Part 10 file.

Every file carries the tags a clinical export would (patient and study identification with the
fake PHI of :mod:`medcl.data.synth.phi`, acquisition parameters, pixel spacing, slice geometry,
window and, for CT, the modality LUT), in Explicit VR Little Endian. UIDs are derived from the
cohort's arguments (:func:`dicom_uid`), so the same arguments give byte-identical files.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    PYDICOM_ROOT_UID,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from medcl.data.synth.phi import Phi
from medcl.data.synth.spec import GENERATOR_VERSION

_IMPLEMENTATION_VERSION = "MEDCL_SYNTH_1"
_SOP_CLASS = {
    "mr": MRImageStorage,
    "ct": CTImageStorage,
    "xr": DigitalXRayImageStorageForPresentation,
}
_MODALITY_CODE = {"mr": "MR", "ct": "CT", "xr": "DX"}


def dicom_uid(*parts: object) -> str:
    """A UID under pydicom's root, derived from ``parts`` (the same parts, the same UID)."""
    return str(
        generate_uid(prefix=PYDICOM_ROOT_UID, entropy_srcs=["|".join(str(p) for p in parts)])
    )


def write_instance(
    path: Path,
    pixels: np.ndarray,
    modality: str,
    uids: dict[str, str],
    phi: Phi,
    study: int,
    series: int,
    instance: int,
    geometry: dict[str, Any],
    info: dict[str, Any],
) -> None:
    """Write one image (a 2-D image or one slice of a volume) as a DICOM file.

    Args:
        path: File to write.
        pixels: Stored values ``(rows, cols)``: uint16 (MR, X-ray) or int16 (CT).
        modality: ``"mr"``, ``"ct"`` or ``"xr"``.
        uids: ``study``, ``series``, ``frame`` and ``sop`` instance UIDs.
        phi: The patient's fake PHI.
        study: Study index (0-based) into ``phi``'s per-study lists.
        series: Series index (0-based) within the study.
        instance: Instance index (0-based) within the series.
        geometry: ``spacing`` and ``thickness`` (mm), ``position`` (x, y, z) and ``orientation``
            (six direction cosines).
        info: From the acquisition: ``weighting`` (``"T1"`` or ``"T2"``) for MR; optionally the
            cohort's descriptive text: ``manufacturer``, ``model_name``, ``study_description``,
            ``series_prefix`` and ``body_part`` (the phantom's when absent).
    """
    sop_class = _SOP_CLASS[modality]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uids["sop"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = _IMPLEMENTATION_VERSION

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] if modality != "xr" else ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uids["sop"]
    _set_study_and_patient(ds, modality, phi, study, info)
    _set_acquisition(ds, modality, geometry, info)
    _set_position(ds, modality, uids, study, series, instance, geometry)
    _set_pixels(ds, modality, pixels, geometry)
    ds.save_as(path, enforce_file_format=True)


def _set_study_and_patient(
    ds: Dataset, modality: str, phi: Phi, study: int, info: dict[str, Any]
) -> None:
    """Dates, times, institution and staff of the study; the patient's (fake) identity."""
    day = phi.study_dates[study].strftime("%Y%m%d")
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = day
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = phi.study_times[study]
    ds.AccessionNumber = phi.accessions[study]
    ds.Modality = _MODALITY_CODE[modality]
    ds.Manufacturer = info.get("manufacturer", "MEDCL PHANTOM")
    ds.InstitutionName = phi.institutions[study]
    ds.ReferringPhysicianName = phi.referrers[study]
    ds.StationName = f"SYN{study + 1:02d}"
    ds.StudyDescription = info.get("study_description", "SYNTHETIC PHANTOM")
    series = info.get("series_prefix", "PHANTOM")
    ds.SeriesDescription = f"{series} {ds.Modality} {info.get('weighting', '')}".strip()
    ds.OperatorsName = phi.operators[study]
    ds.ManufacturerModelName = info.get("model_name", f"medcl-synth v{GENERATOR_VERSION}")
    ds.PatientName = phi.name
    ds.PatientID = phi.patient_id
    ds.PatientBirthDate = phi.birth.strftime("%Y%m%d")
    ds.PatientSex = phi.sex
    ds.PatientAge = _age(phi.birth, phi.study_dates[study])
    ds.PatientAddress = phi.address
    ds.BodyPartExamined = info.get("body_part", "ABDOMEN")


def _set_acquisition(
    ds: Dataset, modality: str, geometry: dict[str, Any], info: dict[str, Any]
) -> None:
    """The modality's acquisition tags (projection view, slice thickness, MR sequence, CT kVp)."""
    if modality == "xr":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ViewPosition = "AP"
        ds.PatientOrientation = ["L", "F"]
        ds.ImagerPixelSpacing = [_ds(geometry["spacing"])] * 2
    else:
        ds.SliceThickness = _ds(geometry["thickness"])
        ds.PatientPosition = "HFS"
    if modality == "mr":
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.MagneticFieldStrength = "1.5"
        ds.RepetitionTime = "500" if info.get("weighting") == "T1" else "4000"
        ds.EchoTime = "15" if info.get("weighting") == "T1" else "100"
    if modality == "ct":
        ds.KVP = "120"


def _set_position(
    ds: Dataset,
    modality: str,
    uids: dict[str, str],
    study: int,
    series: int,
    instance: int,
    geometry: dict[str, Any],
) -> None:
    """Study, series and instance identification; the image's place in patient space."""
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.StudyID = f"{study + 1}"
    ds.SeriesNumber = series + 1
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = instance + 1
    ds.ImagePositionPatient = [_ds(v) for v in geometry["position"]]
    ds.ImageOrientationPatient = [_ds(v) for v in geometry["orientation"]]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.PositionReferenceIndicator = ""
    if modality != "xr":
        ds.SliceLocation = _ds(geometry["position"][2])


def _set_pixels(ds: Dataset, modality: str, pixels: np.ndarray, geometry: dict[str, Any]) -> None:
    """Pixel description, window, CT modality LUT and the pixel data."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = [_ds(geometry["spacing"])] * 2
    ds.BitsAllocated = 16
    if modality == "ct":
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
    else:
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        lo, hi = np.percentile(pixels, [1.0, 99.5])
        ds.WindowCenter = _ds(round((lo + hi) / 2))
        ds.WindowWidth = _ds(max(round(hi - lo), 1))
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()


def _age(birth: date, on: date) -> str:
    """DICOM age string (``"047Y"``) of someone born on ``birth``, on the day ``on``."""
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    return f"{years:03d}Y"


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 6 significant digits)."""
    return f"{value:.6g}"
