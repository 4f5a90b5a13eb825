"""The label-efficiency experiment on a multi-label task, on synthetic records: macro AUROC as the
headline, paired differences of macro AUROC (against an explicit patient resampling), the pick
chosen on validation macro AUROC, the per-finding table and refused arms in the report."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medcl.config import derive, load_config
from medcl.data.manifest import read_manifest
from medcl.errors import ConfigError, MedclError
from medcl.evaluate import efficiency
from medcl.evaluate.comparisons import paired_comparisons
from medcl.evaluate.label_budget import LabelBudget
from medcl.evaluate.paired import paired_difference
from medcl.evaluate.pick import MULTILABEL_VAL_KEY, choose_picks, pick_key
from medcl.evaluate.plan import plan_jobs
from medcl.evaluate.report import headline, write_report
from tests.conftest import make_multilabel_manifest

NAMES = ["lesion", "nodule", "vessel"]


def findings_cohort(n_patients: int = 40, per: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_patients), per)
    y = (rng.random((n_patients * per, 3)) < 0.4).astype(np.int64)
    y[rng.random(y.shape) < 0.1] = -1
    return rng, y, groups


def scores(rng, y, strength):
    return 1 / (1 + np.exp(-(strength * (y == 1) + rng.normal(size=y.shape))))


def explicit_macro(y, s):
    vals = []
    for k in range(y.shape[1]):
        known = y[:, k] >= 0
        if len(np.unique(y[known, k])) == 2:
            vals.append(roc_auc_score(y[known, k], s[known, k]))
    return np.mean(vals) if vals else np.nan


def test_paired_macro_auroc_matches_sklearn_and_an_explicit_patient_resampling():
    rng, y, groups = findings_cohort()
    a, b = scores(rng, y, 2.5), scores(rng, y, 1.0)
    n_boot, seed = 400, 3
    d = paired_difference(y, groups, [a], [b], NAMES, "macro_auroc", n_boot=n_boot, seed=seed)
    assert d["mean"] == pytest.approx(explicit_macro(y, a) - explicit_macro(y, b), abs=1e-12)
    draw = np.random.default_rng(seed)
    images_of = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    reps = []
    for _ in range(n_boot):
        idx = np.concatenate([images_of[p] for p in draw.integers(0, 40, 40)])
        reps.append(explicit_macro(y[idx], a[idx]) - explicit_macro(y[idx], b[idx]))
    reps = np.array(reps)
    want = np.quantile(reps[~np.isnan(reps)], [0.025, 0.975])
    assert [d["low"], d["high"]] == pytest.approx(want, abs=1e-9)
    with pytest.raises(ValueError, match="macro_auroc"):
        paired_difference(y, groups, [a], [b], NAMES, "balanced_accuracy", n_boot=0)


def _records(tmp_path, y, groups, rng):
    """Two seeds of supervised, sscl and fixmatch (refused) at one budget, with predictions."""
    recs = []
    for seed in (0, 1):
        for method, strength, val in (("supervised", 1.0, 0.70), ("sscl", 2.5, 0.80 - seed * 0.2)):
            s = scores(rng, y, strength)
            path = tmp_path / f"{method}_{seed}.npz"
            np.savez(
                path,
                image_id=np.array([f"i{i}" for i in range(len(y))]),
                patient_key=np.array([f"k{g}" for g in groups]),
                patient=groups,
                y=y,
                proba=s,
            )
            per = {
                n: {"auroc": 0.6 + 0.1 * k + 0.05 * seed, "auroc_ci": [0.5, 0.9]}
                for k, n in enumerate(NAMES)
            }
            recs.append(
                {
                    "run": f"{method}_f0.5_s{seed}",
                    "method": method,
                    "label_fraction": 0.5,
                    "budget": "f0.5",
                    "seed": seed,
                    "val_balanced_accuracy": None,
                    MULTILABEL_VAL_KEY: val,
                    "predictions": str(path),
                    "metrics": {"macro_auroc": explicit_macro(y, s), "findings": per},
                }
            )
        recs.append(
            {
                "run": f"fixmatch_f0.5_s{seed}",
                "method": "fixmatch",
                "label_fraction": 0.5,
                "budget": "f0.5",
                "seed": seed,
                "refused": "finetune.mode=fixmatch: single-label only",
            }
        )
    return recs


def test_pick_paired_and_report_of_a_multilabel_experiment(tmp_path):
    rng, y, groups = findings_cohort()
    recs = _records(tmp_path, y, groups, rng)
    assert pick_key(3, multilabel=True) == MULTILABEL_VAL_KEY
    picks = choose_picks(recs, pick_key(3, True))
    # seed 0: sscl's validation macro AUROC 0.80 > 0.70; seed 1: 0.60 < 0.70; refused never
    assert [(p["seed"], p["method"], p["val_metric"]) for p in picks] == [
        (0, "sscl", MULTILABEL_VAL_KEY),
        (1, "supervised", MULTILABEL_VAL_KEY),
    ]
    paired = paired_comparisons(recs, "macro_auroc", NAMES, 100, picks)
    by = {(d["a"], d["b"]): d for d in paired}
    sscl = [r for r in recs if r["method"] == "sscl"]
    sup = [r for r in recs if r["method"] == "supervised"]
    want = [
        a["metrics"]["macro_auroc"] - b["metrics"]["macro_auroc"]
        for a, b in zip(sscl, sup, strict=True)
    ]
    assert by[("sscl", "supervised")]["per_seed"] == pytest.approx(want, abs=1e-12)
    assert by[("pick", "supervised")]["per_seed"] == pytest.approx([want[0], 0.0], abs=1e-12)
    line = headline(recs, paired, "macro_auroc", LabelBudget(fraction=0.5), picks)
    assert line.startswith("macro AUROC at 50 % labels (2 seeds): medcl's pick")
    report, _ = write_report(recs, "macro_auroc", tmp_path / "out", paired=paired, picks=picks)
    text = report.read_text()
    assert "best validation macro AUROC" in text
    assert "| method | labels | lesion | nodule | vessel |" in text
    assert "| sscl | 50 % | 0.625 | 0.725 | 0.825 |" in text  # mean over the two seeds
    assert "- fixmatch: finetune.mode=fixmatch: single-label only" in text
    assert "Runs: 4." in text


def test_headline_metric_of_a_multilabel_task():
    assert efficiency.headline_metric("auto", NAMES, multilabel=True) == "macro_auroc"
    assert efficiency.headline_metric("macro_auroc", NAMES, multilabel=True) == "macro_auroc"
    with pytest.raises(ConfigError, match="multi-label"):
        efficiency.headline_metric("balanced_accuracy", NAMES, multilabel=True)
    assert efficiency.headline_metric("auto", ["a", "b"]) == "auroc"  # unchanged


def test_an_arm_that_refuses_a_multilabel_task_is_recorded_not_raised(tmp_path, monkeypatch):
    base = read_manifest(make_multilabel_manifest(tmp_path / "data", test_patients=3))
    cfg = derive(
        load_config(None),
        **{
            "efficiency.methods": ["supervised"],
            "efficiency.fractions": [1.0],
            "efficiency.seeds": [0],
        },
    )

    def refuse(*args, **kwargs):
        raise MedclError("finetune.mode=knn: single-label only")

    monkeypatch.setattr(efficiency, "run_job", refuse)
    records: list[dict] = []
    lines: list[str] = []
    jobs = plan_jobs(cfg)
    header = {"metric": "macro_auroc"}
    store = tmp_path / "out" / "results.json"
    efficiency._run_jobs(
        cfg, base, tmp_path / "out", jobs, records, store, header, lines.append, False
    )
    assert [r["refused"] for r in records] == ["finetune.mode=knn: single-label only"]
    assert "refused for a multi-label task" in lines[-1]
    # a single-label task still raises
    single = base.__class__(base.df.assign(label="bright"), list(base.classes), {})
    with pytest.raises(MedclError, match="knn"):
        efficiency._run_jobs(cfg, single, tmp_path / "o2", jobs, [], store, header, print, False)


def test_check_experiment_takes_macro_auroc_and_needs_a_defined_finding_on_test(tmp_path):
    path = make_multilabel_manifest(tmp_path / "ok", test_patients=3)
    cfg = load_config(None)
    assert efficiency.check_experiment(cfg, path).multilabel
    with pytest.raises(ConfigError, match="macro_auroc"):
        efficiency.check_experiment(derive(cfg, **{"efficiency.metric": "balanced_accuracy"}), path)
    m = read_manifest(path)
    test = m.df["split"] == "test"
    m.df.loc[test & (m.df["label"] != ""), "label"] = "bright"  # every finding one-sided on test
    from medcl.data.manifest import write_manifest

    one_sided = write_manifest(m, tmp_path / "one_sided.csv")
    with pytest.raises(MedclError, match="no finding is both present and absent"):
        efficiency.check_experiment(cfg, one_sided)
