"""DICOM reader: de-identified metadata and pixel values in physical units.

Rules, in the order they are applied to every frame:

1. **Read** with ``pydicom.dcmread(force=True)``. Files without the ``DICM`` prefix are accepted
   only when the parsed data set holds recognisable image or object attributes (raw data sets);
   anything else is "not a recognised image file".
2. **Checks before decoding**, each with its own reason: no pixel data (structured reports,
   presentation states, key-object selections, RT plans, DICOMDIRs …, named by their SOP class);
   missing or invalid image attributes (named by keyword); a compressed transfer syntax without an
   installed decoder (names the plug-in, see :mod:`medcl.data.readers.codecs`); truncated pixel
   data. A file without a Transfer Syntax UID but with native (uncompressed) pixel data is decoded
   with the encoding pydicom detected while reading it.
3. **Modality LUT** (Rescale Slope/Intercept, a Modality LUT Sequence, or the enhanced multi-frame
   Pixel Value Transformation) before anything else, so CT values are Hounsfield units.
4. **No VOI / window** is applied: CT is kept in HU (intensity ``hu``), every other image is later
   scaled to [0, 1] between its 0.5th and 99.5th percentiles (intensity ``unit``, see
   :mod:`medcl.data.cache`). Windowing is an augmentation/display choice, not an ingest one.
5. **MONOCHROME1** images are flagged for inversion after scaling (bright = dense, as MONOCHROME2).
   HU values are physical and never inverted.
6. **Colour** (RGB, YBR decoded to RGB by pydicom, PALETTE COLOR expanded with ``apply_color_lut``)
   becomes one channel by BT.601 luma (:func:`~medcl.data.readers.base.luma`).
7. **Frames**: in 2-D mode each frame of a multi-frame file is its own row (``_f001`` …). In 3-D
   mode single-frame CT/MR slices are grouped into series volumes
   (:mod:`medcl.data.readers.series`); an enhanced multi-frame CT/MR file with per-frame positions
   is one volume.

Identity (pseudonymised here, never written in clear): patient from PatientID, else PatientName +
PatientBirthDate, else the file's folder; study from StudyInstanceUID; image from SOPInstanceUID
(+ frame number); series from SeriesInstanceUID. The keys a labels CSV may name
(:data:`LABEL_KEYS`) leave the reader only as keyed pseudonyms (:func:`label_keys`), which the
ingest matches against the CSV's keys pseudonymised the same way (:mod:`medcl.data.ingest.labels`).
"""

from __future__ import annotations

import io
import re
from dataclasses import asdict, dataclass, field

import numpy as np
import pydicom
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_color_lut, apply_modality_lut
from pydicom.pixels.utils import get_expected_length

from medcl.data.pseudonym import Pseudonymizer
from medcl.data.readers.base import HU, UNIT, Decoded, ReadContext, Source, Unreadable, frame_suffix
from medcl.data.readers.base import luma as _luma
from medcl.data.readers.codecs import failed_decode_reason, missing_decoder_reason, syntax_name
from medcl.data.readers.geometry import order_slices

NOT_RECOGNISED = "not a recognised image file (not DICOM, NIfTI, PNG, TIFF, JPEG or MedMNIST .npz)"
VOLUME_MODALITIES = ("CT", "MR")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_IMAGE_ATTRIBUTES = (
    "Rows",
    "Columns",
    "BitsAllocated",
    "SamplesPerPixel",
    "PhotometricInterpretation",
)
_NATIVE_ATTRIBUTES = ("BitsStored", "PixelRepresentation")
_PHOTOMETRIC = (
    "MONOCHROME1",
    "MONOCHROME2",
    "PALETTE COLOR",
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_PARTIAL_422",
    "YBR_PARTIAL_420",
    "YBR_ICT",
    "YBR_RCT",
    "HSV",
    "ARGB",
    "CMYK",
    "XYB",
)
_XR = {"CR": "XR", "DX": "XR", "RG": "XR", "DR": "XR"}
_CODE = re.compile(r"^[A-Z0-9_]{1,16}$")
# Tags whose presence makes a force-read, prefix-less file plausibly DICOM.
_MARKER_TAGS = (0x00080016, 0x00080018, 0x00080060, 0x0020000D, 0x00280010, 0x7FE00010)


@dataclass
class SliceInfo:
    """Geometry and keys of one single-frame CT/MR slice, for grouping into a 3-D series.

    Everything here is pseudonymous or geometric; it is stored in the ingest state between runs.
    """

    series: str
    image_base: str
    patient_key: str
    study_key: str
    modality: str
    iop: list[float]
    ipp: list[float]
    rows: int
    cols: int
    spacing: list[float] | None
    invert: bool
    label_keys: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-able form."""
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# reading and checks


def read_dataset(src: Source) -> Dataset:
    """Parse ``src`` as DICOM (``force=True``).

    Raises:
        Unreadable: Not DICOM, or a header that does not parse.
    """
    data = src.data
    has_prefix = len(data) >= 132 and data[128:132] == b"DICM"
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # noqa: BLE001 - any parser failure is a property of the file
        if has_prefix:
            raise Unreadable(
                f"corrupt or truncated DICOM header ({type(exc).__name__} while parsing)"
            ) from None
        raise Unreadable(NOT_RECOGNISED) from None
    if not has_prefix and not any(tag in ds for tag in _MARKER_TAGS):
        raise Unreadable(NOT_RECOGNISED)
    return ds


def _get(ds: Dataset, keyword: str, default=None):
    """Attribute value, or ``default`` when absent or unparseable (never raises)."""
    try:
        value = ds.get(keyword, default)
    except Exception:  # noqa: BLE001
        return default
    return default if value is None else value


def _text(ds: Dataset, keyword: str) -> str:
    value = _get(ds, keyword, "")
    try:
        return str(value).strip().strip("\x00").strip()
    except Exception:  # noqa: BLE001
        return ""


def _int(ds: Dataset, keyword: str) -> int:
    """Integer attribute; raises ValueError/TypeError when invalid."""
    value = ds[keyword].value
    if isinstance(value, bytes):
        raise ValueError(keyword)
    return int(value)


def modality_code(ds: Dataset) -> str:
    """Modality for the manifest: the DICOM code (CR/DX → XR), ``OT`` when absent or malformed."""
    code = _text(ds, "Modality").upper()
    if not _CODE.match(code):
        return "OT"
    return _XR.get(code, code)


def sop_class_name(ds: Dataset) -> str:
    """Dictionary name of the SOP class (never a private UID)."""
    value = _text(ds, "SOPClassUID")
    if not value:
        meta = getattr(ds, "file_meta", None)
        value = _text(meta, "MediaStorageSOPClassUID") if meta is not None else ""
    if not value:
        return "object without SOP class"
    name = uid.UID(value).name
    return name if name != value else "object of an unknown or private SOP class"


def _has_pixels(ds: Dataset) -> bool:
    return any(k in ds for k in _PIXEL_KEYWORDS)


def no_pixels_reason(ds: Dataset) -> str:
    """Reason for a DICOM object without pixel data."""
    meta = getattr(ds, "file_meta", None)
    media = _text(meta, "MediaStorageSOPClassUID") if meta is not None else ""
    if media == uid.MediaStorageDirectoryStorage or "DirectoryRecordSequence" in ds:
        return "no pixel data: DICOMDIR (media directory index)"
    name = sop_class_name(ds)
    if "Image Storage" in name:
        return (
            f"no pixel data: {name} object whose PixelData element is missing (stripped or "
            "truncated file?)"
        )
    return f"no pixel data: {name} (not an image object)"


def transfer_syntax(ds: Dataset) -> str | None:
    """Transfer Syntax UID from the file meta, or None."""
    meta = getattr(ds, "file_meta", None)
    ts = _text(meta, "TransferSyntaxUID") if meta is not None else ""
    return ts or None


def check_decodable(ds: Dataset) -> None:
    """Everything that can be checked before decoding; raise a precise reason on failure.

    Raises:
        Unreadable: No pixel data, missing/invalid image attributes, no decoder, truncated data.
    """
    if not _has_pixels(ds):
        raise Unreadable(no_pixels_reason(ds))
    float_pixels = "PixelData" not in ds
    needed = _IMAGE_ATTRIBUTES + (() if float_pixels else _NATIVE_ATTRIBUTES)
    missing = [k for k in needed if k not in ds]
    if missing:
        raise Unreadable(f"image attribute(s) missing: {', '.join(missing)}")
    invalid = []
    for k in ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel") + (
        () if float_pixels else _NATIVE_ATTRIBUTES
    ):
        try:
            if _int(ds, k) < 0:
                invalid.append(k)
        except Exception:  # noqa: BLE001
            invalid.append(k)
    if "NumberOfFrames" in ds:
        try:
            _int(ds, "NumberOfFrames")
        except Exception:  # noqa: BLE001
            invalid.append("NumberOfFrames")
    if invalid:
        raise Unreadable(f"image attribute(s) with an invalid value: {', '.join(invalid)}")
    if _int(ds, "Rows") == 0 or _int(ds, "Columns") == 0:
        raise Unreadable("empty image (Rows or Columns is 0)")
    ts = transfer_syntax(ds)
    element = ds["PixelData"] if not float_pixels else None
    encapsulated = bool(element is not None and element.is_undefined_length)
    if ts is None:
        if encapsulated:
            raise Unreadable("compressed pixel data but no Transfer Syntax UID in the file meta")
        _assume_read_encoding(ds)
        ts = transfer_syntax(ds)
    if ts is None:
        raise Unreadable("no Transfer Syntax UID and the data set encoding is unknown")
    t = uid.UID(ts)
    if not t.is_transfer_syntax:
        raise Unreadable(f"{syntax_name(t)}: not a transfer syntax pydicom knows")
    if t.is_compressed:
        if not encapsulated:
            raise Unreadable(
                f"{syntax_name(t)}: compressed transfer syntax but the pixel data is "
                "not encapsulated"
            )
        reason = missing_decoder_reason(t)
        if reason:
            raise Unreadable(reason)
    elif not float_pixels:
        if encapsulated:
            raise Unreadable(
                f"{syntax_name(t)}: native transfer syntax but the pixel data is encapsulated"
            )
        try:
            expected = get_expected_length(ds, "bytes")
        except Exception:  # noqa: BLE001
            raise Unreadable(
                "image attributes are inconsistent (pixel data length cannot be computed)"
            ) from None
        have = len(element.value or b"")
        if have < expected:
            raise Unreadable(f"pixel data truncated: {have} of {expected} bytes")


def _assume_read_encoding(ds: Dataset) -> None:
    """Give a meta-less data set the transfer syntax it was actually read with."""
    implicit, little = getattr(ds, "original_encoding", (None, None))
    ts = {
        (True, True): uid.ImplicitVRLittleEndian,
        (False, True): uid.ExplicitVRLittleEndian,
        (False, False): uid.ExplicitVRBigEndian,
    }.get((implicit, little))
    if ts is None:
        return
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = FileMetaDataset()
        ds.file_meta = meta
    meta.TransferSyntaxUID = ts


# --------------------------------------------------------------------------------------------------
# identity

LABEL_KEYS = ("AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID", "PatientID")
"""Header attributes a labels CSV may be keyed by (every one sensitive: accession and patient ids
are PHI, the UIDs can be linked to it)."""


def label_key(pseudonymize: Pseudonymizer, keyword: str, value: str) -> str:
    """The keyed pseudonym of a header ``value`` of the attribute ``keyword`` (one of
    :data:`LABEL_KEYS`), in a namespace of its own: a labels CSV's key is pseudonymised with this
    function and compared, so the clear value never leaves the reader or the CSV reader."""
    return pseudonymize("label-key", f"{keyword}\x00{value.strip()}")


def label_keys(ds: Dataset, ctx: ReadContext) -> dict[str, str]:
    """:func:`label_key` of every :data:`LABEL_KEYS` attribute the header has (absent or empty
    ones left out)."""
    out = {}
    for keyword in LABEL_KEYS:
        value = _text(ds, keyword)
        if value:
            out[keyword] = label_key(ctx.pseudonymize, keyword, value)
    return out


def identity(ds: Dataset, src: Source, ctx: ReadContext) -> tuple[str, str]:
    """``(patient_key, study_key)`` pseudonyms; see the module docstring for the fall-backs."""
    pz = ctx.pseudonymize
    pid = _text(ds, "PatientID")
    name = _text(ds, "PatientName")
    if pid:
        patient = pz("patient", pid)
    elif name:
        patient = pz("patient", f"name+birthdate\x00{name}\x00{_text(ds, 'PatientBirthDate')}")
    else:
        patient = pz("patient", f"folder\x00{src.parent}")
    study_uid = _text(ds, "StudyInstanceUID")
    study = pz("study", study_uid) if study_uid else pz("study", f"patient\x00{patient}")
    return patient, study


def image_base(ds: Dataset, src: Source, ctx: ReadContext, frame: int | None = None) -> str:
    """Pseudonymous image id from SOPInstanceUID (+ frame); the file path when the UID is absent."""
    sop = _text(ds, "SOPInstanceUID") or f"path\x00{src.rel}"
    return ctx.pseudonymize("image", sop if frame is None else f"{sop}\x00frame{frame}")


def series_keys(ds: Dataset, src: Source, ctx: ReadContext, study: str) -> tuple[str, str]:
    """``(series_key, series_image_id)`` pseudonyms (folder + study without SeriesInstanceUID)."""
    series_uid = _text(ds, "SeriesInstanceUID") or f"study\x00{study}\x00folder\x00{src.parent}"
    return (
        ctx.pseudonymize("series", series_uid),
        ctx.pseudonymize("image", f"series\x00{series_uid}"),
    )


# --------------------------------------------------------------------------------------------------
# geometry


def _floats(value, n: int) -> list[float] | None:
    try:
        out = [float(v) for v in value]
    except Exception:  # noqa: BLE001
        return None
    if len(out) != n or not all(np.isfinite(out)):
        return None
    return out


def _seq_item(ds: Dataset, *path: str) -> Dataset | None:
    """First item down a chain of sequences, e.g. ``("SharedFunctionalGroupsSequence", …)``."""
    node: Dataset | None = ds
    for keyword in path:
        seq = _get(node, keyword) if node is not None else None
        try:
            node = seq[0] if seq else None
        except Exception:  # noqa: BLE001
            return None
    return node


def _frame_group(ds: Dataset, frame: int, macro: str) -> Dataset | None:
    """A functional-group macro for ``frame``: per-frame first, then shared."""
    per_frame = _get(ds, "PerFrameFunctionalGroupsSequence")
    try:
        item = per_frame[frame] if per_frame and frame < len(per_frame) else None
    except Exception:  # noqa: BLE001
        item = None
    found = _seq_item(item, macro) if item is not None else None
    return found if found is not None else _seq_item(ds, "SharedFunctionalGroupsSequence", macro)


def pixel_spacing(ds: Dataset) -> tuple[float | None, float | None]:
    """``(x, y)`` = (column, row) spacing in mm from PixelSpacing, ImagerPixelSpacing or groups."""
    sources = [ds, _frame_group(ds, 0, "PixelMeasuresSequence")]
    for node in sources:
        if node is None:
            continue
        for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
            value = _floats(_get(node, keyword, []), 2)
            if value and value[0] > 0 and value[1] > 0:
                return value[1], value[0]
    return None, None


def _orientation(ds: Dataset, frame: int | None = None) -> list[float] | None:
    value = _floats(_get(ds, "ImageOrientationPatient", []), 6)
    if value is None and frame is not None:
        group = _frame_group(ds, frame, "PlaneOrientationSequence")
        value = _floats(_get(group, "ImageOrientationPatient", []), 6) if group else None
    return value


def _position(ds: Dataset, frame: int | None = None) -> list[float] | None:
    if frame is None:
        return _floats(_get(ds, "ImagePositionPatient", []), 3)
    group = _frame_group(ds, frame, "PlanePositionSequence")
    return _floats(_get(group, "ImagePositionPatient", []), 3) if group else None


# --------------------------------------------------------------------------------------------------
# pixels


def _rescale(ds: Dataset, frame: int) -> tuple[float, float]:
    """``(slope, intercept)`` for ``frame``: top level, else enhanced Pixel Value Transformation."""
    for node in (ds, _frame_group(ds, frame, "PixelValueTransformationSequence")):
        if node is None or "RescaleSlope" not in node or "RescaleIntercept" not in node:
            continue
        try:
            slope, intercept = float(node.RescaleSlope), float(node.RescaleIntercept)
        except Exception:  # noqa: BLE001
            raise Unreadable(
                "image attribute(s) with an invalid value: RescaleSlope/RescaleIntercept"
            ) from None
        if not (np.isfinite(slope) and np.isfinite(intercept)) or slope == 0:
            raise Unreadable(
                "image attribute(s) with an invalid value: RescaleSlope/RescaleIntercept"
            )
        return slope, intercept
    return 1.0, 0.0


def photometric(ds: Dataset) -> str:
    """Photometric interpretation, upper-case; a defined term or ``"UNKNOWN"`` (safe to quote)."""
    pi = _text(ds, "PhotometricInterpretation").upper()
    return pi if pi in _PHOTOMETRIC else "UNKNOWN"


def decode_frames(ds: Dataset) -> tuple[np.ndarray, bool]:
    """Pixel values of all frames in physical units, one channel.

    Returns:
        ``(frames, invert)``: float64 ``(F, H, W)`` after the modality LUT (monochrome) or BT.601
        luma (colour); ``invert`` is True for MONOCHROME1.

    Raises:
        Unreadable: When the pixel data does not decode.
    """
    check_decodable(ds)
    pi = photometric(ds)
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - codec and consistency failures
        ts = transfer_syntax(ds)
        if ts and uid.UID(ts).is_compressed:
            raise Unreadable(failed_decode_reason(ts, _get(ds, "BitsStored"))) from None
        raise Unreadable(
            f"{syntax_name(ts)}: pixel data is inconsistent with the image "
            f"attributes ({type(exc).__name__} while decoding)"
        ) from None
    samples = int(_get(ds, "SamplesPerPixel", 1) or 1)
    colour = samples > 1 or pi == "PALETTE COLOR"
    if pi == "PALETTE COLOR":
        try:
            arr = apply_color_lut(arr, ds)
        except Exception:  # noqa: BLE001
            raise Unreadable(
                "PALETTE COLOR image whose colour lookup table is missing or invalid"
            ) from None
    if colour:
        if arr.ndim == 3 and arr.shape[-1] in (3, 4):
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] not in (3, 4):
            raise Unreadable(
                f"colour image with an unexpected pixel array layout ({pi} photometric "
                "interpretation)"
            )
        return _luma(arr[..., :3]), False
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise Unreadable(f"monochrome image with {arr.ndim} array dimensions (expected 2 or 3)")
    frames = np.empty(arr.shape, dtype=np.float64)
    if "ModalityLUTSequence" in ds:
        try:
            frames[:] = apply_modality_lut(arr, ds)
        except Exception:  # noqa: BLE001
            raise Unreadable("Modality LUT Sequence is invalid") from None
    else:
        for i in range(arr.shape[0]):
            slope, intercept = _rescale(ds, i)
            frames[i] = arr[i].astype(np.float64) * slope + intercept
    return frames, pi == "MONOCHROME1"


def _intensity(modality: str, pi: str) -> str:
    return HU if modality == "CT" and pi.startswith("MONOCHROME") else UNIT


@dataclass(frozen=True)
class FileKeys:
    """What every row of one DICOM file (or a series slice) carries from its header: modality,
    photometric interpretation, the patient and study pseudonyms, the in-plane spacing and the
    pseudonyms of the keys a labels CSV may name."""

    modality: str
    photometric: str
    patient_key: str
    study_key: str
    spacing: tuple[float | None, float | None]
    label_keys: dict[str, str]

    @classmethod
    def of(cls, ds: Dataset, src: Source, ctx: ReadContext) -> FileKeys:
        """The keys of a parsed data set (:func:`identity` and :func:`label_keys` pseudonymise)."""
        patient, study = identity(ds, src, ctx)
        return cls(
            modality_code(ds),
            photometric(ds),
            patient,
            study,
            pixel_spacing(ds),
            label_keys(ds, ctx),
        )

    def row(
        self, array: np.ndarray, order: int, suffix: str, key: str, dz: float | None, src: Source
    ) -> Decoded:
        """Row ``order`` of the file ``src``: image ``array`` with cache suffix ``suffix``,
        image pseudonym ``key`` and slice spacing ``dz``."""
        return Decoded(
            array=array,
            suffix=suffix,
            order=order,
            modality=self.modality,
            intensity=_intensity(self.modality, self.photometric),
            invert=self.photometric == "MONOCHROME1",
            patient_key=self.patient_key,
            study_key=self.study_key,
            image_base=key,
            spacing=(*self.spacing, dz),
            family="dicom",
            sha256=src.sha256,
            path=src.rel,
            label_keys=dict(self.label_keys),
        )


# --------------------------------------------------------------------------------------------------
# the reader


def read(src: Source, ctx: ReadContext) -> list[Decoded]:
    """Rows of one DICOM file: one per frame (2-D) or one enhanced multi-frame volume (3-D).

    In 3-D mode single-frame slices are not read here: see :func:`scan` and
    :mod:`medcl.data.readers.series`.

    Raises:
        Unreadable: With a precise, PHI-free reason.
    """
    ds = read_dataset(src)
    return decode_dataset(ds, src, ctx)


def decode_dataset(ds: Dataset, src: Source, ctx: ReadContext) -> list[Decoded]:
    """:func:`read` for an already parsed data set."""
    frames, _ = decode_frames(ds)
    keys = FileKeys.of(ds, src, ctx)
    n = frames.shape[0]
    if ctx.dims == 3:
        volume, dz = _enhanced_volume(ds, frames, keys.modality)
        images = [(volume, "", image_base(ds, src, ctx), dz)]
    else:
        several = n > 1  # frames of a multi-frame file are told apart by suffix and key
        images = [
            (
                frames[i],
                frame_suffix("f", i) if several else "",
                image_base(ds, src, ctx, i if several else None),
                None,
            )
            for i in range(n)
        ]
    return [keys.row(array, order, *rest, src) for order, (array, *rest) in enumerate(images)]


def _enhanced_volume(ds: Dataset, frames: np.ndarray, modality: str) -> tuple[np.ndarray, float]:
    """One multi-frame CT/MR file as a volume, frames sorted along the slice normal, and the
    slice spacing."""
    n = frames.shape[0]
    if modality not in VOLUME_MODALITIES:
        raise Unreadable(volume_refusal(modality))
    if n < 2:
        raise Unreadable(
            "single-frame CT/MR slice: 3-D volumes are stacked from whole series "
            "(medcl.data.readers.series), not from one file"
        )
    iops = [_orientation(ds, i) for i in range(n)]
    ipps = [_position(ds, i) for i in range(n)]
    if any(v is None for v in iops) or any(v is None for v in ipps):
        raise Unreadable(
            "multi-frame CT/MR file without per-frame positions and orientation: "
            "cannot be stacked into a volume (ingest it with --dims 2)"
        )
    order, dz = order_slices(iops, ipps)
    return frames[order], dz


def volume_refusal(modality: str) -> str:
    """Reason for a DICOM image that 3-D mode cannot place in a volume."""
    return (
        f"--dims 3 builds CT and MR volumes; a single {modality} image has no volume "
        "(ingest it with --dims 2)"
    )


def scan(src: Source, ctx: ReadContext) -> tuple[SliceInfo | None, list[Decoded]]:
    """3-D mode: a series slice to group later, or the rows of a file that is a volume by itself.

    Returns:
        ``(slice, [])`` for a single-frame CT/MR slice (pixel data checked but not decoded), or
        ``(None, rows)`` for an enhanced multi-frame volume.

    Raises:
        Unreadable: Files that cannot be part of a volume, with the reason.
    """
    ds = read_dataset(src)
    check_decodable(ds)
    modality = modality_code(ds)
    if modality not in VOLUME_MODALITIES:
        raise Unreadable(volume_refusal(modality))
    pi = photometric(ds)
    if not pi.startswith("MONOCHROME"):
        raise Unreadable(
            f"--dims 3 needs monochrome CT/MR slices; this one is {pi} (colour or unknown)"
        )
    n_frames = int(_get(ds, "NumberOfFrames", 1) or 1)
    if n_frames > 1:
        return None, decode_dataset(ds, src, ctx)
    iop, ipp = _orientation(ds), _position(ds)
    if iop is None or ipp is None:
        raise Unreadable(
            "CT/MR slice without a valid ImagePositionPatient/ImageOrientationPatient:"
            " cannot be placed in a volume (ingest it with --dims 2)"
        )
    keys = FileKeys.of(ds, src, ctx)
    series, series_image = series_keys(ds, src, ctx, keys.study_key)
    sx, sy = keys.spacing
    info = SliceInfo(
        series=series,
        image_base=series_image,
        patient_key=keys.patient_key,
        study_key=keys.study_key,
        modality=keys.modality,
        iop=iop,
        ipp=ipp,
        rows=_int(ds, "Rows"),
        cols=_int(ds, "Columns"),
        spacing=[sx, sy] if sx is not None else None,
        invert=keys.photometric == "MONOCHROME1",
        label_keys=dict(keys.label_keys),
    )
    return info, []


def slice_pixels(src: Source) -> np.ndarray:
    """Physical values ``(H, W)`` of one single-frame slice (modality LUT applied).

    Raises:
        Unreadable: When it does not decode or is not single-frame.
    """
    ds = read_dataset(src)
    frames, _ = decode_frames(ds)
    if frames.shape[0] != 1:
        raise Unreadable("slice became multi-frame between scan and decode (file changed?)")
    return frames[0]
