"""Datasets and samplers that feed pretraining and fine-tuning from a manifest's cache.

- :class:`CachedImages` holds the decoded, intensity-normalised arrays of a set of manifest rows
  (``cache_path``, written by ``medcl ingest``), resized once to the run's image size. Small cohorts
  are kept in memory as one tensor; nothing is decoded from DICOM during training.
- :class:`MixedBatchSampler` draws batches with a fixed share of labelled rows (oversampled with
  reshuffling when the labelled pool is small) and the rest from the unlabelled pool. It splits
  batches across distributed ranks itself (Lightning's distributed sampler is switched off), drops
  the last incomplete batch so that gathered shapes match, and is a deterministic function of
  ``(seed, epoch)`` so that a resumed run sees the same batches. With ``images_per_patient = k``
  it draws whole patients: every batch holds ``B/k`` patients with ``k`` of their images each, so
  that patient-aware positives (MICLe) really meet in a batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from medcl.data.cache import load_cached
from medcl.data.manifest import Manifest
from medcl.errors import MedclError


def resize_to(x: torch.Tensor, size: int, dims: int) -> torch.Tensor:
    """Resize a channel-first image ``(1, H, W)`` / ``(1, D, H, W)`` to ``size`` on every axis."""
    spatial = tuple(x.shape[-dims:])
    if spatial == (size,) * dims:
        return x
    mode = "bilinear" if dims == 2 else "trilinear"
    down = any(s > size for s in spatial)
    y = F.interpolate(
        x[None], size=(size,) * dims, mode=mode, align_corners=False, antialias=down and dims == 2
    )
    return y[0]


class CachedImages(Dataset):
    """Images of some manifest rows, with their class index and patient group.

    Args:
        manifest: The manifest (rows must have ``cache_path``).
        image_size: Target size; images are resized once on load.
        dims: 2 or 3.
        progress: Show a progress bar while loading.

    Items are ``(image, label, group, index)`` with label −1 for unlabelled rows.
    """

    def __init__(
        self, manifest: Manifest, image_size: int, dims: int = 2, progress: bool = False
    ) -> None:
        df = manifest.df
        missing = df.index[df["cache_path"] == ""]
        if len(missing):
            raise MedclError(
                f"{len(missing)} manifest row(s) have no cache_path (first: "
                f"{df.loc[missing[0], 'image_id']}); re-run `medcl ingest`"
            )
        paths = list(df["cache_path"])
        it: Sequence[str] | Iterator[str] = paths
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(paths, desc="loading cache", unit="img", leave=False)
        images = [resize_to(torch.from_numpy(load_cached(p)), image_size, dims) for p in it]
        self.images = torch.stack(images) if images else torch.zeros((0, 1) + (image_size,) * dims)
        self.labels = torch.tensor(manifest.class_index().to_numpy().copy(), dtype=torch.long)
        _, inverse = np.unique(df["patient_key"].to_numpy(), return_inverse=True)
        self.groups = torch.as_tensor(inverse, dtype=torch.long)
        self.image_ids = list(df["image_id"])
        self.modality = manifest_geometry(manifest)[1]
        self.transform = None  # optional callable image -> tensor (e.g. preset.sample_views)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int, int]:
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i]), int(self.groups[i]), i


def manifest_geometry(m: Manifest, source: str = "manifest") -> tuple[int, str]:
    """The spatial dimensions and the modality of a manifest's rows.

    Returns:
        ``(dims, modality)``; modality is ``OT`` when rows mix modalities or carry none.

    Raises:
        MedclError: If 2-D and 3-D rows are mixed.
    """
    dims = sorted({int(d) for d in m.df["dims"].dropna()}) or [2]
    if len(dims) > 1:
        raise MedclError(f"{source}: mixes 2-D and 3-D rows; ingest them separately")
    mods = sorted(set(m.df["modality"]) - {""})
    return dims[0], mods[0] if len(mods) == 1 else "OT"


def preset_for_modality(modality: str) -> str:
    """Default augmentation preset for a DICOM modality code."""
    code = modality.upper()
    if code == "CT":
        return "ct"
    if code in ("MR", "MRI"):
        return "mr"
    return "xr"


class MixedBatchSampler(Sampler[list[int]]):
    """Batches with ``round(share·B)`` labelled rows and the rest unlabelled, split over ranks.

    Args:
        labelled: Dataset indices of labelled rows.
        unlabelled: Dataset indices of unlabelled rows.
        batch_size: Samples per batch per rank.
        labelled_share: Share of each batch drawn from ``labelled``; forced to 0 (1) when there is
            no labelled (unlabelled) row.
        num_replicas: Distributed world size.
        rank: This rank.
        seed: Base seed; batches depend on ``(seed, epoch)`` only.
        groups: Patient group of every dataset index (needed when ``images_per_patient > 1``).
        images_per_patient: ``k``: rows come in runs of ``k`` distinct images of one patient
            (fewer distinct ones, repeated, for a patient with fewer images); both pools' counts
            are rounded to multiples of ``k``. 1 draws single rows.

    Without grouping, a batch of ``B`` rows from a pool of ``N`` images of patients with ``m``
    images each holds on average ``B(m-1)/(N-1)`` other images of a row's patient (0.16 for
    ``B = 64``, ``m = 4``, ``N = 1200``): patient-aware positives then almost never occur.

    An epoch is ``(len(labelled) + len(unlabelled)) // (batch_size · num_replicas)`` batches per
    rank (at least one). Each pool is reshuffled whenever it is exhausted (small labelled pools are
    oversampled).
    """

    def __init__(
        self,
        labelled: Sequence[int],
        unlabelled: Sequence[int],
        batch_size: int,
        labelled_share: float,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        groups: Sequence[int] | np.ndarray | None = None,
        images_per_patient: int = 1,
    ) -> None:
        k = int(images_per_patient)
        if k < 1:
            raise MedclError(f"images_per_patient must be ≥ 1, got {images_per_patient}")
        if k > 1 and groups is None:
            raise MedclError("images_per_patient > 1 needs the patient group of every row")
        if batch_size % k:
            raise MedclError(
                f"batch_size ({batch_size}) must be a multiple of images_per_patient ({k})"
            )
        self.k = k
        self.groups = None if groups is None else np.asarray(groups, dtype=np.int64)
        self.labelled = np.asarray(labelled, dtype=np.int64)
        self.unlabelled = np.asarray(unlabelled, dtype=np.int64)
        if len(self.labelled) + len(self.unlabelled) == 0:
            raise MedclError("no training rows to sample from (is the train split empty?)")
        if len(self.labelled) == 0:
            labelled_share = 0.0
        if len(self.unlabelled) == 0:
            labelled_share = 1.0
        self.batch_size = batch_size
        self.n_lab = k * int(round(labelled_share * batch_size / k))
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        total = len(self.labelled) + len(self.unlabelled)
        self.batches_per_rank = max(1, total // (batch_size * num_replicas))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (different shuffles; identical on every rank)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_rank

    @staticmethod
    def _stream(pool: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
        if count == 0:
            return np.zeros(0, dtype=np.int64)
        reps = math.ceil(count / len(pool))
        return np.concatenate([rng.permutation(pool) for _ in range(reps)])[:count]

    def _stream_patients(
        self, pool: np.ndarray, count: int, rng: np.random.Generator
    ) -> np.ndarray:
        """``count`` rows of ``pool`` in runs of ``k`` images of one patient (patients shuffled)."""
        if count == 0:
            return np.zeros(0, dtype=np.int64)
        assert self.groups is not None
        pool_groups = self.groups[pool]
        order = np.argsort(pool_groups, kind="stable")
        ids, starts = np.unique(pool_groups[order], return_index=True)
        members = np.split(pool[order], starts[1:])
        units = count // self.k
        out: list[np.ndarray] = []
        while len(out) < units:
            for g in rng.permutation(len(ids)):
                rows = members[g]
                pick = rng.permutation(rows)[: self.k]
                if len(pick) < self.k:  # a patient with fewer images than k repeats them
                    pick = np.resize(pick, self.k)
                out.append(pick)
                if len(out) == units:
                    break
        return np.concatenate(out)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        n_batches = self.batches_per_rank * self.num_replicas
        n_unl = self.batch_size - self.n_lab
        stream = self._stream if self.k == 1 else self._stream_patients
        lab = stream(self.labelled, n_batches * self.n_lab, rng).reshape(n_batches, -1)
        unl = stream(self.unlabelled, n_batches * n_unl, rng).reshape(n_batches, -1)
        batches = np.concatenate([lab, unl], axis=1)
        for b in range(self.rank, n_batches, self.num_replicas):
            yield batches[b].tolist()


def auto_labelled_share(n_labelled: int, n_unlabelled: int) -> float:
    """The natural labelled share, clipped to [0.25, 0.5] (0 or 1 when a pool is empty)."""
    total = n_labelled + n_unlabelled
    if n_labelled == 0:
        return 0.0
    if n_unlabelled == 0:
        return 1.0
    return float(min(0.5, max(0.25, n_labelled / total)))
