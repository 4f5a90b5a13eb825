"""What lets a pretraining killed at any moment (``kill -9`` mid-epoch, or while a checkpoint is
being written) resume to the weights of an uninterrupted run.

- :class:`AtomicCheckpointIO`: every checkpoint is written to a temporary file beside its target
  and renamed onto it (:func:`medcl.io.atomic_path`), so ``last.ckpt`` is always a whole
  checkpoint, the previous one until the new one is complete. (Lightning's own writer stages the
  file in the system's temporary folder and moves it: a copy, not a rename, when that folder is on
  another file system, and a kill during the copy leaves a truncated checkpoint.) Temporaries a
  killed writer left are removed when the run resumes (:func:`remove_stale_temporaries`).
- :class:`ResumableLoader`: the training DataLoader keeps how many batches of the current epoch
  it has handed out, saved in every checkpoint (through the data module's ``state_dict``); a run
  resumed from a mid-epoch checkpoint (``trainer.checkpoint_every_n_steps``) skips those batches
  of the same epoch's batch order (:class:`~medcl.data.sampler.MixedBatchSampler` is a function of
  ``(seed, epoch)``) instead of starting the epoch over. Creating the resumed iterator does not
  draw from the global generator (restored from the checkpoint), so that with
  ``data.num_workers=0`` the loader-side augmentations draw what the uninterrupted run drew.
  With loader workers the batches are the same, the workers' own random draws are not.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch.utils.data import DataLoader, Sampler

from medcl.io import atomic_path, is_temporary_of


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O whose writes replace the target whole or not at all."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options: Any = None
    ) -> None:
        """``torch.save`` to a temporary beside ``path``, then one rename onto it.

        Args:
            checkpoint: The trainer's checkpoint dict.
            path: The target file.
            storage_options: Not supported (must be ``None``).
        """
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> int:
    """Delete the temporaries (``.NAME.PID.tmp``) a killed checkpoint writer left in ``folder``.

    Returns:
        How many were removed.
    """
    p = Path(folder)
    if not p.is_dir():
        return 0
    removed = 0
    for f in p.glob(".*.tmp"):
        target = f.name[1:].rsplit(".", 2)[0]
        if is_temporary_of(f.name, target):
            f.unlink(missing_ok=True)
            removed += 1
    return removed


class SkippableBatches(Sampler[list[int]]):
    """A batch sampler that can leave out the first batches of one epoch, once.

    Args:
        inner: The batch sampler (with ``set_epoch``).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.epoch = 0
        self._skip: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (forwarded to ``inner``)."""
        self.epoch = epoch
        self.inner.set_epoch(epoch)

    def skip_once(self, epoch: int, batches: int) -> None:
        """Leave out the first ``batches`` of ``epoch`` the next time it is iterated."""
        self._skip = (int(epoch), int(batches))

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[list[int]]:
        skip, self._skip = self._skip, None
        n = skip[1] if skip is not None and skip[0] == self.epoch else 0
        for i, batch in enumerate(self.inner):
            if i >= n:
                yield batch


class _Counted:
    """The DataLoader's iterator, counting the batches it hands out into its loader."""

    def __init__(self, loader: ResumableLoader, inner: Iterator[Any], start: int) -> None:
        self.loader = loader
        self.inner = inner
        loader.batches_seen = start

    def __iter__(self) -> _Counted:
        return self

    def __next__(self) -> Any:
        batch = next(self.inner)
        self.loader.batches_seen += 1
        return batch

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]


class ResumableLoader(DataLoader):
    """A DataLoader over a :class:`SkippableBatches` batch sampler whose position in the epoch
    travels in the checkpoint (:meth:`state_dict`, :meth:`load_state_dict`; saved through the
    data module, :class:`~medcl.train.datamodule.PretrainData`).

    Attributes:
        batches_seen: Batches of the current epoch handed out so far.
    """

    batch_sampler: SkippableBatches

    def __init__(self, dataset: Any, batch_sampler: Any, **kwargs: Any) -> None:
        super().__init__(dataset, batch_sampler=SkippableBatches(batch_sampler), **kwargs)
        self.batches_seen = 0
        self._resuming = False
        self._iterated = False

    def state_dict(self) -> dict[str, int]:
        """The epoch and how many of its batches were handed out."""
        return {"epoch": int(self.batch_sampler.epoch), "batches": int(self.batches_seen)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue the saved epoch after its handed-out batches (idempotent).

        The epoch is selected here, since Lightning creates a resumed run's first iterator before
        it sets the epoch. Normally this is called before the first iteration; when an iterator
        already exists, its batch sampler has not started yet and skips all the same."""
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches >= len(self.batch_sampler):  # saved at the end of its epoch: nothing to skip
            batches = 0
        self.batch_sampler.set_epoch(epoch)
        self.batch_sampler.skip_once(epoch, batches)
        self.batches_seen = batches
        self._resuming = batches > 0 and not self._iterated

    def __iter__(self) -> _Counted:  # type: ignore[override]
        self._iterated = True
        if not self._resuming:
            return _Counted(self, super().__iter__(), 0)
        self._resuming = False
        # the uninterrupted run drew this iterator's base seed at the start of the epoch, before
        # the generator state the checkpoint restored: do not draw it again
        with torch.random.fork_rng(devices=[]):
            inner = super().__iter__()
        return _Counted(self, inner, self.batches_seen)
