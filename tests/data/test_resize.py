"""``medcl.data.resize.resize_to``: the resizer of the ingest cache and of the datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medcl.data.cache import prepare, to_cache_intensity
from medcl.data.resize import resize_to


def _lines(h: int, w: int, every: int) -> np.ndarray:
    """A ``(1, h, w)`` image with one-pixel bright columns every ``every`` columns."""
    x = np.zeros((1, h, w), dtype=np.float32)
    x[..., ::every] = 1.0
    return x


def test_kinds_and_shapes() -> None:
    a = np.random.default_rng(0).random((1, 6, 20, 30))
    out = resize_to(a, 16)  # in-plane only: every slice of the volume alike
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (1, 6, 16, 16)
    t = torch.rand(1, 6, 20, 30, dtype=torch.float64)
    vol = resize_to(t, 16, 3)
    assert isinstance(vol, torch.Tensor) and vol.dtype == torch.float64
    assert vol.shape == (1, 16, 16, 16)
    same = torch.rand(1, 16, 16)
    assert resize_to(same, 16) is same


def test_shrinking_antialiases_by_default() -> None:
    """Thin structures survive a 4x reduction (plain bilinear would sample between them)."""
    x = _lines(32, 32, 4)
    out = resize_to(torch.from_numpy(x), 8)
    assert float(out.min()) > 0.1 and float(out.max()) < 0.5
    plain = resize_to(torch.from_numpy(x), 8, antialias=False)
    assert float(plain.max()) < 1e-6


def test_enlarging_is_plain_bilinear_unless_asked() -> None:
    x = torch.from_numpy(np.random.default_rng(1).random((1, 7, 9)).astype(np.float32))
    assert torch.equal(resize_to(x, 32), resize_to(x, 32, antialias=False))
    forced = resize_to(x, 32, antialias=True)
    torch.testing.assert_close(forced, resize_to(x, 32), rtol=0, atol=1e-5)


def test_ingest_resizes_in_plane_with_antialiasing() -> None:
    """``prepare`` (the cached array) uses the same resizer, antialiased, in-plane only."""
    x = _lines(32, 32, 4)[0]
    cached = prepare(x, "unit", size=8)
    expected = resize_to(x[None], 8, antialias=True)
    np.testing.assert_allclose(cached, expected, rtol=0, atol=1e-6)
    assert float(cached.min()) > 0.1
    vol = prepare(np.stack([x] * 5), "unit", size=8)
    assert vol.shape == (1, 5, 8, 8)
    small = np.random.default_rng(2).random((7, 9))
    enlarged = prepare(small, "unit", size=32)
    unit = to_cache_intensity(small, "unit")[None]
    np.testing.assert_array_equal(enlarged, resize_to(unit, 32, antialias=True))
    # the settings differ in their last bits when enlarging, so the check above has teeth
    assert not np.array_equal(enlarged, resize_to(unit, 32, antialias=False))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="dims"):
        resize_to(torch.zeros(1, 4, 4), 2, 4)
    with pytest.raises(ValueError, match="2-D"):
        resize_to(torch.zeros(1, 4, 4, 4), 2, 3, antialias=True)
