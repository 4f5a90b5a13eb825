"""The out-of-distribution checks one by one, against explicit references: the k-th neighbour
distance, k as recorded, the spacing tolerance's edges (in-plane and along z), 2-D/3-D."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from medcl.evaluate import ood
from medcl.models.description import ModelDescription
from medcl.models.encoders import EncoderSpec
from tests.evaluate.test_predict_ood import _loop_knn


def _description(dims: int = 2, size: int = 32, **record) -> ModelDescription:
    rec = {"modality": ["CT"], "spatial_dims": dims, "intensity": ["hu"], **record}
    return ModelDescription(
        spec=EncoderSpec("resnet10", dims, size),
        classes=["a", "b"],
        preset="ct",
        window=(40.0, 400.0),
        modality="CT",
        training_distribution=rec,
    )


def _rows(n: int = 1, **cols) -> pd.DataFrame:
    base = {
        "image_id": [f"i{k}" for k in range(n)],
        "source_id": [f"s{k}" for k in range(n)],
        "path": "",
        "modality": "CT",
        "intensity": "hu",
        "dims": 2,
        "rows": 64,
        "cols": 64,
        "slices": 1,
        "spacing_x": np.nan,
        "spacing_y": np.nan,
        "spacing_z": np.nan,
    }
    base.update(cols)
    return pd.DataFrame({k: v if isinstance(v, list) else [v] * n for k, v in base.items()})


@pytest.mark.parametrize("k", [1, 2, 5, 7])
def test_knn_distance_matches_a_loop(k):
    rng = np.random.default_rng(k)
    bank = ood.normalised(rng.normal(size=(9, 6)))
    emb = rng.normal(size=(5, 6)).astype(np.float32) * 3.0  # not normalised: normalised first
    got = ood.knn_distance(ood.normalised(emb), bank, k)
    assert np.allclose(got, _loop_knn(emb, bank, k), atol=1e-5)


def test_the_recorded_k_decides_the_flag():
    """One near-duplicate in the bank hides the query at k = 1, not at k = 5 (the design's
    reason for the 5th neighbour)."""
    rng = np.random.default_rng(0)
    query = rng.normal(size=(1, 8))
    bank = np.vstack([query + 1e-3 * rng.normal(size=(1, 8)), rng.normal(size=(6, 8))])
    bank = ood.normalised(bank)
    d1, d5 = _loop_knn(query, bank, 1)[0], _loop_knn(query, bank, 5)[0]
    threshold = (d1 + d5) / 2
    assert d1 < threshold < d5
    for k, flagged in ((1, False), (5, True)):
        desc = _description(embedding={"k": k, "threshold": threshold})
        flags = ood.check_rows(desc, _rows(), query, bank)
        assert (not flags.in_distribution[0]) is flagged, k
        assert ("embedding distance" in flags.reason[0]) is flagged


def _at(value_mm: float, size: int, pixels: int = 64) -> float:
    """The stored spacing whose value at the model's input size is ``value_mm``."""
    return value_mm * size / pixels


@pytest.mark.parametrize(
    ("factor", "flagged"),
    [(1.0, False), (1 - 1e-6, False), (1 + 1e-6, True)],
)
def test_pixel_spacing_tolerance_edges(factor, flagged):
    """In range up to exactly 10 % beyond the training range on either side, flagged past it."""
    desc = _description(
        pixel_spacing_mm={"min": 1.0, "max": 2.0, "at_image_size": 32, "tolerance": 0.1}
    )
    hi, lo = 2.0 * 1.1 * factor, 1.0 * 0.9 / factor
    for value in (hi, lo):
        rows = _rows(spacing_x=_at(value, 32), spacing_y=_at(1.5, 32))
        flags = ood.check_rows(desc, rows, None, None)
        assert (not flags.in_distribution[0]) is flagged, value
        assert ("pixel spacing" in flags.reason[0]) is flagged


def test_slice_spacing_is_checked_for_3d_models(tmp_path):
    """spacing_z × slices / image_size against the recorded range, with the same tolerance; a
    2-D model ignores z."""
    z = {"min": 2.0, "max": 4.0, "at_image_size": 16, "tolerance": 0.1}
    desc = _description(dims=3, size=16, slice_spacing_mm=z)

    def flags(spacing_z, slices=32):
        rows = _rows(dims=3, slices=slices, spacing_z=spacing_z)
        return ood.check_rows(desc, rows, None, None)

    # 32 slices resized to 16: a stored spacing s covers 2·s mm at the model's input
    assert flags(1.5).in_distribution[0]
    inside = flags(4.0 * 1.1 / 2 * (1 - 1e-6))
    assert inside.in_distribution[0]
    coarse = flags(4.0 * 1.1 / 2 * (1 + 1e-6))
    assert not coarse.in_distribution[0] and "slice spacing" in coarse.reason[0]
    fine = flags(2.0 * 0.9 / 2 * (1 - 1e-6))
    assert not fine.in_distribution[0] and "slice spacing" in fine.reason[0]
    assert flags(np.nan).in_distribution[0]  # unknown: not checked
    flat = _description(dims=2, size=16, slice_spacing_mm=z)
    assert ood.check_rows(flat, _rows(spacing_z=50.0), None, None).in_distribution[0]


def test_slice_spacing_is_recorded_for_3d_models():
    """describe_training records the slice-spacing range of the training volumes at the model's
    input size (a classifier stand-in that embeds zeros)."""

    class _Images:
        def __init__(self, n):
            self.images = torch.zeros(n, 1, 4, 4, 4)

    class _Clf:
        description = _description(dims=3, size=16)

        def images(self, rows):
            return _Images(len(rows))

        def embed(self, x):
            return torch.ones(len(x), 3) + torch.arange(len(x))[:, None]

    from medcl.data.manifest import Manifest, new_frame

    df = _rows(3, dims=3, slices=[32, 64, 32], spacing_z=[1.0, 1.0, 3.0])
    df["split"] = ["train", "train", "val"]
    df["label"] = ["a", "b", "a"]
    rec, _ = ood.describe_training(_Clf(), Manifest(new_frame(df.to_dict("records")), ["a", "b"]))
    assert rec["slice_spacing_mm"] == {
        "min": pytest.approx(2.0),
        "max": pytest.approx(4.0),
        "at_image_size": 16,
        "tolerance": 0.1,
    }


def test_2d_and_3d_mismatches():
    flat_rows = _rows(2, slices=1)
    three_d = ood.check_rows(_description(dims=3), flat_rows, None, None)
    assert list(three_d.in_distribution) == [False, False]
    assert all("2-D input, model is 3-D" in r for r in three_d.reason)
    assert ood.check_rows(_description(dims=3), _rows(slices=40), None, None).in_distribution[0]
    # two slices of one CT source file are a volume: a 2-D model trained on single images flags
    vol = _rows(2, source_id=["v", "v"])
    flagged = ood.check_rows(_description(volume_sources=False), vol, None, None)
    assert list(flagged.in_distribution) == [False, False]
    assert "3-D input, model is 2-D" in flagged.reason[0]
    trained_on_slices = ood.check_rows(_description(volume_sources=True), vol, None, None)
    assert list(trained_on_slices.in_distribution) == [True, True]
    single = ood.check_rows(_description(volume_sources=False), _rows(2), None, None)
    assert list(single.in_distribution) == [True, True]
