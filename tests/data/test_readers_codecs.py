"""Compressed DICOM through medcl's reader: every compressed transfer syntax in pydicom's corpus
decodes to the pixels of its twin; the reasons for a missing or failing decoder.

Twins are files of pydicom's corpus holding the same picture, in a native (uncompressed) transfer
syntax; the corpus has its colour picture SC_rgb only compressed, so its native twin is written
here from pydicom's own decoding of the RLE file. Lossless syntaxes must give exactly
the twin's values (after the modality LUT, or BT.601 luma for colour). Lossy ones are compared with
a lossless copy of the picture: JPEG-LS near-lossless within the codestream's own bound ``NEAR``
(every sample within ``NEAR``, so every luma value too: the weights are positive and sum to 1);
JPEG baseline and lossy JPEG 2000 within 1 grey level of 255 on average and 10 anywhere. The
corpus has no twin of its 12-bit JPEG (JPGExtended.dcm): that one is checked to keep its 12-bit
values.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.encaps import generate_frames

from medcl.data.pseudonym import Pseudonymizer
from medcl.data.readers import ReadContext, Source, Unreadable, codecs, read

CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"
CTX = ReadContext(Pseudonymizer(b"c" * 32))

NATIVE_RGB = "SC_rgb_native.dcm"
"""The native twin of SC_rgb (written by the ``native_rgb`` fixture)."""

#: (compressed file, its native twin): identical values.
LOSSLESS = [
    ("SC_rgb_rle.dcm", NATIVE_RGB),  # RLE, RGB
    ("MR_small_RLE.dcm", "MR_small.dcm"),  # RLE, 16-bit signed
    ("rtdose_rle.dcm", "rtdose.dcm"),  # RLE, 32-bit, 15 frames
    ("rtdose_rle_1frame.dcm", "rtdose_1frame.dcm"),
    ("MR_small_jp2klossless.dcm", "MR_small.dcm"),  # JPEG 2000 lossless
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),  # JPEG-LS lossless
    ("SC_rgb_jpeg_gdcm.dcm", NATIVE_RGB),  # JPEG lossless, first-order prediction (SV1)
]
#: JPEG-LS near-lossless: within the codestream's NEAR.
NEAR_LOSSLESS = [
    ("SC_rgb_jls_lossy_line.dcm", NATIVE_RGB),
    ("SC_rgb_jls_lossy_sample.dcm", NATIVE_RGB),
]
#: Lossy JPEG baseline and JPEG 2000: within MEAN_TOL on average and MAX_TOL anywhere.
LOSSY = [
    ("SC_rgb_jpeg_dcmtk.dcm", NATIVE_RGB),  # JPEG baseline, YBR_FULL
    ("SC_rgb_dcmtk_+eb+cr.dcm", NATIVE_RGB),  # JPEG baseline, RGB
    ("SC_rgb_jpeg_lossy_gdcm.dcm", NATIVE_RGB),  # JPEG baseline (gdcm's encoder)
    ("SC_rgb_gdcm_KY.dcm", NATIVE_RGB),  # JPEG 2000 (the possibly-lossy syntax)
]
MEAN_TOL, MAX_TOL = 1.0, 10.0  # grey levels of 255
#: Compressed syntaxes of the corpus without a twin there, and how they are checked instead.
NO_TWIN = {uid.JPEGExtended12Bit: "test_12_bit_jpeg_keeps_its_12_bits"}


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> Callable[[str], Path]:
    """A file's path by name; :data:`NATIVE_RGB` is SC_rgb in Explicit VR Little Endian, written
    from pydicom's decoding of the corpus' RLE copy."""
    folder = tmp_path_factory.mktemp("native")
    ds = pydicom.dcmread(CORPUS / "SC_rgb_rle.dcm")
    ds.decompress()
    ds.save_as(folder / NATIVE_RGB, enforce_file_format=True)
    return lambda name: folder / name if name == NATIVE_RGB else CORPUS / name


def _pixels(path: Path) -> np.ndarray:
    """medcl's decoded values of every frame of a file, ``(F, H, W)`` float64."""
    return np.stack([d.array for d in read(Source.load(path, path.name), CTX)])


def _syntax(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def _near(name: str) -> int:
    """The NEAR parameter of a JPEG-LS codestream: the byte after the component list of its
    start-of-scan segment (FF DA, length, Ns, Ns × (Ci, Tmi), NEAR, ILV, point transform)."""
    ds = pydicom.dcmread(CORPUS / name)
    stream = next(generate_frames(ds.PixelData, number_of_frames=1))
    sos = stream.index(b"\xff\xda")
    ns = stream[sos + 4]
    return stream[sos + 5 + 2 * ns]


@pytest.mark.parametrize("name, twin", LOSSLESS, ids=[p[0] for p in LOSSLESS])
def test_lossless_syntax_decodes_to_its_twin_exactly(paths, name, twin):
    compressed, native = paths(name), paths(twin)
    assert uid.UID(_syntax(compressed)).is_compressed
    assert not uid.UID(_syntax(native)).is_compressed
    np.testing.assert_array_equal(_pixels(compressed), _pixels(native))


@pytest.mark.parametrize("name, twin", NEAR_LOSSLESS, ids=[p[0] for p in NEAR_LOSSLESS])
def test_near_lossless_jpeg_ls_stays_within_its_bound(paths, name, twin):
    near = _near(name)
    assert 0 < near < 10  # a near-lossless stream; its bound is small
    diff = np.abs(_pixels(paths(name)) - _pixels(paths(twin)))
    assert diff.max() <= near + 1e-9, (diff.max(), near)
    assert diff.max() > 0  # really lossy: the check compares two different decodes


@pytest.mark.parametrize("name, twin", LOSSY, ids=[p[0] for p in LOSSY])
def test_lossy_syntax_decodes_close_to_its_twin(paths, name, twin):
    a, b = _pixels(paths(name)), _pixels(paths(twin))
    assert a.shape == b.shape
    diff = np.abs(a - b)
    assert diff.mean() <= MEAN_TOL and diff.max() <= MAX_TOL, (diff.mean(), diff.max())


def test_12_bit_jpeg_keeps_its_12_bits():
    (frame,) = _pixels(CORPUS / "JPGExtended.dcm")
    ds = pydicom.dcmread(CORPUS / "JPGExtended.dcm")
    assert ds.BitsStored == 12 and frame.shape == (1024, 256)
    assert frame.max() > 255  # not cut to 8 bits (Pillow's limit)
    np.testing.assert_array_equal(frame, ds.pixel_array.astype(np.float64))  # no modality LUT


def test_every_compressed_syntax_of_the_corpus_is_checked():
    checked = {_syntax(CORPUS / n) for pairs in (LOSSLESS, NEAR_LOSSLESS, LOSSY) for n, _ in pairs}
    checked |= set(NO_TWIN)
    found = set()
    for path in CORPUS.glob("*.dcm"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # deliberately malformed corpus files
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            ts = uid.UID(str(ds.file_meta.TransferSyntaxUID))
        except Exception:  # noqa: BLE001 - malformed corpus files have no usable syntax
            continue
        if ts.is_compressed and ts.is_transfer_syntax and "PhotometricInterpretation" in ds:
            found.add(str(ts))
    assert found, "no compressed file found in pydicom's corpus"
    assert found <= checked, sorted(uid.UID(t).name for t in found - checked)


# reasons ------------------------------------------------------------------------------------------


class _Decoder:
    """A stand-in for pydicom's decoder of a syntax, with the plug-ins given."""

    def __init__(self, plugins: tuple[str, ...]) -> None:
        self.available_plugins = plugins
        self.is_available = bool(plugins)


def _reason(name: str) -> str:
    with pytest.raises(Unreadable) as info:
        _pixels(CORPUS / name)
    return info.value.reason


def test_missing_decoder_reason_names_the_plug_in(monkeypatch):
    monkeypatch.setattr(codecs, "get_decoder", lambda ts: _Decoder(()))
    assert _reason("MR_small_jpeg_ls_lossless.dcm") == (
        "JPEG-LS Lossless Image Compression: needs pylibjpeg-libjpeg, pyjpegls or gdcm "
        f"({codecs.INSTALL_HINT})"
    )
    assert "pylibjpeg" in codecs.INSTALL_HINT


def test_failed_decode_reasons(monkeypatch):
    monkeypatch.setattr(codecs, "get_decoder", lambda ts: _Decoder(("pillow",)))
    only_pillow = codecs.failed_decode_reason(uid.JPEGExtended12Bit, 12)
    assert "12-bit samples; Pillow reads 8-bit JPEG only" in only_pillow
    assert "pylibjpeg-libjpeg" in only_pillow
    monkeypatch.setattr(codecs, "get_decoder", lambda ts: _Decoder(("pillow", "pylibjpeg")))
    both = codecs.failed_decode_reason(uid.JPEGExtended12Bit, 12)
    assert both == (
        "JPEG Extended (Process 2 and 4): compressed pixel data failed to decode with "
        "pillow, pylibjpeg (corrupt stream?); gdcm (pip install python-gdcm) may read it"
    )
