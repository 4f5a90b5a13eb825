"""`medcl predict`'s calls: a binary model's class at its validation threshold, a multi-label
model's probability and 0/1 call per finding at each finding's own threshold."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pandas as pd
import pytest
from pydicom.data import get_testdata_file

from medcl.config import load_config
from medcl.data.manifest import read_manifest
from medcl.evaluate.finetune import finetune
from medcl.evaluate.model import save_model
from medcl.evaluate.predict import predict_source, prediction_columns
from tests.conftest import FINDINGS, TINY_OVERRIDES, make_multilabel_manifest


@pytest.fixture(scope="module")
def findings_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlpred")
    m = read_manifest(make_multilabel_manifest(root / "data"))
    cfg = load_config(None, [*TINY_OVERRIDES, "finetune.mode=knn", "trainer.accelerator=cpu"])
    clf = finetune(cfg, m).model
    save_model(root / "model", clf)
    return root / "model", clf


def test_binary_call_at_the_stored_threshold(findings_model):
    _, clf = findings_model
    d = dataclasses.replace(
        clf.description,
        task="multiclass",
        classes=["benign", "malignant"],
        finding_thresholds=None,
        operating_point={"threshold": 0.8},
    )
    proba = np.array([[0.1, 0.9], [0.25, 0.75], [0.6, 0.4], [0.2, 0.8]])
    cols = prediction_columns(d, proba)
    assert list(cols["prediction"]) == ["malignant", "malignant", "benign", "malignant"]
    assert list(cols["call"]) == ["malignant", "benign", "benign", "malignant"]  # p >= 0.8
    no_point = prediction_columns(dataclasses.replace(d, operating_point=None), proba)
    assert list(no_point["call"]) == ["malignant", "malignant", "benign", "malignant"]
    three = dataclasses.replace(d, classes=["a", "b", "c"])
    assert "call" not in prediction_columns(three, np.full((2, 3), 1 / 3))


def test_multilabel_calls_per_finding(findings_model):
    _, clf = findings_model
    names = ["bright", "dark", "bar"]
    d = dataclasses.replace(
        clf.description,
        finding_thresholds={"findings": {"bright": {"threshold": 0.3}, "bar": {"threshold": 0.9}}},
    )
    proba = np.array([[0.35, 0.6, 0.95], [0.1, 0.4, 0.85], [0.3, 0.5, 0.9]])
    cols = prediction_columns(d, proba)
    # dark has no stored threshold: 0.5
    expected = np.array([[1, 1, 1], [0, 0, 0], [1, 1, 1]])
    for k, name in enumerate(names):
        assert list(cols[f"call_{name}"]) == list(expected[:, k])
        np.testing.assert_array_equal(cols[f"prob_{name}"], proba[:, k])
    assert list(cols["prediction"]) == ["bright|dark|bar", "-", "bright|dark|bar"]
    assert "confidence" not in cols


def test_predict_writes_a_column_pair_per_finding(findings_model, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCL_SECRET_FILE", str(tmp_path / "private" / "secret.key"))
    model_dir, clf = findings_model
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(get_testdata_file("MR_small.dcm"), src / "mr.dcm")
    out = tmp_path / "preds.csv"
    assert predict_source(model_dir, src, out) == 1
    t = pd.read_csv(out)
    ops = clf.description.finding_thresholds["findings"]
    for name in FINDINGS:
        p = t[f"prob_{name}"].to_numpy()
        assert ((p >= 0) & (p <= 1)).all()
        want = (p >= ops[name]["threshold"]).astype(int)
        np.testing.assert_array_equal(t[f"call_{name}"].to_numpy(), want)


def test_embeddings_and_bundle_metadata_of_findings(findings_model, tmp_path):
    from medcl.evaluate.bundle import bundle_metadata
    from medcl.evaluate.embed import embed_manifest

    _, clf = findings_model
    meta = bundle_metadata(clf.description)
    assert meta["task"].startswith("multi-label classification of 3 findings")
    assert "sigmoid" in meta["pred_classes"]
    m = read_manifest(make_multilabel_manifest(tmp_path / "data"))
    t = embed_manifest(clf, m)
    proba = clf.predict_proba(clf.images(m).images).numpy()
    np.testing.assert_allclose(t[[f"prob_{f}" for f in FINDINGS]].to_numpy(), proba, atol=1e-5)
    unknown = t["label"].str.contains("?", regex=False)
    assert unknown.any() and t.loc[unknown, "correct"].isna().all()
    known = t["labelled"] & ~unknown
    assert (t.loc[known, "correct"] == (t.loc[known, "label"] == t.loc[known, "prediction"])).all()


def test_a_bundle_keeps_the_findings(findings_model, tmp_path):
    import torch

    from medcl.evaluate.bundle import export_bundle
    from medcl.evaluate.model import load_model

    model_dir, clf = findings_model
    export_bundle(model_dir, tmp_path / "bundle", onnx=False)
    again = load_model(tmp_path / "bundle")
    assert again.multilabel and again.description.finding_thresholds is not None
    x = torch.rand(3, 1, 16, 16)
    torch.testing.assert_close(again.predict_proba(x), clf.predict_proba(x), atol=1e-5, rtol=0)
    ts = torch.jit.load(str(tmp_path / "bundle" / "models" / "model.ts"))
    torch.testing.assert_close(torch.sigmoid(ts(x)), clf.predict_proba(x), atol=1e-5, rtol=0)
