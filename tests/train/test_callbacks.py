"""RNGStateCheckpoint: the global generators round-trip through a weights-only checkpoint."""

from __future__ import annotations

import random

import numpy as np
import torch

from medcl.train.callbacks import RNG_KEY, RNGStateCheckpoint


def _draws() -> tuple[list[float], list[float], list[float]]:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_generators_continue_where_the_checkpoint_was_saved(tmp_path):
    callback = RNGStateCheckpoint()
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    checkpoint: dict = {}
    callback.on_save_checkpoint(None, None, checkpoint)
    expected = _draws()
    torch.save(checkpoint, tmp_path / "c.ckpt")
    for seed in (
        torch.manual_seed,
        np.random.seed,
        random.seed,
    ):  # a resumed process starts elsewhere
        seed(9)
    loaded = torch.load(tmp_path / "c.ckpt", weights_only=True)  # plain types and tensors only
    callback.on_load_checkpoint(None, None, loaded)
    assert _draws() == expected
    # a checkpoint without the entry leaves the generators alone
    state = torch.get_rng_state()
    callback.on_load_checkpoint(None, None, {k: v for k, v in loaded.items() if k != RNG_KEY})
    assert torch.equal(torch.get_rng_state(), state)
