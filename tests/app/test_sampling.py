"""Downsampling of the embedding scatter keeps every labelled and selected point."""

from __future__ import annotations

import numpy as np
import pytest

from medcl.app.sampling import downsample_indices


def test_small_sets_are_drawn_whole() -> None:
    assert downsample_indices(50, 100).tolist() == list(range(50))


def test_keeps_every_kept_point_and_fills_to_cap() -> None:
    rng = np.random.default_rng(1)
    keep = rng.random(20_000) < 0.1
    idx = downsample_indices(20_000, 5_000, keep)
    assert len(idx) == 5_000
    assert set(np.flatnonzero(keep)) <= set(idx.tolist())
    assert np.all(np.diff(idx) > 0), "sorted, no duplicates"


def test_more_kept_points_than_cap_are_all_kept() -> None:
    keep = np.zeros(1000, dtype=bool)
    keep[:700] = True
    idx = downsample_indices(1000, 500, keep)
    assert idx.tolist() == list(range(700))


def test_selecting_shown_points_does_not_move_the_plot() -> None:
    n, cap = 10_000, 2_000
    labelled = np.zeros(n, dtype=bool)
    labelled[::50] = True
    shown = downsample_indices(n, cap, labelled)
    selected = np.zeros(n, dtype=bool)
    selected[shown[~labelled[shown]][:37]] = True  # a lasso over some shown unlabelled points
    again = downsample_indices(n, cap, labelled | selected)
    assert again.tolist() == shown.tolist()


def test_deterministic_and_validated() -> None:
    a = downsample_indices(1000, 100, seed=3)
    assert a.tolist() == downsample_indices(1000, 100, seed=3).tolist()
    with pytest.raises(ValueError, match="cap"):
        downsample_indices(10, 0)
    with pytest.raises(ValueError, match="shape"):
        downsample_indices(10, 5, np.zeros(3, dtype=bool))
