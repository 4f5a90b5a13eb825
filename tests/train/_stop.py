"""A Lightning callback that simulates a pretraining killed between epochs (for resume tests)."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback


class SimulatedKillError(Exception):
    """What :class:`StopAtEpoch` raises: the run stops as if its process had been killed."""


class StopAtEpoch(Callback):
    """Raise :class:`SimulatedKillError` at the start of epoch ``epoch`` (0-based), after the
    checkpoint of the epoch before it was written.

    Args:
        epoch: The first epoch that does not run.
    """

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch >= self.epoch:
            raise SimulatedKillError(
                f"interrupted at the start of epoch {self.epoch} (simulated kill)"
            )
