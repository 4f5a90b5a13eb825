"""What the dashboard pages compute, as plain functions: joins, orders, pools, ranking, pages."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medcl.app import acquisition
from medcl.app.augment import augment_pool, default_images
from medcl.app.cases import calibration_rows, case_order, present_splits
from medcl.app.neighbours import label_votes, neighbour_candidates, neighbour_table
from medcl.app.run import MANIFEST_COLUMNS, file_stamp, find_row, with_manifest_columns


def table() -> pd.DataFrame:
    """Six images: two test, one val, two train (one labelled), one unassigned."""
    return pd.DataFrame(
        {
            "image_id": ["t2", "t1", "v1", "r2", "r1", "u1"],
            "patient_key": ["p1", "p1", "p2", "p3", "p4", "p5"],
            "split": ["test", "test", "val", "train", "train", ""],
            "label": ["a", "b", "a", "", "b", ""],
            "labelled": [True, True, True, False, True, False],
            "prediction": ["a", "a", "b", "b", "b", "a"],
            "confidence": [0.9, 0.6, 0.7, 0.55, 0.8, 0.5],
            "prob_a": [0.9, 0.6, 0.3, 0.45, 0.2, 0.5],
            "prob_b": [0.1, 0.4, 0.7, 0.55, 0.8, 0.5],
        }
    )


def test_with_manifest_columns_joins_image_columns_only() -> None:
    manifest = pd.DataFrame(
        {
            "image_id": ["t1", "t1", "r1"],
            "path": ["/src/P0001/x.dcm"] * 3,
            "modality": ["MR"] * 3,
            "dims": [2] * 3,
            "rows": [32] * 3,
            "cols": [32] * 3,
            "slices": [1] * 3,
            "cache_path": ["/c/t1.npy", "/c/t1-copy.npy", None],
        }
    )
    out = with_manifest_columns(table(), manifest)
    assert len(out) == 6 and "path" not in out.columns
    assert set(MANIFEST_COLUMNS) <= set(out.columns)
    paths = dict(zip(out["image_id"], out["cache_path"], strict=True))
    assert paths["t1"] == "/c/t1.npy"  # the first of duplicated ids
    assert paths["r1"] == "" and paths["u1"] == ""
    bare = with_manifest_columns(table(), None)
    assert (bare["cache_path"] == "").all()


def test_find_row_and_file_stamp(tmp_path: Path) -> None:
    t = table()
    assert find_row(t, "v1")["split"] == "val"
    assert find_row(t, "nope") is None
    f = tmp_path / "x.json"
    assert file_stamp(f) == 0 and file_stamp(None) == 0
    f.write_text("{}")
    os.utime(f, ns=(1_000_000_000, 2_000_000_000))
    assert file_stamp(f) == 2_000_000_000


def test_split_order_and_calibration_rows() -> None:
    t = table()
    assert present_splits(t) == ["test", "val", "train", ""]
    assert present_splits(t, unassigned=False) == ["test", "val", "train"]
    assert present_splits(t[t["split"] != "val"]) == ["test", "train", ""]
    odd = pd.concat([t, t.head(1).assign(image_id="x0", split="holdout")])
    assert list(case_order(odd)["image_id"]) == ["t1", "t2", "v1", "r1", "r2", "u1", "x0"]
    assert "_order" not in case_order(t).columns
    assert list(calibration_rows(t, ["a", "b"], "test")["image_id"]) == ["t2", "t1"]
    assert list(calibration_rows(t, ["a"], "test")["image_id"]) == ["t2"]
    assert calibration_rows(t, ["a", "b"], "train")["image_id"].tolist() == ["r1"]


def test_neighbour_pools_table_and_votes() -> None:
    t = table()
    assert neighbour_candidates(t, "all images").all()
    np.testing.assert_array_equal(
        neighbour_candidates(t, "labelled images"), [True, True, True, False, True, False]
    )
    np.testing.assert_array_equal(
        neighbour_candidates(t, "labelled training images"), [0, 0, 0, 0, 1, 0]
    )
    with pytest.raises(ValueError, match="pool"):
        neighbour_candidates(t, "everything")
    nn = neighbour_table(t, np.array([3, 0, 1]), np.array([0.98766, 0.5, 0.25]), "(none)")
    assert list(nn.columns) == [
        "similarity",
        "image_id",
        "patient_key",
        "split",
        "label",
        "prediction",
    ]
    np.testing.assert_allclose(nn["similarity"], [0.9877, 0.5, 0.25], rtol=0, atol=1e-12)
    assert list(nn["label"]) == ["(none)", "a", "b"]
    assert label_votes(pd.Series(["b", "(none)", "a", "b"]), "(none)") == (
        "Labels among the neighbours: b 2, a 1"
    )
    assert label_votes(pd.Series(["(none)"]), "(none)") == ""


def test_labelling_pools_and_ranking_table() -> None:
    t = table()
    cand, ref = acquisition.labelling_pools(t)
    np.testing.assert_array_equal(cand, [0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(ref, [0, 0, 0, 0, 1, 0])
    # two unlabelled training candidates: the uncertain one (0.5/0.5) first at beta = 0
    t.loc[5, "split"] = "train"
    cand, ref = acquisition.labelling_pools(t)
    vectors = np.eye(6, 3)
    ranked = acquisition.ranking_table(t, ["a", "b"], vectors, cand, ref, 5, 0.0, "margin")
    assert list(ranked.columns) == list(acquisition.RANKING_COLUMNS)
    assert list(ranked["rank"]) == [1, 2] and list(ranked["image_id"]) == ["u1", "r2"]
    np.testing.assert_allclose(ranked["uncertainty"], [1.0, 0.9], atol=1e-12)
    assert list(ranked["predicted"]) == ["a", "b"] and ranked["confidence"].dtype == np.float64


def test_augment_pool_and_default_images() -> None:
    t = table().assign(cache_path=["/c/1", "/c/2", "/c/3", "/c/4", "", "/c/6"])
    pool = augment_pool(t)
    assert list(pool["image_id"]) == ["r2"]  # training rows with a cached array
    assert default_images(pool) == ["r2"]  # no labelled one: the first
    no_train = t[t["split"] != "train"]
    pool = augment_pool(no_train)
    assert list(pool["image_id"]) == ["t2", "t1", "v1", "u1"]
    assert default_images(pool) == ["t2", "t1"]  # one labelled image per class
    assert default_images(pool, n=1) == ["t2"]
    assert augment_pool(t.assign(cache_path="")).empty


def test_page_registry_and_query() -> None:
    from medcl.app.pages import PAGES, RENDER, page_from_query

    assert list(PAGES) == ["overview", "embedding", "case", "errors", "augment", "label"]
    assert set(RENDER) == set(PAGES) and all(callable(f) for f in RENDER.values())
    assert page_from_query("case") == "case"
    assert page_from_query(" Label next ") == "label"
    assert page_from_query("EMBEDDING EXPLORER") == "embedding"
    assert page_from_query("") == "overview" and page_from_query("nope") == "overview"
