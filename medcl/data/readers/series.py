"""3-D mode: single-frame CT/MR slices grouped into series volumes.

Slices are grouped by their series pseudonym (from SeriesInstanceUID). Within a series:

* every slice must share rows, columns, pixel spacing, orientation (ImageOrientationPatient within
  1e-3) and patient, else the series is rejected (a localizer inside the series, mixed sizes …);
* slices are ordered by ImagePositionPatient projected on the slice normal (row × column direction
  cosines), never by InstanceNumber;
* two slices at one position (several echoes/phases, duplicate files), slices that do not stack
  along the normal (gantry tilt, shifted slices) or uneven spacing (a missing slice: a gap deviating
  from the median by more than 2 % and 0.01 mm) reject the series;
* the slice spacing is the median gap between positions (not SliceThickness).

A rejected series puts every member file into the rejects file with the series' reason.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medcl.data.readers.base import HU, UNIT, Decoded, Source, Unreadable
from medcl.data.readers.dicom import SliceInfo, slice_pixels
from medcl.data.readers.geometry import SPACING_TOL, order_slices


@dataclass
class SeriesPlan:
    """A validated series, ready to decode.

    Attributes:
        key: Series pseudonym.
        members: Relative paths of the slices, in volume order (inferior → superior for axial).
        shas: Their digests, same order.
        info: Geometry/keys of the first slice.
        spacing_z: Median distance between slices in mm.
        path: Row path: the folder holding the slices (their common folder).
        sha256: Digest of the sorted slice digests.
        label_keys: The labels-CSV key pseudonyms every slice shares (a key whose value differs
            between slices is left out: such a series matches no CSV row by it).
    """

    key: str
    members: list[str]
    shas: list[str]
    info: SliceInfo
    spacing_z: float
    path: str
    sha256: str = ""
    reason: str | None = None
    rejected: list[str] = field(default_factory=list)
    label_keys: dict[str, str] = field(default_factory=dict)


def series_digest(shas: Sequence[str]) -> str:
    """sha256 over the sorted slice digests (the manifest ``sha256`` of a 3-D series)."""
    return hashlib.sha256("\n".join(sorted(shas)).encode()).hexdigest()


def plan_series(key: str, members: Sequence[tuple[str, str, SliceInfo]]) -> SeriesPlan:
    """Validate one series' slices (``(rel, sha256, info)`` each) and order them.

    Returns:
        A plan; ``plan.reason`` is set (and the plan must not be decoded) when the series is
        rejected.
    """
    rels = [m[0] for m in members]
    shas = [m[1] for m in members]
    infos = [m[2] for m in members]
    first = infos[0]
    path = _common_folder(rels)
    plan = SeriesPlan(
        key=key,
        members=list(rels),
        shas=list(shas),
        info=first,
        spacing_z=0.0,
        path=path,
        sha256=series_digest(shas),
        label_keys={
            k: v
            for k, v in first.label_keys.items()
            if all(i.label_keys.get(k) == v for i in infos)
        },
    )
    try:
        if len({(i.rows, i.cols) for i in infos}) > 1:
            raise Unreadable("series rejected: slices have different sizes (rows × columns)")
        if len({i.patient_key for i in infos}) > 1 or len({i.modality for i in infos}) > 1:
            raise Unreadable(
                "series rejected: slices from different patients or modalities "
                "share one SeriesInstanceUID"
            )
        spacings = [i.spacing for i in infos]
        if any(s is None for s in spacings) != all(s is None for s in spacings) or (
            spacings[0] is not None
            and np.abs(np.asarray(spacings) - spacings[0]).max() > SPACING_TOL
        ):
            raise Unreadable("series rejected: slices have different pixel spacings")
        if len({i.invert for i in infos}) > 1:
            raise Unreadable("series rejected: slices mix MONOCHROME1 and MONOCHROME2")
        order, dz = order_slices([i.iop for i in infos], [i.ipp for i in infos])
    except Unreadable as exc:
        plan.reason = exc.reason
        return plan
    plan.members = [rels[i] for i in order]
    plan.shas = [shas[i] for i in order]
    plan.spacing_z = dz
    return plan


def decode_series(plan: SeriesPlan, root: str) -> Decoded:
    """Decode and stack a planned series.

    Args:
        plan: A plan without ``reason``.
        root: The ingest root folder (members are relative to it).

    Raises:
        Unreadable: When a slice fails to decode (the reason names it by position, not value).
    """
    slices = []
    for index, (rel, sha) in enumerate(zip(plan.members, plan.shas, strict=True)):
        src = Source.load(Path(root) / rel, rel)
        if src.sha256 != sha:
            raise Unreadable("series rejected: a slice changed while ingesting")
        try:
            slices.append(slice_pixels(src))
        except Unreadable as exc:
            raise Unreadable(
                f"series rejected: slice {index + 1} of {len(plan.members)} does not "
                f"decode ({exc.reason})"
            ) from None
    info = plan.info
    volume = np.stack(slices)
    sx, sy = (info.spacing[0], info.spacing[1]) if info.spacing else (None, None)
    return Decoded(
        array=volume,
        suffix="",
        order=0,
        modality=info.modality,
        intensity=HU if info.modality == "CT" else UNIT,
        invert=info.invert,
        patient_key=info.patient_key,
        study_key=info.study_key,
        image_base=info.image_base,
        spacing=(sx, sy, plan.spacing_z),
        family="dicom",
        sha256=plan.sha256,
        path=plan.path,
        members=list(plan.members),
        label_keys=plan.label_keys,
    )


def _common_folder(rels: Sequence[str]) -> str:
    folders = [posixpath.dirname(r) for r in rels]
    if len(set(folders)) == 1:
        return folders[0]
    try:
        return posixpath.commonpath(folders)
    except ValueError:
        return ""
