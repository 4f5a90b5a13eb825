"""The efficiency experiment (shared pretraining, resume) and `predict` on a new DICOM cohort."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from medcl.config import load_config
from medcl.data.synth import generate_cohort
from medcl.evaluate.efficiency import run_efficiency
from medcl.evaluate.predict import predict_source
from tests.conftest import TINY_OVERRIDES, make_manifest


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("eff")
    manifest = make_manifest(root / "data", n_patients=15, labelled_patients=9, test_patients=3)
    cfg = load_config(
        None,
        [
            *TINY_OVERRIDES,
            "optim.epochs=1",
            "efficiency.fractions=[0.5, 1.0]",
            "efficiency.seeds=[0]",
            "efficiency.methods=[supervised, simclr, sscl]",
            "efficiency.n_boot=20",
        ],
    )
    lines: list[str] = []
    result = run_efficiency(cfg, manifest, root / "out", log=lines.append, progress=False)
    return cfg, manifest, root, result, lines


def test_records_report_and_shared_simclr(experiment):
    _, _, root, result, _ = experiment
    runs = {r["run"] for r in result.records}
    assert runs == {
        f"{m}_f{f}_s0"
        for m in ("supervised", "simclr", "simclr+linear", "sscl", "sscl+linear")
        for f in ("0.5", "1")
    }
    pre = sorted(p.name for p in (root / "out" / "pretrain").iterdir())
    assert pre == ["simclr_s0", "sscl_f0.5_s0", "sscl_f1_s0"]  # SimCLR shared across fractions
    for r in result.records:
        assert 0 <= r["metrics"]["balanced_accuracy"] <= 1
        assert (root / "out" / "runs" / r["run"] / "model" / "model_card.md").is_file()
    assert "| supervised |" in result.report.read_text()
    assert json.loads(result.results.read_text())["records"] == result.records


def test_rerun_resumes_without_work(experiment):
    cfg, manifest, root, result, _ = experiment
    lines: list[str] = []
    again = run_efficiency(cfg, manifest, root / "out", log=lines.append, progress=False)
    assert again.records == result.records and lines == []


def test_changed_config_refused(experiment):
    cfg, manifest, root, _, _ = experiment
    import copy

    from medcl.errors import ConfigError

    other = copy.deepcopy(cfg)
    other.finetune.lr = 0.5
    with pytest.raises(ConfigError, match="different config"):
        run_efficiency(other, manifest, root / "out", log=lambda s: None, progress=False)


def test_predict_on_a_new_dicom_cohort(experiment, tmp_path):
    _, _, root, _, _ = experiment
    model = root / "out" / "runs" / "sscl_f1_s0" / "model"
    cohort = tmp_path / "new"
    s = generate_cohort(cohort, patients=3, seed=11, size=32, progress=False)
    n = predict_source(model, cohort, tmp_path / "preds.csv")
    preds = pd.read_csv(tmp_path / "preds.csv")
    assert n == len(preds) == s.files
    probs = preds[[c for c in preds.columns if c.startswith("prob_")]]
    assert ((probs.sum(axis=1) - 1).abs() < 1e-4).all()
    assert set(preds["prediction"]) <= {"c0", "c1", "c2"}
    rejects = pd.read_csv(tmp_path / "preds.rejects.csv")
    assert {p.rsplit("/", 1)[-1] for p in rejects["path"]} == {"cohort.json", "labels.csv"}
    # no header PHI in the output
    import pydicom

    first = next(cohort.rglob("*.dcm"))
    ds = pydicom.dcmread(first, stop_before_pixels=True)
    text = (tmp_path / "preds.csv").read_text()
    assert str(ds.PatientID) not in text and str(ds.PatientName) not in text
