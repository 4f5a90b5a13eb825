"""Locating and reading a run folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medcl.app.run import (
    available_projections,
    class_names,
    find_runs,
    open_run,
    probabilities,
    read_embeddings,
    run_dir_argument,
)
from medcl.errors import MedclError
from medcl.evaluate.embed import write_embeddings


def small_table(n: int = 6, classes: tuple[str, ...] = ("a", "b")) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(len(classes)), n)
    labels = np.array([classes[i % len(classes)] if i % 3 else "" for i in range(n)])
    pred = np.asarray(classes)[p.argmax(1)]
    t = pd.DataFrame(
        {
            "image_id": [f"i{i}" for i in range(n)],
            "patient_key": [f"p{i // 2}" for i in range(n)],
            "split": ["train", "train", "val", "test", "test", "train"][:n],
            "label": labels,
            "labelled": labels != "",
            "prediction": pred,
            "confidence": p.max(1),
        }
    )
    t["correct"] = np.where(t["labelled"], t["label"] == t["prediction"], None)
    for k, c in enumerate(classes):
        t[f"prob_{c}"] = p[:, k]
    t["embedding"] = list(rng.normal(size=(n, 4)).astype(np.float32))
    t["pca_x"], t["pca_y"] = rng.normal(size=n), rng.normal(size=n)
    return t


def make_run(root: Path, **summary: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    s = {"kind": "medcl-run", "embeddings": "embeddings.parquet", "metrics": "metrics.json"}
    s.update(summary)
    (root / "run_summary.json").write_text(json.dumps(s))
    return root


def test_open_run_and_paths(tmp_path: Path) -> None:
    run = open_run(make_run(tmp_path / "r"))
    assert run.name == "r"
    assert run.path("embeddings") == (tmp_path / "r" / "embeddings.parquet").resolve()
    assert run.existing("embeddings") is None
    assert run.path("model") is None


def test_entries_outside_the_run_folder_are_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.json").write_text("{}")
    run = open_run(
        make_run(
            tmp_path / "r", metrics="../secret.json", manifest="../m.csv", config="/etc/passwd"
        )
    )
    with pytest.raises(MedclError, match="outside the run folder"):
        run.path("metrics")
    with pytest.raises(MedclError, match="outside the run folder"):
        run.path("config")
    assert run.path("manifest") == (tmp_path / "m.csv").resolve()  # the manifest may be shared


def test_open_run_errors(tmp_path: Path) -> None:
    with pytest.raises(MedclError, match="run folder not found"):
        open_run(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedclError, match="no run_summary.json"):
        open_run(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run_summary.json").write_text("{not json")
    with pytest.raises(MedclError, match="not readable JSON"):
        open_run(tmp_path / "bad")


def test_find_runs(tmp_path: Path) -> None:
    make_run(tmp_path / "runs" / "a")
    make_run(tmp_path / "runs" / "group" / "b")
    (tmp_path / "runs" / "c").mkdir()
    assert find_runs(tmp_path / "runs") == [
        tmp_path / "runs" / "a",
        tmp_path / "runs" / "group" / "b",
    ]
    assert find_runs(tmp_path / "none") == []


def test_run_dir_argument() -> None:
    script = Path(__file__)
    assert run_dir_argument([str(script), "/runs/x"], script, {}) == "/runs/x"
    # under a test runner argv belongs to the runner
    assert run_dir_argument(["pytest", "-q"], script, {}) is None
    assert run_dir_argument(["pytest", "-q"], script, {"MEDCL_RUN_DIR": "/r"}) == "/r"
    assert run_dir_argument([str(script)], script, {"MEDCL_RUN_DIR": " "}) is None


def test_read_embeddings_round_trip(tmp_path: Path) -> None:
    t = small_table()
    write_embeddings(t, tmp_path / "e.parquet")
    df, vectors = read_embeddings(tmp_path / "e.parquet")
    assert "embedding" not in df.columns
    np.testing.assert_allclose(vectors, np.stack(t["embedding"]), atol=1e-6)
    assert str(df["correct"].dtype) == "boolean"
    assert df["correct"].isna().sum() == (~t["labelled"]).sum()
    assert available_projections(df) == ["pca"]
    assert class_names(df) == ["a", "b"]
    assert class_names(df, ["b", "a"]) == ["b", "a"]
    assert probabilities(df, ["a", "b"]).shape == (6, 2)
    with pytest.raises(MedclError, match="prob_c"):
        probabilities(df, ["a", "c"])


def test_read_embeddings_errors(tmp_path: Path) -> None:
    with pytest.raises(MedclError, match="embeddings not found"):
        read_embeddings(tmp_path / "missing.parquet")
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(MedclError, match="not a readable Parquet"):
        read_embeddings(tmp_path / "x.parquet")
    small_table().drop(columns=["prediction"]).to_parquet(tmp_path / "y.parquet")
    with pytest.raises(MedclError, match="missing column"):
        read_embeddings(tmp_path / "y.parquet")
