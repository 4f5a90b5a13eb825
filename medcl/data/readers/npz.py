"""MedMNIST ``.npz`` reader.

Layout: ``train_images``, ``train_labels``, ``val_images``, ``val_labels``, ``test_images``,
``test_labels`` (any subset of the splits), optionally ``<split>_patient_ids`` (or
``<split>_groups``, the name grouped cross-validation tools use). Images are ``(N, H, W)`` grey,
``(N, H, W, 3)`` colour (BT.601 luma) or ``(N, D, H, W)`` volumes (the 3-D MedMNIST sets); labels
``(N,)`` or ``(N, 1)`` integer class indices, or ``(N, K)`` findings (K > 1: multi-label, e.g.
ChestMNIST's 14); patient ids ``(N,)`` integers or text; optionally ``findings`` (or
``label_names``), the K finding names.

* The file's own splits are kept (manifest ``split`` = ``train``/``val``/``test``).
* Labels are class indices, written as ``"0"``, ``"1"`` …; :mod:`medcl.data.ingest` maps them to
  the ``classes`` names when given.
* Patients: with ``<split>_patient_ids`` the patient key is the pseudonym of the id (the keyed
  hash a DICOM PatientID gets, so the split and the patient-aware losses group by it); an id found
  in two of the file's splits is refused (the message names the file and the positions, never the
  id). Without them (MedMNIST as published) **each image is its own patient** (the pseudonym of
  file + split + index); this is recorded in the manifest sidecar.
* Multi-label label arrays (more than one column, e.g. ChestMNIST) hold 1 (present), 0
  (absent) or -1 (unknown) per finding; their rows are labelled with the finding text of
  :mod:`medcl.data.findings` and carry the file's ``findings`` (from its ``findings`` or
  ``label_names`` array, else ``finding_0`` … ``finding_K-1``). Every split has the same K.
* 2-D mode over volumes gives one row per slice; 3-D mode over 2-D images is refused.
* Intensity rule: ``unit``. Modality ``OT``.

:func:`plan` validates a file and describes its rows split by split; :func:`pixels` turns a block
of one split's images into the arrays of its rows (vectorised), so ingest can convert a large
file in chunks, in parallel (:mod:`medcl.data.ingest.arrays`). :func:`read` yields the rows one by
one as :class:`~medcl.data.readers.base.Decoded` for the generic reader interface.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from medcl.data import findings as fnd
from medcl.data.readers.base import Decoded, ReadContext, Source, Unreadable, frame_suffix
from medcl.data.readers.base import luma as _luma
from medcl.errors import MedclError

SPLITS = ("train", "val", "test")
ID_ARRAYS = ("patient_ids", "groups")
NAME_ARRAYS = ("findings", "label_names")
"""Arrays that may name a multi-label file's findings (the first found is used)."""
NOTE = (
    "MedMNIST files carry no patient identifiers: each image is its own patient, so patient-level "
    "splitting cannot prevent leakage between images of one person; the file's own "
    "train/val/test splits are kept."
)
NOTE_IDS = (
    "MedMNIST-layout files with <split>_patient_ids (or <split>_groups): patients keyed by the "
    "keyed hash of that id (like a DICOM PatientID); no id is in two of a file's splits; the "
    "file's own train/val/test splits are kept."
)


@dataclass
class SplitPlan:
    """One split of a MedMNIST file.

    Attributes:
        split: ``train``, ``val`` or ``test``.
        images: The raw image array ``(N, …)``.
        labels: Class indices ``(N,)`` or None.
        patient_ids: Patient id text per image, or None (each image its own patient).
        kind: ``2d``, ``rgb``, ``3d`` or ``3d1`` (see :func:`pixels`).
        first_order: ``order`` of the split's first row within the file.
        per_image: Rows per image (the depth in 2-D mode over volumes, else 1).
        id_array: Name of the patient id array (``""`` without one).
        findings: The finding names of multi-label labels (``labels`` is then ``(N, K)`` states
            in {1, 0, −1}), else None.
        images_at: Where ``images`` lie in the file when stored uncompressed (``images`` is then
            a view of the file's bytes, not a copy), or None.
    """

    split: str
    images: np.ndarray
    labels: np.ndarray | None
    patient_ids: np.ndarray | None
    kind: str
    first_order: int
    per_image: int
    id_array: str = ""
    images_at: StoredArray | None = None
    findings: tuple[str, ...] | None = None


@dataclass(frozen=True)
class StoredArray:
    """An array stored uncompressed in a file: what :func:`numpy.memmap` needs to map it.

    Attributes:
        offset: Byte offset of the first element in the file.
        dtype: The dtype (``numpy.dtype.str``).
        shape: The shape.
        fortran: Fortran (column-major) order.
    """

    offset: int
    dtype: str
    shape: tuple[int, ...]
    fortran: bool

    def map(self, path: str) -> np.ndarray:
        """The array mapped read-only from ``path``."""
        return np.memmap(
            path, self.dtype, "r", self.offset, self.shape, "F" if self.fortran else "C"
        )


def stored_arrays(data: bytes) -> dict[str, tuple[np.ndarray, StoredArray]]:
    """The ``.npy`` members of zip ``data`` stored uncompressed (``np.savez``, not
    ``savez_compressed``), as views of ``data`` (no copy) and where they lie.

    A member that is compressed, of an object dtype, of a format version this does not parse, or
    not wholly inside ``data`` is left out (read the ordinary way).
    """
    out: dict[str, tuple[np.ndarray, StoredArray]] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
    view = memoryview(data)
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or not info.filename.endswith(".npy"):
            continue
        h = info.header_offset
        if bytes(view[h : h + 4]) != b"PK\x03\x04":
            continue
        start = h + 30 + int.from_bytes(view[h + 26 : h + 28], "little")
        start += int.from_bytes(view[h + 28 : h + 30], "little")
        head = io.BytesIO(bytes(view[start : start + min(info.file_size, 1 << 16)]))
        try:
            version = np.lib.format.read_magic(head)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(head)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(head)
            else:
                continue
        except ValueError:
            continue
        offset = start + head.tell()
        count = int(np.prod(shape, dtype=np.int64))
        if dtype.hasobject or offset + count * dtype.itemsize > start + info.file_size:
            continue
        flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        arr = flat.reshape(shape, order="F" if fortran else "C")
        out[info.filename[: -len(".npy")]] = (arr, StoredArray(offset, dtype.str, shape, fortran))
    return out


def is_medmnist(data: bytes) -> bool:
    """Whether zip ``data`` is an ``.npz`` with at least one ``<split>_images`` array."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return any(f"{s}_images.npy" in names for s in SPLITS)


def plan(src: Source, dims: int) -> list[SplitPlan]:
    """Validate a MedMNIST file and describe its splits (arrays loaded, not converted).

    Raises:
        Unreadable: Not MedMNIST, inconsistent arrays, or 2-D images in 3-D mode.
        MedclError: Finding names that cannot be written in a label, or a patient id in two
            splits.
    """
    try:
        archive = np.load(io.BytesIO(src.data), allow_pickle=False)
        keep = ("_images", "_labels") + tuple(f"_{a}" for a in ID_ARRAYS)
        stored = stored_arrays(src.data)
        arrays = {
            k: stored[k][0] if k.endswith("_images") and k in stored else archive[k]
            for k in archive.files
            if k.endswith(keep) or k in NAME_ARRAYS
        }
    except Exception:  # noqa: BLE001 - zip/npy parsing errors of every kind
        raise Unreadable("NPZ archive is truncated or corrupt (or holds pickled objects)") from None
    splits = [s for s in SPLITS if f"{s}_images" in arrays]
    if not splits:
        raise Unreadable(
            "NPZ archive without MedMNIST arrays (train_images, val_images, test_images)"
        )
    out = []
    order = 0
    names = _finding_names(arrays, splits, src.rel)
    for split in splits:
        images = arrays[f"{split}_images"]
        labels = arrays.get(f"{split}_labels")
        kind = _layout(images, split)
        if kind == "2d" and dims == 3:
            raise Unreadable(
                "--dims 3: this MedMNIST file holds 2-D images (ingest it with --dims 2)"
            )
        if labels is not None:
            labels = _labels(labels, len(images), split, src.rel, names)
        ids, id_array = _patient_ids(arrays, split, len(images))
        per_image = images.shape[1] if kind in ("3d", "3d1") and dims == 2 else 1
        at = stored[f"{split}_images"][1] if f"{split}_images" in stored else None
        plan_ = SplitPlan(split, images, labels, ids, kind, order, per_image, id_array, at, names)
        out.append(plan_)
        order += len(images) * per_image
    _check_ids_stay_in_one_split(out, src.rel)
    return out


def pixels(images: np.ndarray, kind: str, dims: int) -> np.ndarray:
    """The rows' arrays of a block of one split's images, physical values (float64 for colour,
    else the stored numbers in their own dtype).

    Returns:
        ``(n, H, W)`` (one row per image, or per slice in 2-D mode over volumes: image-major) or
        ``(n, D, H, W)`` (3-D mode).
    """
    if kind == "rgb":
        block = _luma(images[..., :3])
    elif kind == "3d1":
        block = np.asarray(images[..., 0])
    else:
        block = np.asarray(images)
    if block.ndim == 4 and dims == 2:
        block = block.reshape(-1, *block.shape[2:])
    return block


def item_of(rel: str, split: str, i: int) -> str:
    """The item text of image ``i`` of ``split`` (its own patient and study without ids)."""
    return f"path\x00{rel}\x00{split}\x00{i}"


def row_suffix(split: str, i: int, z: int | None) -> str:
    """Cache-key suffix of image ``i`` (slice ``z`` in 2-D mode over volumes)."""
    base = f"_{split}{i:06d}"
    return base if z is None else base + frame_suffix("s", z)


def read(src: Source, ctx: ReadContext) -> Iterator[Decoded]:
    """Rows of one MedMNIST file (validated before the first row is produced).

    Raises:
        Unreadable: Not MedMNIST, inconsistent arrays, or 2-D images in 3-D mode.
        MedclError: Finding names that cannot be written in a label, or a patient id in two
            splits.
    """
    return _rows(src, ctx, plan(src, ctx.dims))


def _rows(src: Source, ctx: ReadContext, splits: list[SplitPlan]) -> Iterator[Decoded]:
    for sp in splits:
        order = sp.first_order
        for i in range(len(sp.images)):
            item = item_of(src.rel, sp.split, i)
            label = (
                label_texts(sp.labels[i : i + 1], sp.findings)[0] if sp.labels is not None else ""
            )
            arrays = pixels(sp.images[i : i + 1], sp.kind, ctx.dims)
            for z, array in enumerate(arrays):
                suffix = row_suffix(sp.split, i, z if sp.per_image > 1 else None)
                row = ctx.picture_row(
                    src, "npz", item, array, suffix, order, split=sp.split, label=label
                )
                if sp.patient_ids is not None:
                    row.patient_key = ctx.pseudonymize("patient", str(sp.patient_ids[i]))
                yield row
                order += 1


def _layout(images: np.ndarray, split: str) -> str:
    if images.ndim == 3:
        return "2d"
    if images.ndim == 4 and images.shape[-1] in (3, 4):
        return "rgb"
    if images.ndim == 4:
        return "3d"
    if images.ndim == 5 and images.shape[-1] == 1:
        return "3d1"
    raise Unreadable(
        f"{split}_images has shape {tuple(images.shape)}; expected (N, H, W), "
        "(N, H, W, 3) or (N, D, H, W)"
    )


def label_texts(labels: np.ndarray, findings: tuple[str, ...] | None) -> list[str]:
    """The ``label`` text of each image: class index ``"3"``, or its findings' text."""
    if findings is None:
        return [str(int(v)) for v in labels.tolist()]
    return fnd.encode_matrix(labels, findings)


def _finding_names(
    arrays: dict[str, np.ndarray], splits: list[str], rel: str
) -> tuple[str, ...] | None:
    """The findings of a multi-label file (its names, else ``finding_<k>``), None otherwise.

    Raises:
        Unreadable: Splits with different numbers of label columns, or names that do not fit.
    """
    widths = {
        arrays[f"{s}_labels"].shape[1] if arrays[f"{s}_labels"].ndim == 2 else 1
        for s in splits
        if f"{s}_labels" in arrays
    }
    if max(widths, default=1) <= 1:
        return None
    if len(widths) > 1:
        raise Unreadable("the splits' _labels have different numbers of columns")
    k = widths.pop()
    present = [a for a in NAME_ARRAYS if a in arrays]
    if not present:
        return tuple(f"finding_{i}" for i in range(k))
    names = arrays[present[0]]
    if names.ndim != 1 or len(names) != k or names.dtype.kind not in ("U", "S"):
        raise Unreadable(f"{present[0]} must hold {k} finding names (text), one per label column")
    try:
        return tuple(fnd.check_finding_names([str(n) for n in names.astype(str)]))
    except MedclError as exc:
        raise MedclError(f"{rel}: {present[0]}: {exc}") from None


def _labels(
    labels: np.ndarray, n: int, split: str, rel: str, findings: tuple[str, ...] | None
) -> np.ndarray:
    if findings is not None:
        if labels.ndim != 2 or labels.shape != (n, len(findings)):
            raise Unreadable(f"{split}_labels does not hold {len(findings)} findings per image")
        values = np.unique(labels)
        if not np.isin(values, (-1, 0, 1)).all():
            raise Unreadable(f"{split}_labels: multi-label values must be 1, 0 or -1 (unknown)")
        return labels.astype(np.int64)
    labels = labels.reshape(len(labels), -1)[:, 0] if labels.ndim == 2 else labels
    if labels.ndim != 1 or len(labels) != n:
        raise Unreadable(f"{split}_labels does not hold one label per image")
    if not np.issubdtype(labels.dtype, np.integer) and not (
        np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels))
    ):
        raise Unreadable(f"{split}_labels are not integer class indices")
    labels = labels.astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise Unreadable(f"{split}_labels holds negative class indices")
    return labels


def _patient_ids(
    arrays: dict[str, np.ndarray], split: str, n: int
) -> tuple[np.ndarray | None, str]:
    """``<split>_patient_ids`` (or ``_groups``) as text and the array's name, or ``(None, "")``;
    checked, never quoted."""
    present = [a for a in ID_ARRAYS if f"{split}_{a}" in arrays]
    if not present:
        return None, ""
    if len(present) > 1:
        raise Unreadable(f"both {split}_patient_ids and {split}_groups; keep one of them")
    name = f"{split}_{present[0]}"
    ids = arrays[name]
    if ids.ndim == 2 and ids.shape[1] == 1:
        ids = ids[:, 0]
    if ids.ndim != 1 or len(ids) != n:
        raise Unreadable(f"{name} does not hold one patient id per image")
    if np.issubdtype(ids.dtype, np.integer):
        return ids.astype(np.int64).astype(str), name
    if ids.dtype.kind in ("U", "S"):
        text = np.char.strip(ids.astype(str))
        empty = np.flatnonzero(text == "")
        if len(empty):
            raise Unreadable(f"{name}[{int(empty[0])}] is empty (every image needs a patient id)")
        return text, name
    raise Unreadable(f"{name} must hold integers or text")


def _check_ids_stay_in_one_split(splits: list[SplitPlan], rel: str) -> None:
    """Refuse a patient id found in two splits, naming the positions (never the id)."""
    seen: dict[str, tuple[str, int]] = {}
    for sp in splits:
        if sp.patient_ids is None:
            continue
        uniq, first = np.unique(sp.patient_ids, return_index=True)
        for pid, i in zip(uniq.tolist(), first.tolist(), strict=True):
            other = seen.get(pid)
            if other is not None:
                raise MedclError(
                    f"{rel}: {sp.id_array}[{i}] is the patient of {other[0]}[{other[1]}]; a "
                    "patient must stay in one split (merge the splits or fix the ids)"
                )
        for pid, i in zip(uniq.tolist(), first.tolist(), strict=True):
            seen[pid] = (sp.id_array, i)
