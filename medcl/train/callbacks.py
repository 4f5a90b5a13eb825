"""Lightning callbacks of the pretraining trainer.

- :class:`RNGStateCheckpoint`: the global random generators (torch CPU, NumPy, Python) travel in the
  checkpoint, so that a resumed or warm-started run continues with the generator states it stopped
  with (together with the per-step augmentation generator of the module, a bit-identical resume).
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

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
