"""Shared helpers for the transforms tests: option sets that switch everything off, phantoms."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch

from medcl.transforms import make_options


def off_overrides(name: str, **extra: object) -> dict[str, object]:
    """Overrides that turn every random transform of preset ``name`` off, plus ``extra``."""
    opts = make_options(name)
    out: dict[str, object] = {f.name: 0.0 for f in dataclasses.fields(opts) if f.name[:2] == "p_"}
    if name == "ct":
        out.update(level_jitter_hu=0.0, width_jitter_frac=0.0)
    out.update(extra)
    return out


@pytest.fixture
def off() -> Callable[..., dict[str, object]]:
    return off_overrides


def disc(size: int = 64, radius: float = 10.0, value: float = 1.0) -> torch.Tensor:
    """A centred bright disc, ``(1, size, size)``."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = (size - 1) / 2
    return (((yy - c) ** 2 + (xx - c) ** 2) <= radius**2).float().mul(value).unsqueeze(0)


@pytest.fixture
def make_disc() -> Callable[..., torch.Tensor]:
    return disc
