"""Every dashboard page under Streamlit's AppTest, on a quick demo run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from medcl.data.manifest import read_manifest

APP = str(Path(__file__).resolve().parents[2] / "apps" / "dashboard.py")
TIMEOUT = 180


def open_app(monkeypatch: pytest.MonkeyPatch, run_dir: Path | None, page: str = "") -> AppTest:
    if run_dir is None:
        monkeypatch.delenv("MEDCL_RUN_DIR", raising=False)
    else:
        monkeypatch.setenv("MEDCL_RUN_DIR", str(run_dir))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if page:
        at.query_params["page"] = page
    return at.run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def shown_text(at: AppTest) -> str:
    """Everything a user can read on the page (text elements, tables, widget options)."""
    parts: list[str] = []
    for group in (
        at.markdown,
        at.caption,
        at.header,
        at.subheader,
        at.title,
        at.code,
        at.info,
        at.warning,
        at.metric,
    ):
        parts += [str(getattr(e, "value", "")) for e in group]
    for d in at.dataframe:
        parts.append(d.value.to_csv())
    for w in (*at.selectbox, *at.multiselect, *at.radio):
        parts += [str(o) for o in w.options]
    return "\n".join(parts)


def test_overview(demo_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_app(monkeypatch, demo_run, "overview")
    assert_clean(at)
    assert at.header[0].value == "Overview"
    assert [m.label for m in at.metric][:2] == ["Balanced accuracy", "Macro AUROC"]
    subheaders = [s.value for s in at.subheader]
    assert {"Test metrics", "Data", "Configuration", "Label efficiency"} <= set(subheaders)
    data = next(d.value for d in at.dataframe if "patients" in d.value.columns)
    assert list(data["split"]) == ["train", "val", "test", "all"]
    assert at.get("plotly_chart"), "label-efficiency chart"
    assert at.radio[0].value == "overview"
    # the demo's split was checked for near-duplicates across splits (phantoms: none)
    assert (demo_run / "data" / "split.leaks.csv").is_file()
    assert any("No suspected near-duplicate" in c.value for c in at.caption)


def test_overview_lists_suspected_leaks(demo_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A leak report with a pair: a warning and the pair by pseudonymous ids and distance."""
    import streamlit as st

    import medcl.data.leaks

    pair = pd.DataFrame(
        [["aaaa1111", "train", "bbbb2222", "test", 3, float("nan"), "hash"]],
        columns=[
            "image_id_a",
            "split_a",
            "image_id_b",
            "split_b",
            "hash_bits",
            "cosine",
            "found_by",
        ],
    )
    monkeypatch.setattr(medcl.data.leaks, "read_leak_report", lambda path: pair)
    st.cache_resource.clear()
    try:
        at = open_app(monkeypatch, demo_run, "overview")
        assert_clean(at)
        assert any("1 suspected near-duplicate image pair" in w.value for w in at.warning)
        shown = next(d.value for d in at.dataframe if "image_id_b" in d.value.columns)
        assert list(shown["image_id_b"]) == ["bbbb2222"] and list(shown["hash_bits"]) == [3]
    finally:
        st.cache_resource.clear()


def test_embedding_explorer_colour_and_selection(
    demo_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_app(monkeypatch, demo_run, "embedding")
    assert_clean(at)
    assert at.header[0].value == "Embedding explorer"
    assert at.get("plotly_chart")[0].key == "emb_chart"
    assert at.selectbox(key="emb_proj").options == ["PCA", "t-SNE"]
    for by in ("prediction", "correct", "split", "labelled", "patient", "label"):
        at.selectbox(key="emb_color").set_value(by).run()
        assert_clean(at)
    at.selectbox(key="emb_proj").set_value("tsne").run()
    assert_clean(at)
    assert at.info, "hint to select points"
    # a lasso selection: the chart's state carries the points' image ids
    ids = list(pd.read_parquet(demo_run / "embeddings.parquet")["image_id"][:5])
    points = [{"customdata": [i, "", "", 0.5, ""]} for i in ids]
    at.session_state["emb_chart"] = {
        "selection": {"points": points, "point_indices": [], "box": [], "lasso": []}
    }
    at.run()
    assert_clean(at)
    assert at.subheader[0].value == "5 selected"
    assert len(at.image) == 5, "one thumbnail per selected image"
    table = at.dataframe[0].value
    assert sorted(table["image_id"]) == sorted(ids) and "path" not in table.columns
    at.selectbox(key="emb_open").set_value(ids[2]).run()
    at.button(key="emb_open_btn").click().run()
    assert_clean(at)
    assert at.radio[0].value == "case"
    assert at.selectbox(key="case_id").value == ids[2]


def test_case_viewer(demo_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_app(monkeypatch, demo_run, "case")
    assert_clean(at)
    assert at.header[0].value == "Case viewer"
    assert at.subheader[0].value == "Prediction"
    captions = [i.proto.imgs[0].caption for i in at.image]
    assert captions[0] == "image" and captions[1].startswith("Grad-CAM for")
    assert any(s.value.startswith("Nearest neighbours") for s in at.subheader)
    nn = at.dataframe[-1].value
    assert len(nn) == 8 and "similarity" in nn.columns
    # choose another case, another Grad-CAM class, fewer neighbours among labelled images
    last = at.selectbox(key="case_id").options[-1].split(" · ")[0]  # options show "id · split …"
    at.selectbox(key="case_id").set_value(last).run()
    assert_clean(at)
    assert at.dataframe[0].value.set_index("")["value"]["image_id"] == last
    at.radio[0].set_value("overview").run()
    at.radio[0].set_value("case").run()
    assert at.selectbox(key="case_id").value == last, "the case survives a page switch"
    cam = next(s for s in at.selectbox if s.label == "Grad-CAM for class")
    cam.set_value(cam.options[-1]).run()
    at.slider(key="case_k").set_value(3).run()
    at.selectbox(key="case_pool").set_value("labelled images").run()
    assert_clean(at)
    nn = at.dataframe[-1].value
    assert len(nn) == 3 and (nn["label"] != "(unlabelled)").all()
    at.button(key="case_nn_btn").click().run()
    assert_clean(at)
    assert at.selectbox(key="case_id").value == nn["image_id"].iloc[0]


def test_errors_and_calibration(demo_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_app(monkeypatch, demo_run, "errors")
    assert_clean(at)
    heads = [s.value for s in at.subheader]
    assert heads[:3] == [
        "Confusion matrix (test)",
        "Per-class metrics",
        "Reliability diagram (test)",
    ]
    charts = {c.key for c in at.get("plotly_chart")}
    assert {"err_cm", "err_rel"} <= charts
    at.toggle(key="err_norm").set_value(True).run()
    at.slider(key="err_below").set_value(1.0).run()
    assert_clean(at)
    cases = at.dataframe[-1].value
    test_n = json.loads((demo_run / "metrics.json").read_text())["n"]
    assert len(cases) == test_n, "every test case is below confidence 1.0"
    at.session_state["err_table"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    at.button(key="err_open").click().run()
    assert_clean(at)
    assert at.radio[0].value == "case"
    assert at.selectbox(key="case_id").value == cases["image_id"].iloc[0]


def test_augmentations(demo_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_app(monkeypatch, demo_run, "augment")
    assert_clean(at)
    assert at.header[0].value == "Augmentations"
    chosen = at.multiselect(key="aug_ids").value
    assert 1 <= len(chosen) <= 3
    assert len(at.image) == len(chosen)
    assert len(at.image[0].proto.imgs) == 5, "original + 4 views"
    at.slider(key="aug_views").set_value(2).run()
    at.number_input(key="aug_seed").set_value(7).run()
    assert_clean(at)
    assert len(at.image[0].proto.imgs) == 3


def test_label_next(demo_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_app(monkeypatch, demo_run, "label")
    assert_clean(at)
    assert at.header[0].value == "Label next"
    assert any("diversity" in m.value for m in at.markdown), "the formula is on the page"
    ranked = at.dataframe[0].value
    assert len(ranked) == 50 and list(ranked["rank"][:3]) == [1, 2, 3]
    assert ranked["score"].is_monotonic_decreasing
    man = read_manifest(demo_run / "data" / "split.csv").df.set_index("image_id")
    assert (man.loc[ranked["image_id"], "split"] == "train").all()
    assert (man.loc[ranked["image_id"], "label"] == "").all()
    assert at.download_button(key="lab_download").label.startswith("Download")
    assert "medcl import-labels" in at.code[0].value
    at.slider(key="lab_beta").set_value(0.0).run()
    at.selectbox(key="lab_unc").set_value("margin").run()
    at.number_input(key="lab_budget").set_value(5).run()
    assert_clean(at)
    ranked = at.dataframe[0].value
    assert len(ranked) == 5
    assert ranked["uncertainty"].is_monotonic_decreasing, "beta = 0 ranks by uncertainty"


def test_page_navigation_from_the_sidebar(demo_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_app(monkeypatch, demo_run)
    assert at.radio[0].value == "overview"
    for page in ("embedding", "case", "errors", "augment", "label", "overview"):
        at.radio[0].set_value(page).run()
        assert_clean(at)
        assert at.query_params.get("page") == page


def test_nothing_identifying_is_shown(demo_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    df = read_manifest(demo_run / "data" / "split.csv").df
    sources = set(df["path"]) | set(df["cache_path"])
    raw = {Path(p).parts[-4] for p in df["path"] if len(Path(p).parts) >= 4}  # e.g. P0001
    for page in ("overview", "embedding", "case", "errors", "augment", "label"):
        text = shown_text(open_app(monkeypatch, demo_run, page))
        leaked = [s for s in sources | raw if s and s in text]
        assert not leaked, f"{page} shows {leaked[:3]}"


def test_run_without_embeddings_shows_warnings(
    demo_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "partial"
    run.mkdir()
    for name in ("run_summary.json", "metrics.json", "config.yaml"):
        shutil.copy2(demo_run / name, run / name)
    summary = json.loads((run / "run_summary.json").read_text())
    summary["manifest"] = str(demo_run / "data" / "split.csv")
    (run / "run_summary.json").write_text(json.dumps(summary))
    for page in ("overview", "embedding", "case", "errors", "augment", "label"):
        at = open_app(monkeypatch, run, page)
        assert not at.exception, (page, [e.value for e in at.exception])
        if page != "overview":
            assert at.warning, f"{page}: expected a warning"
            assert any("embeddings.parquet" in w.value for w in at.warning)


def test_bad_run_folder_is_an_error_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_app(monkeypatch, tmp_path / "missing")
    assert not at.exception
    assert "run folder not found" in at.error[0].value


def test_without_argument_offers_runs(
    demo_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    at = open_app(monkeypatch, None)
    assert not at.exception
    assert "No run folder given" in at.warning[0].value
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "demo").symlink_to(demo_run, target_is_directory=True)
    at = open_app(monkeypatch, None)
    assert_clean(at)
    assert at.sidebar.selectbox[0].label == "Run"
    assert at.header[0].value == "Overview"


def _chart_ids(at: AppTest) -> list[str]:
    """Image ids of the points the embedding chart draws (its Plotly spec, as sent)."""
    (chart,) = [c for c in at.get("plotly_chart") if c.key == "emb_chart"]
    spec = json.loads(chart.proto.spec)
    return [cd[0] for trace in spec["data"] for cd in trace.get("customdata", [])]


def test_pages_at_20000_images(
    big_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every page works on a 20,000-image run; the embedding chart draws the capped sample.

    The server-side time of each page is printed (no limit here: it depends on the machine).
    """
    import time

    table = pd.read_parquet(big_run / "embeddings.parquet", columns=["image_id", "labelled"])
    labelled = set(table.loc[table["labelled"], "image_id"])
    seconds = {}
    runs = [
        ("embedding, cold", "embedding"),
        ("embedding, warm", "embedding"),
        ("case", "case"),
        ("errors", "errors"),
        ("label", "label"),
        ("overview", "overview"),
    ]
    for name, page in runs:
        start = time.perf_counter()
        at = open_app(monkeypatch, big_run, page)
        seconds[name] = round(time.perf_counter() - start, 2)
        assert_clean(at)
        if page == "embedding":
            assert "Showing 10,000 of 20,000 points" in at.caption[0].value
            drawn = _chart_ids(at)
            assert len(drawn) == len(set(drawn)) == 10_000
            assert labelled <= set(drawn), "every labelled point is drawn"
            assert set(drawn) <= set(table["image_id"])
        if page == "label":
            ranked = at.dataframe[0].value
            assert len(ranked) == 50 and not set(ranked["image_id"]) & labelled
        if page == "case":
            assert at.image, "the case image is shown"
    with capsys.disabled():
        print(f"\nAppTest script time at 20,000 images (s): {seconds}")


def test_volumes_have_a_slice_slider(volume_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_app(monkeypatch, volume_run, "case")
    assert_clean(at)
    slider = next(s for s in at.slider if s.label == "Slice")
    assert (slider.min, slider.max, slider.value) == (0, 7, 4)
    slider.set_value(2).run()
    assert_clean(at)
    assert at.image[1].proto.imgs[0].caption.startswith("Grad-CAM for")
    at = open_app(monkeypatch, volume_run, "augment")
    assert_clean(at)
    assert any("middle slice" in c.value for c in at.caption)
    assert len(at.image[0].proto.imgs) == 5
    for page in ("overview", "embedding", "errors", "label"):
        at = open_app(monkeypatch, volume_run, page)
        assert not at.exception, (page, [e.value for e in at.exception])
    assert any(
        "metrics.json" in w.value or "metrics" in w.value
        for w in open_app(monkeypatch, volume_run, "overview").warning
    )
