"""Summary tables, review cases, nearest neighbours and figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medcl.app import figures, overview
from medcl.app.cases import review_cases
from medcl.app.neighbours import nearest_neighbours
from medcl.evaluate.calibration import reliability_curve

METRICS = {
    "accuracy": 0.8,
    "balanced_accuracy": 0.75,
    "macro_auroc": 0.9,
    "macro_f1": 0.7,
    "ece": 0.05,
    "per_class": {
        "a": {
            "sensitivity": 0.9,
            "specificity": 0.6,
            "precision": None,
            "f1": 0.7,
            "auroc": 0.9,
            "support": 10,
        }
    },
    "confusion_matrix": [[9, 1], [3, 7]],
    "n": 20,
    "n_patients": 5,
    "intervals": {
        "balanced_accuracy": {"value": 0.75, "low": 0.6, "high": 0.88, "n_boot_valid": 100},
        "ece": {"value": 0.05, "low": None, "high": None, "n_boot_valid": 0},
    },
}


def test_metrics_tables() -> None:
    t = overview.metrics_table(METRICS)
    assert t["metric"].tolist() == [
        "Balanced accuracy",
        "Macro AUROC",
        "Macro F1",
        "Accuracy",
        "ECE",
    ]
    ba = t.iloc[0]
    assert (ba["value"], ba["low"], ba["high"]) == (0.75, 0.6, 0.88)
    assert overview.interval_text(0.75, 0.6, 0.88) == "0.750 [0.600, 0.880]"
    assert overview.interval_text(0.05, None, None) == "0.050"
    pc = overview.per_class_table(METRICS)
    assert pc.loc[0, "class"] == "a" and pc.loc[0, "precision"] is None


def test_a_binary_run_shows_auroc_and_its_operating_point() -> None:
    binary = {
        **METRICS,
        "auroc": 0.83,
        "auroc_ci": [0.7, 0.93],
        "threshold": 0.4,
        "sensitivity": 0.9,
        "specificity": 0.5,
        "intervals": {
            **METRICS["intervals"],
            "auroc": {"value": 0.83, "low": 0.7, "high": 0.93, "n_boot_valid": 98},
        },
    }
    t = overview.metrics_table(binary).set_index("metric")
    row = t.loc["AUROC (positive class)"]
    assert (row["value"], row["low"], row["high"]) == (0.83, 0.7, 0.93)
    assert t.loc["Sensitivity at the validation threshold", "value"] == 0.9
    assert t.loc["Specificity at the validation threshold", "value"] == 0.5
    assert list(t.index[:4]) == [
        "Balanced accuracy",
        "AUROC (positive class)",
        "Sensitivity at the validation threshold",
        "Specificity at the validation threshold",
    ]


def test_data_summary_counts_patients_images_labels() -> None:
    df = pd.DataFrame(
        {
            "patient_key": ["p1", "p1", "p2", "p3", "p4"],
            "split": ["train", "train", "train", "val", ""],
            "label": ["a", "", "", "b", ""],
        }
    )
    s = overview.data_summary(df).set_index("split")
    assert s.loc["train", "patients"] == 2 and s.loc["train", "images"] == 3
    assert s.loc["train", "labelled_share"] == pytest.approx(1 / 3)
    assert s.loc["unassigned", "images"] == 1
    assert s.loc["all", "labelled"] == 2
    counts = overview.class_counts(df, ["a", "b"])
    assert counts.loc["a", "train"] == 1 and counts.loc["(unlabelled)", "train"] == 2


def test_config_summary_hides_paths() -> None:
    cfg = {
        "out": "/home/x/runs",
        "data": {"manifest": "/secret/PATIENT/split.csv", "image_size": 64},
        "augment": {"preset": "auto", "options": {}},
        "model": {"encoder": "resnet10"},
    }
    s = overview.config_summary(cfg)
    assert "/secret" not in s.to_string() and "/home" not in s.to_string()
    assert ("data", "image_size", "64") in set(map(tuple, s.to_numpy()))


def test_efficiency_table_leaves_paths_out() -> None:
    res = {
        "metric": "balanced_accuracy",
        "records": [
            {
                "method": "sscl",
                "label_fraction": 0.1,
                "seed": 0,
                "model_dir": "/x/model",
                "n_labelled_images": 14,
                "metrics": METRICS,
            }
        ],
    }
    t = overview.efficiency_table(res)
    assert t.loc[0, "value"] == 0.75 and t.loc[0, "low"] == 0.6
    assert "model_dir" not in t.columns
    fig = figures.efficiency_figure(t, "balanced_accuracy")
    assert len(fig.data) == 1


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d", "e"],
            "patient_key": ["p"] * 5,
            "split": ["test", "test", "test", "val", "train"],
            "label": ["x", "y", "x", "x", ""],
            "labelled": [True, True, True, True, False],
            "prediction": ["x", "x", "x", "y", "x"],
            "confidence": [0.9, 0.7, 0.4, 0.8, 0.5],
            "correct": pd.array([True, False, True, False, None], dtype="boolean"),
            "prob_x": [0.9, 0.7, 0.4, 0.2, 0.5],
            "prob_y": [0.1, 0.3, 0.6, 0.8, 0.5],
            "pca_x": [0.0, 1, 2, 3, 4],
            "pca_y": [0.0, 1, 2, 3, 4],
        }
    )


def test_review_cases() -> None:
    t = _table()
    r = review_cases(t, ["test"], misclassified=True, below=0.5)
    assert r["image_id"].tolist() == ["c", "b"]  # least confident first
    assert r.set_index("image_id").loc["b", "status"] == "misclassified"
    assert r.set_index("image_id").loc["c", "status"] == "low confidence"
    assert r.set_index("image_id").loc["b", "p_true"] == pytest.approx(0.3)
    assert review_cases(t, ["test", "val"], below=None)["image_id"].tolist() == ["b", "d"]
    assert review_cases(t, ["test", "val"], true_classes=["x"])["image_id"].tolist() == ["d"]
    assert review_cases(t, ["test"], predicted_classes=["y"]).empty


def test_nearest_neighbours() -> None:
    v = np.array([[1.0, 0], [0.9, 0.1], [0, 1], [-1, 0], [1.0, 0.0]])
    idx, sim = nearest_neighbours(v, 0, 2)
    assert idx.tolist() == [4, 1] and sim[0] == pytest.approx(1.0)
    idx, _ = nearest_neighbours(v, 0, 10, candidates=np.array([1, 1, 1, 0, 0], bool))
    assert idx.tolist() == [1, 2]
    assert nearest_neighbours(v, 0, 0)[0].size == 0


@pytest.mark.parametrize("by", list(figures.COLOUR_MODES))
def test_embedding_figure_every_colour_mode(by: str) -> None:
    t = _table()
    fig = figures.embedding_figure(t, "pca", by, ["x", "y"], "PCA")
    assert all(tr.type == "scattergl" for tr in fig.data)
    ids = [cd[0] for tr in fig.data for cd in tr.customdata]
    assert sorted(ids) == sorted(t["image_id"])


def test_colour_values_and_many_categories() -> None:
    t = _table()
    assert figures.colour_values(t, "correct").tolist() == [
        "correct",
        "wrong",
        "correct",
        "wrong",
        "unlabelled",
    ]
    assert figures.colour_values(t, "label").iloc[4] == figures.UNLABELLED
    big = pd.concat([t] * 10, ignore_index=True)
    big["patient_key"] = [f"p{i}" for i in range(len(big))]
    fig = figures.embedding_figure(big, "pca", "patient")
    assert len(fig.data) == 1 and not fig.data[0].showlegend
    with pytest.raises(ValueError):
        figures.colour_values(t, "age")


def test_selected_ids_from_selection_events() -> None:
    event = {
        "selection": {
            "points": [
                {"customdata": ["a", "x"]},
                {"customdata": ["b"]},
                {"customdata": ["a", "x"]},
                {"x": 1},
            ]
        }
    }
    assert figures.selected_ids(event) == ["a", "b"]
    assert figures.selected_ids(None) == []
    assert figures.selected_ids({"selection": {"points": []}}) == []


def test_other_figures() -> None:
    fig = figures.confusion_figure([[9, 1], [3, 7]], ["a", "b"], normalise=True)
    assert np.allclose(np.asarray(fig.data[0].z).sum(axis=1), 1.0)
    y = np.array([0, 1, 1, 0])
    p = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.55, 0.45]])
    fig = figures.reliability_figure(reliability_curve(y, p, n_bins=10))
    assert len(fig.data) == 4
    fig = figures.probability_figure([0.2, 0.8], ["a", "b"], "b")
    assert list(fig.data[0].x) == [0.2, 0.8]
