"""PNG, TIFF and JPEG reader (Pillow).

* Grey images keep their full bit depth: 16-bit PNG/TIFF (Pillow modes ``I;16*``, ``I``, ``F``) are
  read as numbers and later percentile-scaled to [0, 1] in float32 — never cast to 8 bit.
* Colour (RGB/RGBA, palette, CMYK, YCbCr …) becomes one channel by BT.601 luma; alpha is dropped.
* JPEG EXIF orientation is applied. A multi-page TIFF (or animated PNG) gives one row per page
  (``_f001`` …).
* Labels come from the labels CSV or, without one, from class folders (see
  :mod:`medcl.data.ingest`).
* No patient id exists: the patient key is the pseudonym of the path relative to the ingest root,
  unless the labels CSV has a ``patient`` column.
* Intensity rule: ``unit``. Modality ``OT``.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from medcl.data.readers.base import Decoded, ReadContext, Source, Unreadable, frame_suffix
from medcl.data.readers.base import luma as _luma

FORMATS = ("PNG", "TIFF", "JPEG", "MPO")
_GREY_MODES = ("1", "L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N", "I;16S")
_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "RGBa")


def magic_format(head: bytes) -> str | None:
    """``PNG``, ``TIFF`` or ``JPEG`` from the first bytes, else None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    return None


def to_grey(frame: Image.Image) -> np.ndarray:
    """One Pillow frame as a float64 ``(H, W)`` array: grey as is, colour by BT.601 luma."""
    mode = frame.mode
    if mode in _GREY_MODES:
        return np.asarray(frame, dtype=np.float64)
    if mode in ("LA", "La"):
        return np.asarray(frame.getchannel("L"), dtype=np.float64)
    if mode not in _COLOUR_MODES:
        frame = frame.convert("RGB")
    rgb = np.asarray(frame)
    return _luma(rgb[..., :3])


def read(src: Source, ctx: ReadContext) -> list[Decoded]:
    """Rows of one PNG/TIFF/JPEG file.

    Raises:
        Unreadable: Corrupt or truncated file, too large, an unsupported pixel layout, or 3-D mode.
    """
    if ctx.dims == 3:
        raise Unreadable("--dims 3: PNG/TIFF/JPEG images are 2-D (ingest them with --dims 2)")
    try:
        image = Image.open(io.BytesIO(src.data))
        fmt = image.format or "image"
        frames = []
        for i, frame in enumerate(ImageSequence.Iterator(image)):
            if i == 0 and getattr(image, "n_frames", 1) == 1:
                frame = ImageOps.exif_transpose(frame)
            frames.append(to_grey(frame))
    except Image.DecompressionBombError:
        raise Unreadable("image exceeds Pillow's decompression-bomb pixel limit") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, TypeError) as exc:
        raise Unreadable(
            f"PNG/TIFF/JPEG file is truncated, corrupt or uses an unsupported pixel "
            f"layout ({type(exc).__name__})"
        ) from None
    if fmt not in FORMATS:
        raise Unreadable(f"{fmt} images are not supported (use PNG, TIFF or JPEG)")
    item = f"path\x00{src.rel}"  # a picture names no patient: the file is one
    n = len(frames)
    return [
        ctx.picture_row(src, "raster", item, arr, frame_suffix("f", i) if n > 1 else "", i, image=i)
        for i, arr in enumerate(frames)
    ]
