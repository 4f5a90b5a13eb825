"""Pretraining on random patches of 3-D volumes (``data.volume_mode: patches``).

Each volume of a batch yields ``k = data.patches_per_volume`` random regions of edge
``P = data.patch_size`` at the stored resolution, and each region ``V = augment.views`` views
cropped at slightly shifted corners (overlapping crops of one region, see
:func:`medcl.transforms.patches.region_views`); the preset's per-sample artifacts then run on each
view as for whole images. :func:`collate_patches` flattens the ``B`` volumes × ``k`` regions into
``B·k`` samples of ``V`` views, so the module and the objectives see an ordinary ``(B·k, V, 1, P,
P, P)`` batch.

Positives and negatives: the views of one region are the positive pair. The ``k`` regions of one
volume keep the volume's patient group: like two images of one patient they are never each other's
negatives (the contrastive masks exclude same-group pairs), and under ``method.group_positives``
they are positives, as same-patient images are. Two regions of one scan show the same patient and
acquisition, so treating them as negatives would push apart what the task should not separate.

Why a small sampler of our own and not torchio's ``Queue`` or MONAI's ``RandSpatialCropSamples``:
the batches come from :class:`~medcl.data.sampler.MixedBatchSampler`, which fixes each step's
labelled/unlabelled share and keeps whole patients together (``data.images_per_patient``) across
DDP ranks. ``Queue`` loads subjects in its own worker pool (a ``subject_sampler`` may order them,
but it takes indices, not batches) and serves patches from a buffer shuffled across many subjects,
so a batch would no longer be the sampler's volumes with their labelled share and patient groups;
MONAI's ``RandSpatialCropSamples`` draws k independent crops, not V overlapping views of one
region. Cropping inside ``__getitem__`` keeps the sampler, the loader workers (which then do
the cropping and the per-sample artifacts in parallel) and the resume-exact seeding unchanged;
the region/grid arithmetic itself is in :mod:`medcl.transforms.patches`. The corners are drawn
from the volume's shape first and only those cubes are read (from the memory-mapped cache file
when the volumes are streamed), so a step costs ``k·V`` patch reads, not whole volumes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from medcl.transforms.patches import region_views, sample_regions


class PatchViews(Dataset):
    """A dataset of volumes seen as ``k`` regions × ``V`` views of random patches.

    Args:
        volumes: Items ``(volume (1, D, H, W), label, group, index)``, e.g.
            :class:`~medcl.data.volumes.StoredVolumes`; when it has ``shape(i)``,
            ``crop(i, box, P)`` and ``label(i)`` (as that one), only the sampled cubes are read,
            from the memory-mapped cache file when the volumes are streamed: a 512×512×300 CT is
            never loaded whole for a step.
        patch_size: Patch edge ``P``.
        patches_per_volume: Regions ``k`` per volume and item.
        n_views: Views ``V`` per region.
        per_sample: Optional per-view transform ``(1, P, P, P) -> (1, P, P, P)`` (the preset's
            torchio artifacts), applied to every view on its own.
        generator: Randomness of the regions (the global generator when ``None``, which the
            loader seeds per worker).

    Items are ``(views (k, V, 1, P, P, P), label, group, index)``; the label an int, or the
    ``(K,)`` finding states of a multi-label manifest.
    """

    def __init__(
        self,
        volumes: Dataset,
        patch_size: int,
        patches_per_volume: int,
        n_views: int,
        per_sample: Callable[[Tensor], Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.volumes = volumes
        self.patch_size = patch_size
        self.k = patches_per_volume
        self.n_views = n_views
        self.per_sample = per_sample
        self.generator = generator

    def __len__(self) -> int:
        return len(self.volumes)  # type: ignore[arg-type]

    _SHARED = ("labels", "groups", "image_ids", "modality")

    def __getattr__(self, name: str) -> Any:
        # the wrapped volumes' row attributes only (never e.g. its __getitems__, which would
        # bypass the cropping in a DataLoader)
        volumes = self.__dict__.get("volumes")
        if name in PatchViews._SHARED and volumes is not None:
            return getattr(volumes, name)
        raise AttributeError(name)

    def __getitem__(self, i: int) -> tuple[Tensor, int | Tensor, int, int]:
        vols = self.volumes
        if all(hasattr(vols, a) for a in ("crop", "shape", "label")):  # read only the cubes
            p = self.patch_size
            _, boxes = sample_regions(vols.shape(i), p, self.k, self.n_views, self.generator)
            crops = torch.stack([torch.stack([vols.crop(i, b, p) for b in bs]) for bs in boxes])
            label, group, index = vols.label(i), int(vols.groups[i]), i
        else:
            x, label, group, index = vols[i]
            crops, _, _ = region_views(
                torch.as_tensor(x, dtype=torch.float32),
                self.patch_size,
                self.k,
                self.n_views,
                self.generator,
            )
        if self.per_sample is not None:
            flat = crops.flatten(0, 1)
            crops = torch.stack([self.per_sample(v) for v in flat]).reshape(crops.shape)
        return crops, label, group, index


def collate_patches(items: Sequence[tuple[Tensor, int | Tensor, int, int]]) -> list[Tensor]:
    """Collate :class:`PatchViews` items into ``B·k`` samples.

    Returns:
        ``[views (B·k, V, 1, P, P, P), labels (B·k,) or (B·k, K), groups (B·k,),
        index (B·k,)]``; each volume's label, patient group and index repeated for its ``k``
        regions.
    """
    x, labels, groups, index = default_collate(list(items))
    k = x.shape[1]
    return [
        x.flatten(0, 1),
        labels.repeat_interleave(k, dim=0),
        groups.repeat_interleave(k),
        index.repeat_interleave(k),
    ]
