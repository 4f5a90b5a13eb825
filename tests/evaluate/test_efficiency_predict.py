"""The efficiency experiment (shared pretraining, resume) and `predict` on a new DICOM cohort."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from medcl.config import derive, load_config
from medcl.data.dataset import CachedImages
from medcl.data.manifest import read_manifest
from medcl.data.synth import generate_cohort
from medcl.evaluate.efficiency import run_efficiency
from medcl.evaluate.model import load_model
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
            "trainer.accelerator=cpu",
        ],
    )
    lines: list[str] = []
    # CPU in float32 (on a CUDA machine fine-tuning would validate under bf16 autocast): the
    # reported scores are recomputed below from the saved models
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.cuda, "is_available", lambda: False)
        result = run_efficiency(cfg, manifest, root / "out", log=lines.append, progress=False)
    return cfg, manifest, root, result, lines


def test_records_report_and_shared_simclr(experiment):
    _, manifest, root, result, _ = experiment
    runs = {r["run"] for r in result.records}
    assert runs == {
        f"{m}_f{f}_s0"
        for m in ("supervised", "simclr", "simclr+linear", "sscl", "sscl+linear")
        for f in ("0.5", "1")
    }
    pre = sorted(p.name for p in (root / "out" / "pretrain").iterdir())
    assert pre == ["simclr_s0", "sscl_f0.5_s0", "sscl_f1_s0"]  # SimCLR shared across fractions
    m = read_manifest(manifest)
    rows = {s: CachedImages(m.subset(m.df["split"] == s), 16) for s in ("val", "test")}
    for r in result.records:
        assert (root / "out" / "runs" / r["run"] / "model" / "model_card.md").is_file()
        # the reported val and test scores are those of the saved model, recomputed here
        model = load_model(r["model_dir"])
        for split, reported in (
            ("val", r["val_balanced_accuracy"]),
            ("test", r["metrics"]["balanced_accuracy"]),
        ):
            pred = model.predict_proba(rows[split].images).argmax(1).numpy()
            got = balanced_accuracy_score(rows[split].labels.numpy(), pred)
            assert got == pytest.approx(reported, abs=1e-9), (r["run"], split)
    assert "| supervised |" in result.report.read_text()
    # exact: JSON writes floats with repr, which reads back to the same double
    assert json.loads(result.results.read_text())["records"] == result.records


def test_rerun_resumes_without_work(experiment):
    cfg, manifest, root, result, _ = experiment
    lines: list[str] = []
    again = run_efficiency(cfg, manifest, root / "out", log=lines.append, progress=False)
    assert again.records == result.records and lines == []  # exact: a JSON round trip


def test_changed_config_refused(experiment):
    cfg, manifest, root, _, _ = experiment
    from medcl.config import derive
    from medcl.errors import ConfigError

    other = derive(cfg, **{"finetune.lr": 0.5})
    with pytest.raises(ConfigError, match="holds results of a different config"):
        run_efficiency(other, manifest, root / "out", log=lambda s: None, progress=False)


def test_predict_on_a_new_dicom_cohort(experiment, tmp_path):
    _, _, root, _, _ = experiment
    model = root / "out" / "runs" / "sscl_f1_s0" / "model"
    cohort = tmp_path / "new"
    s = generate_cohort(cohort, patients=3, seed=11, size=32, progress=False)
    n = predict_source(model, cohort, tmp_path / "preds.csv", with_source_paths=True)
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


def test_shared_simclr_seeds_picks_and_paired_report(tmp_path):
    """share_simclr: one SimCLR run for every seed; SSCL runs its own pretraining (its λ1 = 0
    prefix included, no other run's checkpoint); the report has the picks, the per-seed table,
    the paired differences and the arms' budgets; the 100 % fraction runs the first seed only."""
    manifest = make_manifest(tmp_path / "data", n_patients=15, labelled_patients=9, test_patients=3)
    cfg = load_config(
        None,
        [
            *TINY_OVERRIDES,
            "optim.epochs=2",
            "method.lambda_sup_start=0.5",
            "efficiency.fractions=[0.5, 1.0]",
            "efficiency.seeds=[0, 1]",
            "efficiency.full_label_seeds=1",
            "efficiency.share_simclr=true",
            "efficiency.linear_probe=false",
            "efficiency.methods=[supervised, simclr, sscl]",
            "efficiency.n_boot=20",
            "trainer.accelerator=cpu",
        ],
    )
    res = run_efficiency(cfg, manifest, tmp_path / "out", log=lambda s: None, progress=False)
    assert sorted(p.name for p in (tmp_path / "out/pretrain").iterdir()) == [
        "simclr_s0",
        "sscl_f0.5_s0",
        "sscl_f0.5_s1",
        "sscl_f1_s0",
    ]
    for run in ("sscl_f0.5_s0", "sscl_f0.5_s1", "sscl_f1_s0"):
        info = json.loads((tmp_path / "out/pretrain" / run / "run.json").read_text())
        assert info["warm_start"] is None
    assert {(r["method"], r["label_fraction"], r["seed"]) for r in res.records} == {
        (m, f, s)
        for m in ("supervised", "simclr", "sscl")
        for f, s in ((0.5, 0), (0.5, 1), (1.0, 0))
    }
    pairs = {(d["label_fraction"], d["b"]): d for d in res.paired if d["a"] == "sscl"}
    assert set(pairs) == {
        (0.5, "supervised"),
        (0.5, "simclr"),
        (1.0, "supervised"),
        (1.0, "simclr"),
    }
    assert pairs[(0.5, "supervised")]["seeds"] == [0, 1]
    by = {
        (r["method"], r["seed"]): r["metrics"]["balanced_accuracy"]
        for r in res.records
        if r["label_fraction"] == 0.5
    }
    want = [by[("sscl", s)] - by[("supervised", s)] for s in (0, 1)]
    assert pairs[(0.5, "supervised")]["per_seed"] == pytest.approx(want, abs=1e-9)
    # medcl's pick: per fraction and seed the best validation score, compared with supervised
    assert [(p["label_fraction"], p["seed"]) for p in res.picks] == [(0.5, 0), (0.5, 1), (1.0, 0)]
    for p in res.picks:
        runs = [
            r
            for r in res.records
            if (r["label_fraction"], r["seed"]) == (p["label_fraction"], p["seed"])
        ]
        best = max(r["val_balanced_accuracy"] for r in runs)
        assert p["val_balanced_accuracy"] == best
        assert p["method"] in {r["method"] for r in runs if r["val_balanced_accuracy"] == best}
    pick = next(d for d in res.paired if d["a"] == "pick" and d["label_fraction"] == 0.5)
    test_of = {
        (r["method"], r["seed"]): r["metrics"]["balanced_accuracy"]
        for r in res.records
        if r["label_fraction"] == 0.5
    }
    chosen = {p["seed"]: p["method"] for p in res.picks if p["label_fraction"] == 0.5}
    want = [test_of[(chosen[s], s)] - test_of[("supervised", s)] for s in (0, 1)]
    assert pick["per_seed"] == pytest.approx(want, abs=1e-9)
    saved = json.loads(res.results.read_text())
    assert saved["picks"] == res.picks
    text = res.report.read_text()
    assert "Per seed at 50 % labels" in text and "sscl − supervised" in text
    assert "## medcl's pick" in text and "Budget rule: every arm's fitting stage" in text
    sup = [r for r in res.records if r["method"] == "supervised" and r["label_fraction"] == 0.5]
    assert all(r["pretrain_steps"] == 0 for r in sup)
    sscl = [r for r in res.records if r["method"] == "sscl"]
    assert all(r["pretrain_steps"] > 0 for r in sscl)


def test_stage_budget_matches_pretraining_plus_fine_tuning_steps():
    """1000 training rows, batch 64, 20 epochs: 15 × 20 = 300 pretraining steps; fine-tuning
    epochs of 8 steps: 30 + ceil(300 / 8) = 68 epochs (544 ≥ 300 + 240 steps); patience grows
    with the budget (8 × 68/30 = 18.1) but at most to twice fine-tuning's (16)."""
    from medcl.evaluate.budget import planned_pretrain_steps, stage_budget

    cfg = load_config(
        None,
        [
            "data.batch_size=64",
            "optim.epochs=20",
            "finetune.epochs=30",
            "finetune.patience=8",
            "finetune.batch_size=32",
            "finetune.epoch_steps=8",
        ],
    )
    assert planned_pretrain_steps(cfg, 1000) == 300
    epochs, patience = stage_budget(cfg, 1000, 50)
    assert (epochs, patience) == (68, 16)
    assert epochs * 8 >= 300 + 30 * 8
    # a short pretraining (2 epochs: 30 steps): 30 + ceil(30 / 8) = 34 epochs, 8 × 34/30 → 9
    assert stage_budget(derive(cfg, **{"optim.epochs": 2}), 1000, 50) == (34, 9)
    # one pass over the labelled images per epoch when epoch_steps = 0 (here 1000 // 32 = 31)
    cfg = load_config(
        None,
        [
            "data.batch_size=64",
            "optim.epochs=20",
            "finetune.epoch_steps=0",
            "finetune.epochs=30",
            "finetune.batch_size=32",
        ],
    )
    assert stage_budget(cfg, 1000, 1000)[0] == 30 + math.ceil(300 / 31)
