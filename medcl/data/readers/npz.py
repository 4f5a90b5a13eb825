"""MedMNIST ``.npz`` reader.

Layout: ``train_images``, ``train_labels``, ``val_images``, ``val_labels``, ``test_images``,
``test_labels`` (any subset of the splits). Images are ``(N, H, W)`` grey, ``(N, H, W, 3)`` colour
(BT.601 luma) or ``(N, D, H, W)`` volumes (the 3-D MedMNIST sets); labels ``(N,)`` or ``(N, 1)``
integer class indices.

* The file's own splits are kept (manifest ``split`` = ``train``/``val``/``test``).
* Labels are class indices, written as ``"0"``, ``"1"`` …; :mod:`medcl.data.ingest` maps them to
  the ``classes`` names when given.
* MedMNIST has no patient ids, so **each image is its own patient** (the patient key is the
  pseudonym of file + split + index). This is recorded in the manifest sidecar.
* Multi-label label arrays (more than one column, e.g. ChestMNIST) are refused with a
  :class:`~medcl.errors.MedclError`: medcl trains one class per image.
* 2-D mode over volumes gives one row per slice; 3-D mode over 2-D images is refused.
* Intensity rule: ``unit``. Modality ``OT``.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

import numpy as np

from medcl.data.readers.base import Decoded, ReadContext, Source, Unreadable, frame_suffix
from medcl.data.readers.base import luma as _luma
from medcl.errors import MedclError

SPLITS = ("train", "val", "test")
NOTE = (
    "MedMNIST files carry no patient identifiers: each image is its own patient, so patient-level "
    "splitting cannot prevent leakage between images of one person; the file's own "
    "train/val/test splits are kept."
)


def is_medmnist(data: bytes) -> bool:
    """Whether zip ``data`` is an ``.npz`` with at least one ``<split>_images`` array."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return any(f"{s}_images.npy" in names for s in SPLITS)


def read(src: Source, ctx: ReadContext) -> Iterator[Decoded]:
    """Rows of one MedMNIST file (validated before the first row is produced).

    Raises:
        Unreadable: Not MedMNIST, inconsistent arrays, or 2-D images in 3-D mode.
        MedclError: Multi-label labels.
    """
    try:
        archive = np.load(io.BytesIO(src.data), allow_pickle=False)
        arrays = {k: archive[k] for k in archive.files if k.endswith(("_images", "_labels"))}
    except Exception:  # noqa: BLE001 - zip/npy parsing errors of every kind
        raise Unreadable("NPZ archive is truncated or corrupt (or holds pickled objects)") from None
    splits = [s for s in SPLITS if f"{s}_images" in arrays]
    if not splits:
        raise Unreadable(
            "NPZ archive without MedMNIST arrays (train_images, val_images, test_images)"
        )
    plan = []
    for split in splits:
        images = arrays[f"{split}_images"]
        labels = arrays.get(f"{split}_labels")
        kind = _layout(images, split)
        if kind == "2d" and ctx.dims == 3:
            raise Unreadable(
                "--dims 3: this MedMNIST file holds 2-D images (ingest it with --dims 2)"
            )
        if labels is not None:
            labels = _labels(labels, len(images), split, src.rel)
        plan.append((split, images, labels, kind))
    return _rows(src, ctx, plan)


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


def _labels(labels: np.ndarray, n: int, split: str, rel: str) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise MedclError(
            f"{rel}: {split}_labels has {labels.shape[1]} columns (multi-label "
            "MedMNIST); medcl needs one class per image, so convert it to a single "
            "label column first"
        )
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


def _rows(src: Source, ctx: ReadContext, plan) -> Iterator[Decoded]:
    order = 0
    for split, images, labels, kind in plan:
        for i in range(len(images)):
            item = f"path\x00{src.rel}\x00{split}\x00{i}"  # each image is its own patient
            label = str(int(labels[i])) if labels is not None else ""
            base = f"_{split}{i:06d}"
            image = images[i]
            if kind == "rgb":
                image = _luma(image[..., :3])
            elif kind == "3d1":
                image = image[..., 0]
            image = np.asarray(image, dtype=np.float64)
            if image.ndim == 3 and ctx.dims == 2:
                slices = [(image[z], base + frame_suffix("s", z)) for z in range(image.shape[0])]
            else:
                slices = [(image, base)]
            for array, suffix in slices:
                yield ctx.picture_row(
                    src, "npz", item, array, suffix, order, split=split, label=label
                )
                order += 1
