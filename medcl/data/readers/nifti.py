"""NIfTI reader (``.nii``, ``.nii.gz``, NIfTI-1 and -2) via nibabel.

* The image is reoriented to the closest canonical orientation (RAS+, ``nib.as_closest_canonical``)
  and scaled with its ``scl_slope``/``scl_inter``.
* Array layout: volume ``(D, H, W)`` = (inferior → superior, anterior → posterior, patient right →
  left), i.e. the in-plane layout of a DICOM axial slice; spacing from the canonical zooms.
* 2-D mode: one row per axial slice (``_s001`` …); 3-D mode: one row per volume. A 4-D file (time
  series) gives one volume per time point (``_t001`` …, slices ``_t001_s001`` … in 2-D).
* NIfTI has no patient id: the patient key is the pseudonym of the path relative to the ingest root
  (or the labels CSV's ``patient`` column, applied by :mod:`medcl.data.ingest`).
* Intensity rule: ``unit`` (the file does not say whether it is CT).
"""

from __future__ import annotations

import gzip
import io

import nibabel as nib
import numpy as np

from medcl.data.readers.base import Decoded, ReadContext, Source, Unreadable, frame_suffix

_CIFTI_EXTENSION = 32  # NIfTI header extension code of CIFTI-2


def header_kind(head: bytes) -> str | None:
    """``"nifti"``, ``"nifti-pair"`` (header of a .hdr/.img pair), ``"analyze"`` or None."""
    version = _version(head)
    if version == 1:
        magic = head[344:348]
        return {b"n+1\x00": "nifti", b"ni1\x00": "nifti-pair"}.get(magic, "analyze")
    if version == 2:
        return {b"n+2\x00": "nifti", b"ni2\x00": "nifti-pair"}.get(head[4:8])
    return None


def _version(head: bytes) -> int | None:
    """1 or 2 from ``sizeof_hdr`` (348 / 540, either byte order), else None."""
    if len(head) < 348:
        return None
    for order in ("<", ">"):
        size = int(np.frombuffer(head[:4], dtype=f"{order}i4")[0])
        if size == 348:
            return 1
        if size == 540 and len(head) >= 540:
            return 2
    return None


def gunzip_head(data: bytes, n: int = 544) -> bytes:
    """The first ``n`` decompressed bytes of gzip ``data`` (``b""`` when it does not inflate)."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
            return fh.read(n)
    except (OSError, EOFError, ValueError):
        return b""


def _load(src: Source) -> nib.spatialimages.SpatialImage:
    """Load from the bytes already read (no second read of the file)."""
    raw = src.data
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, ValueError):
            raise Unreadable("gzip-compressed NIfTI is truncated or corrupt") from None
    kind = header_kind(raw[:544])
    if kind != "nifti":
        raise Unreadable("not a single-file NIfTI image")
    cls = nib.Nifti1Image if _version(raw[:544]) == 1 else nib.Nifti2Image
    try:
        fh = nib.FileHolder(fileobj=io.BytesIO(raw))
        return cls.from_file_map({"header": fh, "image": fh})
    except Exception:  # noqa: BLE001 - nibabel raises many types for broken headers
        raise Unreadable("NIfTI header is invalid") from None


def read(src: Source, ctx: ReadContext) -> list[Decoded]:
    """Rows of one NIfTI file.

    Raises:
        Unreadable: Broken file, truncated data, CIFTI/vector data, more than 4 dimensions.
    """
    img = _load(src)
    header = img.header
    codes = [ext.get_code() for ext in getattr(header, "extensions", [])]
    if _CIFTI_EXTENSION in codes or str(header.get_intent()[0]).startswith(("Conn", "Cifti")):
        raise Unreadable("CIFTI file (grayordinate data, not an image volume)")
    if img.ndim > 4 and any(s > 1 for s in img.shape[4:]):
        raise Unreadable(
            f"NIfTI with {img.ndim} dimensions (vector/tensor data); medcl reads 2-D, "
            "3-D and 4-D images"
        )
    if header.get_data_dtype().fields is not None:
        raise Unreadable("NIfTI with RGB/structured voxels is not supported (save as grey levels)")
    try:
        img = nib.as_closest_canonical(img)
        data = np.asanyarray(img.get_fdata(dtype=np.float64))
    except Exception:  # noqa: BLE001
        raise Unreadable("NIfTI voxel data is truncated or unreadable") from None
    while data.ndim > 4:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim == 3:
        data = data[..., None]
    zooms = [float(z) for z in img.header.get_zooms()[:3]] + [None, None, None]
    sx, sy, sz = (z if z and z > 0 else None for z in zooms[:3])
    # RAS array (x, y, z, t) -> (t, z, y reversed, x reversed): DICOM-like axial layout.
    vols = np.transpose(data, (3, 2, 1, 0))[:, :, ::-1, ::-1]
    n_t, n_z = vols.shape[0], vols.shape[1]
    out: list[Decoded] = []
    for t in range(n_t):
        tsuf = frame_suffix("t", t) if n_t > 1 else ""
        if ctx.dims == 3:
            if n_z < 2:
                raise Unreadable(
                    "--dims 3: this NIfTI image has a single slice (ingest it with --dims 2)"
                )
            out.append(_row(ctx, src, vols[t], tsuf, t, (sx, sy, sz)))
            continue
        for z in range(n_z):
            suffix = tsuf + (frame_suffix("s", z) if n_z > 1 else "")
            out.append(_row(ctx, src, vols[t, z], suffix, t * n_z + z, (sx, sy, None)))
    return out


def _row(ctx, src, array, suffix, order, spacing) -> Decoded:
    """One slice or volume of the file (a NIfTI file names no patient: the file is one)."""
    item = f"path\x00{src.rel}"
    return ctx.picture_row(
        src, "nifti", item, np.ascontiguousarray(array), suffix, order, spacing=spacing
    )
