"""Every dashboard page under Streamlit's AppTest on a multi-label run: per-finding results on the
overview and the errors page, per-finding probabilities on the case page, the embedding coloured by
one finding, and the labelling page's one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medcl.data.manifest import read_manifest
from tests.app.test_pages import assert_clean, open_app, shown_text

PAGES = ("overview", "embedding", "case", "errors", "augment", "label")


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(multilabel_run: Path, monkeypatch: pytest.MonkeyPatch, page: str):
    at = open_app(monkeypatch, multilabel_run, page)
    assert_clean(at)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_for_the_multilabel_demo(
    multilabel_demo_run: Path, monkeypatch: pytest.MonkeyPatch, page: str
) -> None:
    """The real output of ``medcl demo --task multilabel --quick``: every page, and the headline
    and the overview in macro AUROC."""
    summary = json.loads((multilabel_demo_run / "run_summary.json").read_text())
    assert summary["task"] == "multilabel"
    assert summary["headline"].startswith("macro AUROC at 10 % labels")
    at = open_app(monkeypatch, multilabel_demo_run, page)
    assert_clean(at)
    if page == "overview":
        assert [m.label for m in at.metric] == ["Macro AUROC"]

        def not_json(name: str) -> None:
            raise AssertionError(f"results.json holds {name}, which is not JSON")

        text = (multilabel_demo_run / "efficiency" / "results.json").read_text()
        json.loads(text, parse_constant=not_json)
        table = next(d.value for d in at.dataframe if "finding" in d.value.columns)
        assert list(table["finding"]) == ["lesion", "nodule", "vessel"]


def test_overview_shows_macro_auroc_and_a_table_per_finding(
    multilabel_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_app(monkeypatch, multilabel_run, "overview")
    metrics = json.loads((multilabel_run / "metrics.json").read_text())
    assert [m.label for m in at.metric] == ["Macro AUROC"]
    assert "Per finding (test)" in [s.value for s in at.subheader]
    table = next(d.value for d in at.dataframe if "finding" in d.value.columns)
    assert list(table["finding"]) == ["bright", "dark", "bar"]
    for r in table.itertuples():
        f = metrics["findings"][r.finding]
        assert r.auroc == pytest.approx(f["auroc"]) and r.prevalence == pytest.approx(
            f["prevalence"]
        )
        assert [r.low, r.high] == pytest.approx(f["auroc_ci"])
    assert "ov_findings" in {c.key for c in at.get("plotly_chart")}
    counts = next(
        d.value for d in at.dataframe if "test (present/absent/unknown)" in d.value.columns
    )
    assert list(counts.index) == ["bright", "dark", "bar", "(unlabelled images)"]
    eff = next(d.value for d in at.dataframe if "method" in d.value.columns)
    assert set(eff["method"]) == {"supervised", "sscl"}, "the refused arm has no score"


def test_errors_page_lists_wrong_calls_per_finding(
    multilabel_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_app(monkeypatch, multilabel_run, "errors")
    assert_clean(at)
    heads = [s.value for s in at.subheader]
    assert heads == [
        "Per-finding metrics (test)",
        "ROC curve per finding (test)",
        "Findings to review",
    ]
    assert "err_roc" in {c.key for c in at.get("plotly_chart")}
    cases = at.dataframe[-1].value
    assert len(cases) and set(cases["status"]) <= {"missed", "false alarm"}
    at.multiselect(key="err_findings").set_value(["dark"]).run()
    assert_clean(at)
    assert set(at.dataframe[-1].value["finding"]) <= {"dark"}
    first = at.dataframe[-1].value["image_id"].iloc[0]
    at.session_state["err_table"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    at.button(key="err_open").click().run()
    assert_clean(at)
    assert at.radio[0].value == "case" and at.selectbox(key="case_id").value == first


def test_case_page_shows_a_probability_per_finding(
    multilabel_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_app(monkeypatch, multilabel_run, "case")
    assert_clean(at)
    table = next(d.value for d in at.dataframe if "finding" in d.value.columns)
    assert list(table["finding"]) == ["bright", "dark", "bar"]
    image_id = at.selectbox(key="case_id").value
    import pandas as pd

    emb = pd.read_parquet(multilabel_run / "embeddings.parquet").set_index("image_id")
    want = [emb.loc[image_id, f"prob_{n}"] for n in ("bright", "dark", "bar")]
    assert np.allclose(table["probability"], want)
    assert any(s.label == "Grad-CAM for finding" for s in at.selectbox)


def test_embedding_is_coloured_by_a_chosen_finding(
    multilabel_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_app(monkeypatch, multilabel_run, "embedding")
    at.selectbox(key="emb_color").set_value("finding").run()
    at.selectbox(key="emb_finding").set_value("bar").run()
    assert_clean(at)
    chart = next(c for c in at.get("plotly_chart") if c.key == "emb_chart")
    fig = json.loads(chart.proto.spec)
    names = {t["name"].split(" (")[0] for t in fig["data"]}
    assert names <= {"present", "absent", "unknown", "(unlabelled)"} and "present" in names
    assert fig["layout"]["legend"]["title"]["text"] == "bar"


def test_label_page_says_it_is_single_label_only(
    multilabel_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_app(monkeypatch, multilabel_run, "label")
    assert_clean(at)
    assert "multi-label" in at.info[0].value and not at.dataframe


def test_nothing_identifying_is_shown(multilabel_run: Path, monkeypatch: pytest.MonkeyPatch):
    df = read_manifest(multilabel_run / "data" / "split.csv").df
    sources = set(df["path"]) | set(df["cache_path"])
    for page in PAGES:
        text = shown_text(open_app(monkeypatch, multilabel_run, page))
        assert not [s for s in sources if s and s in text], page
