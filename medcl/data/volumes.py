"""Volumes at their stored resolution, and the dataset a model's input convention asks for.

:class:`StoredVolumes` gives each row's cached array as the cache holds it (``(1, D, H, W)`` after
ingest's in-plane resize, if any; no resize here, so shapes may differ between rows). It is
what ``data.volume_mode: patches`` crops from (:mod:`medcl.train.patches`) and what grid inference
aggregates over (:mod:`medcl.transforms.patches`). :func:`stored_shapes` reads only the ``.npy``
headers, so a patch larger than some volume is refused before any image is loaded.

:func:`model_images` is the one place callers pick the dataset of a model's input convention:
``CachedImages`` resized to ``image_size`` for whole-image models, :class:`StoredVolumes` for a
model trained on patches (its metadata's ``volume`` entry).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medcl.data.dataset import CachedImages, manifest_geometry, open_images
from medcl.data.manifest import Manifest
from medcl.data.packed import split_ref
from medcl.errors import MedclError


def mapped(ref: str) -> np.ndarray:
    """A cached array (``cache_path``: a file or ``<shard>.npy#<row>``) memory-mapped, read-only:
    slicing it reads only the pages of the slice."""
    name, row = split_ref(str(ref))
    try:
        arr = np.load(name, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise MedclError(f"{name}: cached array not found (re-run medcl ingest)") from None
    except (OSError, ValueError) as exc:
        raise MedclError(f"{name}: not a readable cached array ({type(exc).__name__})") from None
    return arr if row is None else arr[row]


def stored_shapes(manifest: Manifest) -> list[tuple[int, ...]]:
    """Spatial shapes of the rows' cached arrays, read from the ``.npy`` headers only."""
    shapes = []
    for p in manifest.df["cache_path"]:
        if not p:
            raise MedclError("a manifest row has no cache_path; re-run `medcl ingest`")
        shapes.append(tuple(int(s) for s in mapped(p).shape[1:]))
    return shapes


def check_patches_fit(
    manifest: Manifest,
    patch_size: int,
    key: str = "data.patch_size",
    hint: str = "lower data.patch_size",
) -> None:
    """Refuse patches on 2-D rows or on a volume smaller than a patch along some axis.

    Args:
        manifest: The rows.
        patch_size: Patch edge in voxels.
        key: What sets the patch size (named in the message).
        hint: What to do about it (ends the message).

    Raises:
        MedclError: One line naming ``key`` (or ``data.volume_mode``) and the first offending
            ``image_id``.
    """
    dims = manifest_geometry(manifest)[0]
    if dims != 3:
        raise MedclError("data.volume_mode=patches needs 3-D volumes; the manifest is 2-D")
    for image_id, shape in zip(manifest.df["image_id"], stored_shapes(manifest), strict=True):
        if min(shape) < patch_size:
            raise MedclError(
                f"{key}={patch_size} is larger than volume {image_id} "
                f"(stored shape {'×'.join(map(str, shape))}); {hint}"
            )


class StoredVolumes(Dataset):
    """Cached volumes of some manifest rows as stored (no resize; shapes may differ).

    The rows are read through :func:`medcl.data.dataset.open_images` with ``image_size=None``:
    held in memory when they fit ``memory_budget_mb`` (``in_memory="auto"``), else read from
    their cache files on access (inside the loader workers).

    Args:
        manifest: The manifest (rows must have ``cache_path``).
        in_memory: ``auto``, ``true`` or ``false`` (``data.in_memory``).
        memory_budget_mb: The ``auto`` threshold (``data.memory_budget_mb``).

    Attributes:
        labels: ``(N,)`` class indices, −1 for unlabelled rows; ``(N, K)`` finding states for a
            multi-label manifest.
        groups: ``(N,)`` patient numbers in secret-free content order.
        image_ids: The rows' image ids.
        transform: Optional callable ``volume -> tensor`` applied in :meth:`__getitem__`.

    Items are ``(volume, label, group, index)``, the volume ``(1, D, H, W)`` float32 and the label
    as :meth:`label` gives it.
    """

    def __init__(
        self, manifest: Manifest, in_memory: str | bool = "auto", memory_budget_mb: float = 1024
    ) -> None:
        self.source = open_images(
            manifest, None, 3, in_memory=in_memory, memory_budget_mb=memory_budget_mb
        )
        self.labels = self.source.labels
        self.groups = self.source.groups
        self.image_ids = self.source.image_ids
        self.modality = self.source.modality
        self.transform: Any = None
        self._held = isinstance(self.source, CachedImages)  # in memory: crop the tensor

    def __len__(self) -> int:
        return len(self.source)

    def volume(self, i: int) -> torch.Tensor:
        """The ``i``-th cached volume, ``(1, D, H, W)`` float32."""
        return torch.as_tensor(self.source.image(i), dtype=torch.float32)

    def shape(self, i: int) -> tuple[int, ...]:
        """Spatial shape of the ``i``-th volume (a header read when streamed)."""
        if self._held:
            return tuple(self.source.image(i).shape[1:])
        return tuple(int(n) for n in mapped(self.source.paths[i]).shape[1:])

    def crop(self, i: int, box: tuple[int, ...], patch_size: int) -> torch.Tensor:
        """The cube of edge ``patch_size`` at corner ``box`` of the ``i``-th volume,
        ``(1, P, P, P)``; when streamed, read from the memory-mapped cache file (only that cube's
        pages, not the whole volume)."""
        index = (slice(None),) + tuple(slice(s, s + patch_size) for s in box)
        if self._held:
            return torch.as_tensor(self.source.image(i)[index], dtype=torch.float32).clone()
        cube = np.array(mapped(self.source.paths[i])[index], dtype=np.float32)
        return torch.from_numpy(cube)

    @property
    def images(self) -> Sequence[torch.Tensor]:
        """Every volume, as a sequence read on access (shapes may differ; one volume in memory
        at a time while a patch model embeds them)."""
        return _Volumes(self)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int, int]:
        x = self.volume(i)
        if self.transform is not None:
            x = self.transform(x)
        return x, self.label(i), int(self.groups[i]), i

    def label(self, i: int) -> int | torch.Tensor:
        """Row ``i``'s label as an item carries it: an int, or the ``(K,)`` finding states."""
        return self.source.label(i)


class _Volumes(Sequence[torch.Tensor]):
    """The volumes of a :class:`StoredVolumes`, each read when indexed."""

    def __init__(self, owner: StoredVolumes) -> None:
        self.owner = owner

    def __len__(self) -> int:
        return len(self.owner)

    def __getitem__(self, i: int) -> torch.Tensor:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self.owner.volume(i % len(self))


def model_images(
    manifest: Manifest, image_size: int, dims: int, patches: bool
) -> CachedImages | StoredVolumes:
    """The rows of ``manifest`` as a model with this input convention reads them.

    Args:
        manifest: The rows.
        image_size: The model's input edge (whole-image models resize to it).
        dims: 2 or 3.
        patches: Whether the model was trained on 3-D patches.

    Returns:
        Whole-image models: ``CachedImages`` at ``image_size`` (``.images`` a stacked tensor);
        patch models: :class:`StoredVolumes` (``.images`` a list of stored volumes, which the
        classifier aggregates over grid patches).
    """
    if patches:
        return StoredVolumes(manifest)
    return CachedImages(manifest, int(image_size), int(dims))
