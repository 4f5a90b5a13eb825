"""DICOM reader: modality LUT, photometric rules, frames, colour, series volumes, reasons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.pixels import apply_color_lut

from medcl.data.cache import load_cached, to_cache_intensity
from medcl.data.ingest import ingest
from medcl.data.manifest import read_manifest
from medcl.data.pseudonym import Pseudonymizer
from medcl.data.readers import ReadContext, Source, Unreadable, luma, read
from medcl.data.readers import dicom as dicom_reader

CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"
CTX = ReadContext(Pseudonymizer(b"k" * 32))


def _read(path: Path, dims: int = 2):
    return list(read(Source.load(path, path.name), ReadContext(CTX.pseudonymize, dims)))


def _reason(path: Path) -> str:
    with pytest.raises(Unreadable) as info:
        _read(path)
    return info.value.reason


def test_ct_rescale_gives_hounsfield_units(tmp_path, dicom_writer):
    stored = np.array([[0, 1000], [1024, 2000]], dtype=np.uint16)
    p = dicom_writer(tmp_path / "ct", stored, modality="CT", slope=1.0, intercept=-1024)
    (row,) = _read(p)
    assert row.intensity == "hu" and row.modality == "CT"
    np.testing.assert_array_equal(row.array, stored.astype(float) - 1024)
    assert to_cache_intensity(row.array, row.intensity).min() == -1024  # HU are not rescaled


def test_ct_signed_pixels_and_slope(tmp_path, dicom_writer):
    stored = np.array([[-1000, -1], [0, 3000]], dtype=np.int16)
    p = dicom_writer(tmp_path / "ct.dcm", stored, modality="CT", slope=0.5, intercept=10)
    (row,) = _read(p)
    np.testing.assert_allclose(row.array, stored * 0.5 + 10)


def test_12_bit_and_8_bit_monochrome(tmp_path, dicom_writer):
    twelve = np.arange(4096, dtype=np.uint16).reshape(64, 64)
    (row,) = _read(dicom_writer(tmp_path / "a.dcm", twelve, bits_stored=12))
    np.testing.assert_array_equal(row.array, twelve)
    assert row.intensity == "unit"
    eight = np.arange(256, dtype=np.uint8).reshape(16, 16)
    (row,) = _read(dicom_writer(tmp_path / "b.dcm", eight))
    np.testing.assert_array_equal(row.array, eight)


def test_monochrome1_is_inverted(tmp_path, dicom_writer):
    pixels = np.arange(400, dtype=np.uint16).reshape(20, 20)
    (m1,) = _read(dicom_writer(tmp_path / "m1", pixels, modality="CR", photometric="MONOCHROME1"))
    (m2,) = _read(dicom_writer(tmp_path / "m2", pixels, modality="CR"))
    assert m1.invert and not m2.invert and m1.modality == "XR"
    a = to_cache_intensity(m1.array, m1.intensity, m1.invert)
    b = to_cache_intensity(m2.array, m2.intensity, m2.invert)
    np.testing.assert_allclose(a, 1 - b, atol=1e-6)
    assert a[0, 0] == 1 and b[0, 0] == 0  # lowest stored value is brightest in MONOCHROME1


def test_multi_frame_gives_one_row_per_frame(tmp_path, dicom_writer):
    frames = np.stack([np.full((8, 8), i, dtype=np.uint16) for i in range(3)])
    rows = _read(dicom_writer(tmp_path / "mf.dcm", frames))
    assert [r.suffix for r in rows] == ["_f001", "_f002", "_f003"]
    assert len({r.image_base for r in rows}) == 3
    assert [float(r.array.mean()) for r in rows] == [0, 1, 2]


def test_rgb_becomes_bt601_luma(tmp_path, dicom_writer):
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[0, 2] = (0, 0, 255)
    rgb[1] = 200
    (row,) = _read(dicom_writer(tmp_path / "us.dcm", rgb, modality="US", photometric="RGB"))
    np.testing.assert_allclose(row.array[0, :3], [0.299 * 255, 0.587 * 255, 0.114 * 255])
    np.testing.assert_allclose(row.array[1], 200)
    assert row.intensity == "unit"


def test_palette_colour_uses_the_lut_then_luma():
    path = CORPUS / "examples_palette.dcm"
    (row,) = _read(path)
    ds = pydicom.dcmread(path)
    expected = luma(apply_color_lut(ds.pixel_array, ds)[..., :3])
    np.testing.assert_allclose(row.array, expected)


def test_ybr_jpeg_decodes_like_its_rgb_twin():
    (ybr,) = _read(CORPUS / "SC_rgb_dcmtk_+eb+cy+n1.dcm")  # YBR_FULL JPEG baseline
    (rgb,) = _read(CORPUS / "SC_rgb_dcmtk_+eb+cr.dcm")  # same picture, RGB JPEG
    assert np.abs(ybr.array - rgb.array).mean() < 3  # lossy codecs; grey levels match


def test_multi_frame_ultrasound_from_corpus():
    rows = _read(CORPUS / "examples_ybr_color.dcm")
    assert len(rows) == 30 and rows[0].array.shape == (240, 320)


def test_reasons_for_non_images_and_broken_files(tmp_path, dicom_writer):
    assert "no pixel data" in _reason(CORPUS / "reportsi.dcm")
    assert "SR" in _reason(CORPUS / "reportsi.dcm")
    assert (
        _reason(CORPUS / "dicomdirtests" / "DICOMDIR")
        == "no pixel data: DICOMDIR (media directory index)"
    )
    assert "pixel data truncated" in _reason(CORPUS / "MR_truncated.dcm")
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    assert _reason(empty) == "empty file (0 bytes)"
    text = tmp_path / "notes"
    text.write_text("hello, not an image\n" * 20)
    assert _reason(text).startswith("not a recognised image file")
    good = dicom_writer(tmp_path / "g.dcm", np.zeros((32, 32), np.uint16))
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(good.read_bytes()[:400])  # inside the header: the pixel data never comes
    assert _reason(cut).startswith("no pixel data: ")
    cut.write_bytes(good.read_bytes()[:-10])  # inside the 32 x 32 x 2 bytes of pixel data
    assert _reason(cut) == "pixel data truncated: 2038 of 2048 bytes"


def _series(folder: Path, writer, positions, orientation=(1, 0, 0, 0, 1, 0), shuffle=True):
    study, series = uid.generate_uid(), uid.generate_uid()
    order = list(range(len(positions)))
    if shuffle:
        order = order[::-1]
    for instance, k in enumerate(order, start=1):  # InstanceNumber deliberately misleading
        pixels = np.full((6, 6), 100 * k, dtype=np.int16)
        writer(
            folder / f"IM{instance:03d}",
            pixels,
            modality="CT",
            slope=1,
            intercept=-1024,
            study_uid=study,
            series_uid=series,
            position=positions[k],
            orientation=orientation,
            InstanceNumber=instance,
        )


def test_3d_series_sorted_by_position_not_instance_number(tmp_path, dicom_writer, ingest_secret):
    src = tmp_path / "src"
    positions = [(0.0, 0.0, -10.0 + 2.5 * k) for k in range(5)]
    _series(src / "A", dicom_writer, positions)
    report = ingest(
        src, tmp_path / "m.csv", dims=3, secret=ingest_secret, progress=False, paths="keep"
    )
    assert (report.rows, report.rejected) == (1, 0)
    m = read_manifest(tmp_path / "m.csv")
    row = m.df.iloc[0]
    assert (row["dims"], row["slices"], row["spacing_z"]) == (3, 5, 2.5)
    assert row["path"].endswith("/A") and row["intensity"] == "hu"
    volume = load_cached(row["cache_path"])
    assert volume.shape == (1, 5, 6, 6)
    np.testing.assert_allclose(volume[0, :, 0, 0], [100 * k - 1024 for k in range(5)])


def test_3d_oblique_series_uses_the_slice_normal(tmp_path, dicom_writer, ingest_secret):
    # sagittal slices: rows along y, columns along z; normal = x
    positions = [(3.0 * k, 5.0, 7.0) for k in range(4)]
    _series(tmp_path / "src" / "S", dicom_writer, positions, orientation=(0, 1, 0, 0, 0, -1))
    report = ingest(
        tmp_path / "src", tmp_path / "m.csv", dims=3, secret=ingest_secret, progress=False
    )
    assert report.rows == 1
    df = read_manifest(tmp_path / "m.csv").df
    assert df.loc[0, "spacing_z"] == 3.0


@pytest.mark.parametrize(
    "case, words",
    [
        ("gap", "uneven slice spacing"),
        ("duplicate", "share one position"),
        ("orientation", "different orientations"),
    ],
)
def test_3d_inconsistent_series_rejected_with_reason(
    tmp_path, dicom_writer, ingest_secret, case, words
):
    positions = [(0.0, 0.0, 2.0 * k) for k in range(5)]
    if case == "gap":
        positions[4] = (0.0, 0.0, 20.0)
    if case == "duplicate":
        positions[3] = positions[2]
    _series(tmp_path / "src" / "A", dicom_writer, positions)
    if case == "orientation":
        dicom_writer(
            tmp_path / "src" / "A" / "LOC",
            np.zeros((6, 6), np.int16),
            modality="CT",
            slope=1,
            intercept=-1024,
            series_uid=pydicom.dcmread(tmp_path / "src" / "A" / "IM001").SeriesInstanceUID,
            position=(0, 0, 0),
            orientation=(1, 0, 0, 0, 0, -1),
        )
    report = ingest(
        tmp_path / "src", tmp_path / "m.csv", dims=3, secret=ingest_secret, progress=False
    )
    assert report.rows == 0
    (reason,) = report.reasons
    assert reason.startswith("series rejected") and words in reason
    assert report.rejected == report.files_seen


def test_3d_mode_refuses_single_xray_with_reason(tmp_path, dicom_writer, ingest_secret):
    dicom_writer(tmp_path / "src" / "x.dcm", np.zeros((8, 8), np.uint16), modality="DX")
    report = ingest(
        tmp_path / "src", tmp_path / "m.csv", dims=3, secret=ingest_secret, progress=False
    )
    assert report.rows == 0 and "--dims 2" in next(iter(report.reasons))


def test_meta_less_raw_dataset_is_read(tmp_path, dicom_writer):
    good = dicom_writer(tmp_path / "g.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8))
    ds = pydicom.dcmread(good)
    del ds.file_meta
    ds.preamble = None
    raw = tmp_path / "raw"
    ds.save_as(raw, implicit_vr=True, little_endian=True, enforce_file_format=False)
    data = raw.read_bytes()
    assert data[128:132] != b"DICM"
    (row,) = _read(raw)
    np.testing.assert_array_equal(row.array, np.arange(64).reshape(8, 8))


def test_identity_is_pseudonymous_and_falls_back(tmp_path, dicom_writer):
    p = dicom_writer(tmp_path / "a" / "x.dcm", np.zeros((4, 4), np.uint16), patient_id="")
    ds = pydicom.dcmread(p)
    src = Source.load(p, "a/x.dcm")
    patient, _ = dicom_reader.identity(ds, src, CTX)
    assert patient == CTX.pseudonymize("patient", "name+birthdate\x00TEST^PATIENT\x00")
    del ds.PatientName
    patient, _ = dicom_reader.identity(ds, src, CTX)
    assert patient == CTX.pseudonymize("patient", "folder\x00a")


def test_enhanced_multi_frame_ct_is_one_volume_in_3d(tmp_path, dicom_writer):
    frames = np.stack([np.full((4, 4), 10 * k, dtype=np.int16) for k in range(3)])
    p = dicom_writer(tmp_path / "enh.dcm", frames, modality="CT", spacing=None)
    ds = pydicom.dcmread(p)
    shared = pydicom.Dataset()
    orient = pydicom.Dataset()
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PlaneOrientationSequence = [orient]
    measures = pydicom.Dataset()
    measures.PixelSpacing = [0.7, 0.8]
    shared.PixelMeasuresSequence = [measures]
    transform = pydicom.Dataset()
    transform.RescaleSlope, transform.RescaleIntercept = 1, -1000
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for z in (4.0, 0.0, 2.0):  # stored out of order
        item, pos = pydicom.Dataset(), pydicom.Dataset()
        pos.ImagePositionPatient = [0, 0, z]
        item.PlanePositionSequence = [pos]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.save_as(p)
    rows_2d = _read(p)
    assert [r.array[0, 0] for r in rows_2d] == [-1000, -990, -980]
    assert rows_2d[0].spacing[:2] == (0.8, 0.7)
    (volume,) = _read(p, dims=3)
    assert volume.spacing == (0.8, 0.7, 2.0)
    np.testing.assert_array_equal(volume.array[:, 0, 0], [-990, -980, -1000])
