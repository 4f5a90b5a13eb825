"""Channels-last only where it is valid: 2-D networks on CUDA. A 3-D encoder's 5-D weights cannot
take ``torch.channels_last`` (converting them raises), so the decision is tested on the CPU
through the fit-start hook that applies it, with the device reported as CUDA."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from medcl.config import load_config
from medcl.train.module import PretrainModule
from medcl.train.objectives import channels_last_applies
from medcl.transforms import build_preset
from tests.conftest import TINY_OVERRIDES


def test_channels_last_applies_to_2d_on_cuda_only():
    assert channels_last_applies(torch.device("cuda"), 2)
    assert not channels_last_applies(torch.device("cuda"), 3)
    assert not channels_last_applies(torch.device("cpu"), 2)


def _conv_weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in module.parameters() if p.ndim >= 4]


@pytest.mark.parametrize("dims", [2, 3])
def test_fit_start_on_cuda_lays_out_only_2d_networks(dims):
    cfg = load_config(None, [*TINY_OVERRIDES, "method.name=moco"])  # with a target encoder
    module = PretrainModule(cfg, build_preset("mr", {}, dims=dims), dims, 3)
    module._device = torch.device("cuda", 0)  # what Lightning reports on a GPU; tensors stay here
    module._trainer = SimpleNamespace(estimated_stepping_batches=4)
    module.on_fit_start()  # raised "required rank 4 tensor" for 3-D before the guard
    weights = _conv_weights(module.encoder) + _conv_weights(module.method)
    assert weights and len(_conv_weights(module.method)) > 0
    if dims == 2:
        assert all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    else:
        assert all(w.ndim == 5 and w.is_contiguous() for w in weights)
