"""Lightning callbacks of the pretraining trainer.

- :class:`RNGStateCheckpoint`: the global random generators (torch CPU, NumPy, Python) travel in the
  checkpoint, so that a resumed or warm-started run continues with the generator states it stopped
  with (together with the per-step augmentation generator of the module, a bit-identical resume).
- :class:`SamplerEpoch`: the training batch sampler draws each epoch's own batches (Lightning sets
  the epoch only on a loader's ``sampler`` or its batch sampler's ``sampler``, never on a batch
  sampler itself).
- :class:`ThroughputMonitor`: ``train/views_per_s``, augmented views per second of wall time.
- :class:`AugmentGridLogger`: at the end of training, a contact sheet of training images and their
  augmented views (:func:`medcl.transforms.preview_grid`) as ``OUT/logs/augment_grid.png``, an
  image in TensorBoard (``augment/grid``) and an MLflow artifact.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger
from PIL import Image

from medcl.io import atomic_path
from medcl.transforms import AugmentPreset, preview_grid

RNG_KEY = "medcl_rng"
"""Checkpoint entry holding the generator states."""


class RNGStateCheckpoint(Callback):
    """Save the global generator states in every checkpoint and restore them on loading.

    Only plain types and tensors are stored, so that weights-only loading accepts the checkpoint.
    A checkpoint without the entry loads with the generators left as they are.
    """

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Write the torch, NumPy and Python generator states to ``checkpoint``."""
        name, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint[RNG_KEY] = {
            "torch": torch.get_rng_state(),
            "numpy": [
                name,
                torch.from_numpy(keys.astype(np.int64)),
                int(pos),
                int(has_gauss),
                float(cached),
            ],
            "python": random.getstate(),
        }

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Restore the generator states saved by :meth:`on_save_checkpoint`, if any."""
        state = checkpoint.get(RNG_KEY)
        if state:
            torch.set_rng_state(state["torch"])
            name, keys, pos, has_gauss, cached = state["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
            random.setstate(state["python"])


class SamplerEpoch(Callback):
    """Hand the epoch to the training loader's batch sampler at the start of every epoch.

    :class:`~medcl.data.sampler.MixedBatchSampler` draws an epoch's batches from
    ``(seed, epoch)``; without this every epoch would repeat epoch 0's batches (the same images
    side by side, the same patients paired, in the same order).
    """

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = trainer.train_dataloader
        set_epoch = getattr(getattr(loader, "batch_sampler", None), "set_epoch", None)
        if callable(set_epoch):
            set_epoch(trainer.current_epoch)


class ThroughputMonitor(Callback):
    """Log ``train/views_per_s`` after every training batch.

    ``views_per_s = B · V · W / Δt``: ``B`` images in the batch, ``V`` augmented views of each,
    ``W`` ranks (each processes its own batch), and ``Δt`` the wall time since the previous
    batch ended (the first batch of an epoch: since it started, so that validation and epoch
    set-up are not counted). ``Δt`` thus covers loading, augmentation, forward, backward and the
    optimiser step: the rate a user sees.

    Args:
        views: Augmented views per image (``augment.views``).
    """

    def __init__(self, views: int) -> None:
        self.views = views
        self._last: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Forget the previous epoch's clock."""
        self._last = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Start the clock at an epoch's first batch."""
        if self._last is None:
            self._last = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Log the views per second of this batch."""
        now = time.perf_counter()
        dt = max(now - (self._last if self._last is not None else now), 1e-9)
        self._last = now
        b = int(batch[0].shape[0])
        rate = b * self.views * trainer.world_size / dt
        pl_module.log("train/views_per_s", rate, on_step=True, on_epoch=False, batch_size=b)


class AugmentGridLogger(Callback):
    """At the end of training, show what the augmentations did to a few training images.

    The grid (one row per image: the normalised original, then ``views`` augmented views drawn
    with ``seed``) is written to ``png`` and sent to every TensorBoard logger (``add_image``, tag
    ``augment/grid``, 8-bit greyscale) and every MLflow logger (artifact ``augment_grid.png``) of
    the trainer. Only rank 0 writes. The first ``n_images`` training images are shown (the same
    ones in every run of a manifest; with 3-D patch training, one crop of each of the first
    volumes).

    Args:
        preset: The run's augmentation preset.
        views: Views per image in the grid.
        png: Where the PNG goes (``OUT/logs/augment_grid.png``).
        n_images: Rows of the grid.
        seed: Seed of the views.
    """

    TAG = "augment/grid"

    def __init__(
        self, preset: AugmentPreset, views: int, png: Path, n_images: int = 4, seed: int = 0
    ) -> None:
        self.preset = preset
        self.views = max(1, views)
        self.png = Path(png)
        self.n_images = n_images
        self.seed = seed

    def _images(self, ds: Any) -> list[np.ndarray]:
        """The first ``n_images`` training images in stored units: the cached images, or (3-D
        patch training, a dataset of ``(k, V, 1, P, P, P)`` crops) each volume's first crop."""
        if ds is None or len(ds) == 0:
            return []
        n = min(self.n_images, len(ds))
        stack = getattr(ds, "images", None)
        if stack is not None:
            return [torch.as_tensor(stack[i]).numpy() for i in range(n)]
        out = []
        for i in range(n):
            x = torch.as_tensor(ds[i][0])
            while x.ndim > self.preset.dims + 1:
                x = x[0]
            out.append(x.numpy())
        return out

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write the grid and hand it to the image-capable loggers."""
        if not trainer.is_global_zero:
            return
        images = self._images(getattr(trainer.datamodule, "train_set", None))
        if not images:
            return
        with tempfile.TemporaryDirectory(prefix="medcl-grid-") as tmp:
            grid = preview_grid(images, self.preset, self.views, Path(tmp) / "grid.png", self.seed)
            arr = np.asarray(Image.open(grid).convert("L"))
        with atomic_path(self.png) as tmp_png:
            Image.fromarray(arr).save(tmp_png, format="PNG")
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(
                    self.TAG, arr, int(trainer.global_step), dataformats="HW"
                )
                logger.experiment.flush()
            elif isinstance(logger, MLFlowLogger):
                logger.experiment.log_artifact(logger.run_id, str(self.png))
