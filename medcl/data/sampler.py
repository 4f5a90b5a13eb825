"""Batch samplers that mix labelled and unlabelled rows of a manifest.

:class:`MixedBatchSampler` draws batches with a fixed share of labelled rows (oversampled with
reshuffling when the labelled pool is small) and the rest from the unlabelled pool. It splits
batches across distributed ranks itself (Lightning's distributed sampler is switched off), drops
the last incomplete batch so that gathered shapes match, and is a deterministic function of
``(seed, epoch)`` so that a resumed run sees the same batches. With ``images_per_patient = k`` it
draws whole patients: every batch holds ``B/k`` patients with ``k`` of their images each, so that
patient-aware positives (MICLe) really meet in a batch. :func:`auto_labelled_share` is the default
labelled share.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from medcl.errors import MedclError


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
        # copies, never views: a dataset's ``groups.numpy()`` is a view of a tensor whose storage
        # moves to shared memory (the old one freed) when the dataset is pickled for loader
        # workers started by spawn, and the batches were then drawn from freed memory
        self.groups = None if groups is None else np.array(groups, dtype=np.int64)
        self.labelled = np.array(labelled, dtype=np.int64)
        self.unlabelled = np.array(unlabelled, dtype=np.int64)
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
        assert self.groups is not None
        return patient_runs(pool, self.groups, self.k, count, rng)

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


def patient_runs(
    pool: np.ndarray, groups: np.ndarray, k: int, count: int, rng: np.random.Generator
) -> np.ndarray:
    """``count`` rows of ``pool`` in runs of ``k`` images of one patient.

    Patients come in successive random permutations (every patient once before any twice); each
    run is ``k`` distinct images of its patient drawn at random, or, for a patient with fewer than
    ``k`` images, all of them repeated in a random order to fill the run.

    Args:
        pool: Dataset indices to draw from.
        groups: Patient group of every dataset index (indexed by the values of ``pool``).
        k: Images per patient in a run.
        count: Rows to return (a multiple of ``k``; the remainder is dropped).
        rng: The random generator.

    Returns:
        ``(count // k · k,)`` dataset indices, run after run.
    """
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    pool_groups = groups[pool]
    order = np.argsort(pool_groups, kind="stable")
    ids, starts = np.unique(pool_groups[order], return_index=True)
    members = np.split(pool[order], starts[1:])
    units = count // k
    out: list[np.ndarray] = []
    while len(out) < units:
        for g in rng.permutation(len(ids)):
            rows = members[g]
            pick = rng.permutation(rows)[:k]
            if len(pick) < k:  # a patient with fewer images than k repeats them
                pick = np.resize(pick, k)
            out.append(pick)
            if len(out) == units:
                break
    return np.concatenate(out)


def auto_labelled_share(n_labelled: int, n_unlabelled: int) -> float:
    """The natural labelled share, clipped to [0.25, 0.5] (0 or 1 when a pool is empty)."""
    total = n_labelled + n_unlabelled
    if n_labelled == 0:
        return 0.0
    if n_unlabelled == 0:
        return 1.0
    return float(min(0.5, max(0.25, n_labelled / total)))
