"""Which decoder a DICOM transfer syntax needs, and a precise reason when it is not installed.

pydicom decodes uncompressed and RLE data itself and, through Pillow, JPEG baseline, 8-bit JPEG
extended and JPEG 2000. Everything else a PACS export holds needs a plug-in: medcl depends on
pylibjpeg with its libjpeg (JPEG lossless, 12-bit JPEG, JPEG-LS), OpenJPEG (JPEG 2000, HTJ2K) and
RLE back ends, so a default install decodes them all. The reasons produced here (for an install
that lacks a plug-in, or a stream every decoder failed on) name the transfer syntax (from the DICOM
dictionary, never a private UID), what would decode it, and the install command.
"""

from __future__ import annotations

from pydicom import uid
from pydicom.pixels import get_decoder

INSTALL_HINT = "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg, installed with medcl"

_LIBJPEG = "pylibjpeg-libjpeg or gdcm"
_OPENJPEG = "pylibjpeg-openjpeg or gdcm"

#: Decoders that would read each compressed transfer syntax pydicom cannot read out of the box.
NEEDS: dict[str, str] = {
    uid.JPEGBaseline8Bit: "Pillow, pylibjpeg-libjpeg or gdcm",
    uid.JPEGExtended12Bit: _LIBJPEG + " (Pillow reads 8-bit samples only)",
    uid.JPEGLossless: _LIBJPEG,
    uid.JPEGLosslessSV1: _LIBJPEG,
    uid.JPEGLSLossless: "pylibjpeg-libjpeg, pyjpegls or gdcm",
    uid.JPEGLSNearLossless: "pylibjpeg-libjpeg, pyjpegls or gdcm",
    uid.JPEG2000Lossless: "Pillow with OpenJPEG, " + _OPENJPEG,
    uid.JPEG2000: "Pillow with OpenJPEG, " + _OPENJPEG,
    uid.HTJ2KLossless: "pylibjpeg-openjpeg",
    uid.HTJ2KLosslessRPCL: "pylibjpeg-openjpeg",
    uid.HTJ2K: "pylibjpeg-openjpeg",
    uid.RLELossless: "pydicom's own RLE decoder",
}

#: Plug-ins to try when the installed decoder (Pillow, for JPEG and JPEG 2000) failed.
ALTERNATIVES: dict[str, str] = {
    uid.JPEGBaseline8Bit: _LIBJPEG,
    uid.JPEGExtended12Bit: _LIBJPEG,
    uid.JPEG2000Lossless: _OPENJPEG,
    uid.JPEG2000: _OPENJPEG,
}

_VIDEO_PREFIXES = ("1.2.840.10008.1.2.4.10",)  # MPEG-2, MPEG-4 AVC/H.264, HEVC/H.265
# JPIP Referenced (Deflate) and their HTJ2K variants: pixel data lives on a server.
_REFERENCED = (
    "1.2.840.10008.1.2.4.94",
    "1.2.840.10008.1.2.4.95",
    "1.2.840.10008.1.2.4.204",
    "1.2.840.10008.1.2.4.205",
)


def syntax_name(ts: str | None) -> str:
    """Dictionary name of a transfer syntax; private or unknown ones are not quoted."""
    if not ts:
        return "no transfer syntax"
    name = uid.UID(str(ts)).name
    return name if name != str(ts) else "an unknown or private transfer syntax"


def missing_decoder_reason(ts: str) -> str | None:
    """Why pixel data in transfer syntax ``ts`` cannot be decoded here, or None if it can be tried.

    Args:
        ts: Transfer Syntax UID.

    Returns:
        A reason (names the syntax, the plug-ins that would decode it and how to install them), or
        ``None`` when pydicom has an installed decoder.
    """
    t = uid.UID(str(ts))
    name = syntax_name(t)
    if str(t) in _REFERENCED:
        return f"{name}: pixel data is referenced on a JPIP server, not stored in the file"
    if str(t).startswith(_VIDEO_PREFIXES):
        return f"{name}: video pixel data; medcl does not decode video (export frames first)"
    if str(t).startswith("1.2.840.10008.1.2.7."):
        return f"{name}: SMPTE ST 2110 video/audio stream, not an image"
    try:
        decoder = get_decoder(t)
    except NotImplementedError:
        return f"{name}: pydicom has no decoder for this transfer syntax"
    if decoder.is_available:
        return None
    needs = NEEDS.get(str(t), "a pydicom pixel-data plug-in")
    return f"{name}: needs {needs} ({INSTALL_HINT})"


def failed_decode_reason(ts: str | None, bits_stored: int | None) -> str:
    """Reason for pixel data that an installed decoder failed on.

    Args:
        ts: Transfer Syntax UID.
        bits_stored: (0028,0101) *Bits Stored*, when known.
    """
    t = uid.UID(str(ts)) if ts else None
    name = syntax_name(t)
    if t is None or not t.is_compressed:
        return f"{name}: pixel data is corrupt or inconsistent with the image attributes"
    try:
        available = tuple(get_decoder(t).available_plugins)
    except NotImplementedError:
        available = ()
    plugins = ", ".join(available) or "an installed plug-in"
    if str(t) == uid.JPEGExtended12Bit and (bits_stored or 0) > 8 and available == ("pillow",):
        return (
            f"{name}: {bits_stored}-bit samples; Pillow reads 8-bit JPEG only, needs "
            f"{_LIBJPEG} ({INSTALL_HINT})"
        )
    if "pylibjpeg" in available:  # pylibjpeg failed too: only gdcm is left to try
        alt = "; gdcm (pip install python-gdcm) may read it"
    else:
        other = ALTERNATIVES.get(str(t))
        alt = f"; another decoder ({other}, {INSTALL_HINT}) may read it" if other else ""
    return f"{name}: compressed pixel data failed to decode with {plugins} (corrupt stream?){alt}"
