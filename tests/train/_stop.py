"""Lightning callbacks that simulate a pretraining killed between epochs or mid-epoch (for resume
tests)."""

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


class StopAtStep(Callback):
    """Raise :class:`SimulatedKillError` after optimiser step ``step``, once the checkpoint
    callbacks (registered before this one) have handled that step.

    Args:
        step: The last optimiser step that completes.
    """

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step >= self.step:
            raise SimulatedKillError(f"interrupted after step {self.step} (simulated kill)")
