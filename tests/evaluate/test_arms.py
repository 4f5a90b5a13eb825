"""The arm table: an arm is one record, and the experiment and report need nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medcl.config import Config, load_config
from medcl.errors import ConfigError
from medcl.evaluate import arms as arms_mod
from medcl.evaluate.arms import ARMS, Arm, Pretraining, register_arm, report_order, resolve_arms
from medcl.evaluate.efficiency import EfficiencyResult, run_efficiency
from medcl.evaluate.pick import VAL_KEY
from medcl.evaluate.plan import plan_jobs
from medcl.evaluate.report import headline
from tests.conftest import TINY_OVERRIDES, make_manifest


def test_each_arm_is_followed_by_its_probe_in_a_seeds_runs() -> None:
    names = [a.name for a in resolve_arms(["supervised", "simclr", "sscl+fixmatch", "sscl"], True)]
    assert names == [
        "supervised",
        "simclr",
        "simclr+linear",
        "sscl+fixmatch",
        "sscl",
        "sscl+linear",
    ]
    assert [a.name for a in resolve_arms(["simclr", "sscl"], False)] == ["simclr", "sscl"]
    probe = resolve_arms(["sscl"], True)[1]
    assert probe.finetune == "linear" and probe.pretraining == ARMS["sscl"].pretraining
    assert probe.compare_with == ("simclr+linear", "dino+linear", "vicreg+linear")


def test_an_unknown_arm_is_refused_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"^efficiency\.methods: choose from supervised, .*swav"):
        resolve_arms(["supervised", "swav"], True)


def test_report_order_follows_the_table_and_puts_unknown_names_last() -> None:
    got = report_order({"zzz", "sscl", "supervised", "sscl+linear", "dino", "fixmatch"})
    assert got == ["supervised", "fixmatch", "dino", "sscl", "sscl+linear", "zzz"]


def test_plan_runs_full_labels_on_the_first_seeds_only() -> None:
    cfg = load_config(
        None,
        [
            "efficiency.fractions=[0.1, 1.0]",
            "efficiency.seeds=[3, 4]",
            "efficiency.full_label_seeds=1",
            "efficiency.methods=[supervised, simclr]",
            "efficiency.linear_probe=false",
        ],
    )
    keys = [j.key for j in plan_jobs(cfg)]
    assert keys == [
        "supervised_f0.1_s3",
        "simclr_f0.1_s3",
        "supervised_f1_s3",
        "simclr_f1_s3",
        "supervised_f0.1_s4",
        "simclr_f0.1_s4",
    ]


def test_registering_refuses_a_taken_name_and_probe_names(monkeypatch) -> None:
    monkeypatch.setattr(arms_mod, "ARMS", dict(ARMS))
    with pytest.raises(ValueError, match="already registered"):
        register_arm(Arm("sscl", "other"))
    with pytest.raises(ValueError, match=r"\+linear"):
        register_arm(Arm("x+linear", "x"))


def tiny_experiment(
    tmp_path: Path, methods: str, *overrides: str, n_classes: int = 3
) -> tuple[Config, EfficiencyResult]:
    """A one-seed experiment at half the labels of a 15-patient cohort: its config and results."""
    manifest = make_manifest(
        tmp_path / "data",
        n_patients=15,
        labelled_patients=9,
        test_patients=3,
        n_classes=n_classes,
    )
    cfg = load_config(
        None,
        [
            *TINY_OVERRIDES,
            "finetune.epochs=1",
            "efficiency.fractions=[0.5]",
            "efficiency.seeds=[0]",
            "efficiency.n_boot=10",
            f"efficiency.methods={methods}",
            *overrides,
        ],
    )
    res = run_efficiency(cfg, manifest, tmp_path / "out", log=lambda s: None, progress=False)
    return cfg, res


def test_a_toy_arm_is_one_record(tmp_path: Path, monkeypatch) -> None:
    """A new arm (BYOL pretraining on the labelled subset, then a linear probe, compared with
    supervised) added as one record runs, is recorded, compared and reported."""
    toy = Arm(
        "toy",
        "Toy",
        Pretraining("toy", "byol", labelled=True, title="BYOL+SupCon"),
        finetune="linear",
        compare_with=("supervised",),
    )
    monkeypatch.setitem(ARMS, "toy", toy)
    _, res = tiny_experiment(
        tmp_path, "[supervised, toy]", "optim.epochs=1", "method.lambda_sup=0.5"
    )
    assert [r["method"] for r in res.records] == ["supervised", "toy"]
    toy_rec = res.records[1]
    assert toy_rec["finetune"] == "linear"
    pre = Path(toy_rec["pretrain_dir"])
    assert pre.name == "toy_f0.5_s0"
    run = json.loads((pre / "run.json").read_text())
    assert run["meta"]["method"] == "byol" and run["meta"]["lambda_sup"] == 0.5
    assert [(d["a"], d["b"]) for d in res.paired] == [("toy", "supervised"), ("pick", "supervised")]
    line = headline(res.records, res.paired, res.metric, 0.5)
    assert line.startswith("balanced accuracy at 50 % labels") and "Toy " in line
    assert "supervised " in line
    # a multi-class task: no binary fields, the pick on validation balanced accuracy
    assert "val_auroc" not in toy_rec and "auroc" not in toy_rec["metrics"]
    assert "threshold" not in toy_rec["metrics"] and res.picks[0]["val_metric"] == VAL_KEY
    assert "| toy |" in res.report.read_text()


def test_a_teacher_runs_before_the_arms_that_learn_from_it() -> None:
    cfg = load_config(
        None,
        [
            "efficiency.fractions=[0.1]",
            "efficiency.seeds=[0]",
            "efficiency.methods=[sscl+selftrain, selftrain, sscl, supervised]",
            "efficiency.linear_probe=false",
        ],
    )
    order = [j.arm.name for j in plan_jobs(cfg)]
    assert order.index("supervised") < order.index("selftrain")
    assert order.index("sscl") < order.index("sscl+selftrain")


def test_the_pseudo_label_sscl_arm_runs_in_the_experiment(tmp_path: Path) -> None:
    """``sscl+pseudo``: an SSCL pretraining of its own with ``method.pseudo.enabled`` (its run
    logs the pseudo-labels' figures), fine-tuned like SSCL and compared with supervised."""
    cfg, res = tiny_experiment(
        tmp_path,
        "[supervised, sscl+pseudo]",
        "optim.epochs=2",
        "method.pseudo.start=0",
        "method.pseudo.threshold=0.34",
    )
    assert not cfg.method.pseudo.enabled  # the arm, not the config, switches it on
    assert [r["method"] for r in res.records] == ["supervised", "sscl+pseudo"]
    rec = res.records[1]
    assert rec["finetune"] == "full"
    pre = Path(rec["pretrain_dir"])
    assert pre.name == "ssclpl_f0.5_s0"
    saved = load_config(pre / "config.yaml")
    assert saved.method.pseudo.enabled and saved.method.name == "simclr"
    assert saved.method.lambda_sup == cfg.method.lambda_sup
    log = pd.read_csv(pre / "logs" / "metrics.csv")
    assert log["train/pseudo_rate"].notna().any() and log["train/pseudo_head_acc"].notna().any()
    assert ("sscl+pseudo", "supervised") in [(d["a"], d["b"]) for d in res.paired]
    assert "SSCL+pseudo" in headline(res.records, res.paired, "balanced_accuracy", 0.5)


def _youden_by_brute_force(y: np.ndarray, s: np.ndarray) -> float:
    """The highest observed score maximising sensitivity + specificity − 1, by counting."""

    def j(t: float) -> float:
        return float(np.mean(s[y == 1] >= t) + np.mean(s[y == 0] < t) - 1)

    best = max(j(t) for t in np.unique(s))
    return max(t for t in np.unique(s) if j(t) >= best - 1e-12)


def test_a_binary_experiment_reports_auroc_and_a_validation_operating_point(
    tmp_path: Path, capsys
) -> None:
    """Two classes: every test evaluation has the positive class's AUROC with its patient
    interval, and sensitivity / specificity at the threshold chosen on validation; the headline,
    the paired differences and medcl's pick use AUROC."""
    from sklearn.metrics import roc_auc_score

    from medcl.cli.main import main
    from medcl.data.manifest import read_manifest
    from medcl.evaluate.evaluation import predict_rows
    from medcl.evaluate.model import load_model

    _, res = tiny_experiment(
        tmp_path,
        "[supervised, fixmatch]",
        "efficiency.seeds=[0, 1]",
        "finetune.lr=0.00001",  # a barely trained network: AUROC strictly between 0 and 1
        n_classes=2,
    )
    assert res.metric == "auroc"
    assert json.loads(res.results.read_text())["metric"] == "auroc"
    split = read_manifest(tmp_path / "out" / "splits" / "f0.5_s0.csv")
    val = split.subset((split.df["split"] == "val") & (split.df["label"] != ""))
    aurocs = {}
    for rec in res.records:
        m = rec["metrics"]
        with np.load(rec["predictions"]) as z:
            y, p = z["y"], z["proba"]
        aurocs[(rec["method"], rec["seed"])] = roc_auc_score(y, p[:, 1])
        assert m["auroc"] == pytest.approx(roc_auc_score(y, p[:, 1]), abs=1e-12)
        assert m["auroc_ci"] == [m["intervals"]["auroc"]["low"], m["intervals"]["auroc"]["high"]]
        # the threshold is the model's, chosen on its validation predictions (Youden's J)
        model = load_model(rec["model_dir"])
        p_val, ds = predict_rows(model, val)
        y_val = ds.labels.numpy()
        assert m["threshold"] == model.description.operating_point["threshold"]
        assert m["threshold"] == pytest.approx(_youden_by_brute_force(y_val, p_val[:, 1]))
        assert rec["val_auroc"] == pytest.approx(roc_auc_score(y_val, p_val[:, 1]), abs=1e-6)
        t = m["threshold"]
        assert m["sensitivity"] == pytest.approx(np.mean(p[y == 1, 1] >= t), abs=1e-12)
        assert m["specificity"] == pytest.approx(np.mean(p[y == 0, 1] < t), abs=1e-12)
        assert m["operating_point"]["positive_class"] == "c1"
        for key in ("sensitivity", "specificity"):  # patient-bootstrap intervals at the threshold
            iv = m["intervals"][key]
            assert m[f"{key}_ci"] == ([iv["low"], iv["high"]] if iv["n_boot_valid"] else None)
    assert 0 < min(aurocs.values()) and max(aurocs.values()) < 1  # not a degenerate check
    d = next(d for d in res.paired if (d["a"], d["b"]) == ("fixmatch", "supervised"))
    want = [aurocs[("fixmatch", s)] - aurocs[("supervised", s)] for s in (0, 1)]
    assert d["per_seed"] == pytest.approx(want, abs=1e-12)
    for pick in res.picks:  # chosen on validation AUROC (ties: supervised, earlier in the table)
        runs = {r["method"]: r for r in res.records if r["seed"] == pick["seed"]}
        best = max(
            ["supervised", "fixmatch"], key=lambda k: (runs[k]["val_auroc"], k == "supervised")
        )
        assert pick["val_metric"] == "val_auroc" and pick["method"] == best
    line = headline(res.records, res.paired, res.metric, 0.5, res.picks)
    assert line.startswith("AUROC at 50 % labels (2 seeds): medcl's pick")
    assert "Test AUROC by label budget" in res.report.read_text()

    # `medcl evaluate` of a binary model: the same fields, at the model's own threshold
    run = Path(res.records[0]["model_dir"])
    manifest = tmp_path / "data" / "split.csv"
    assert main(["evaluate", str(run), "--manifest", str(manifest), "--n-boot", "20"]) == 0
    out = json.loads((run.parent / "metrics.json").read_text())
    assert out["threshold"] == load_model(run).description.operating_point["threshold"]
    assert {"auroc", "auroc_ci", "sensitivity", "specificity"} <= set(out)
    assert "AUROC of c1" in capsys.readouterr().out
    assert "sensitivity at threshold" in (run / "model_card.md").read_text()
    # a model saved without an operating point: Youden's threshold on the manifest's val rows
    meta = json.loads((run / "metadata.json").read_text())
    del meta["operating_point"]
    (run / "metadata.json").write_text(json.dumps(meta))
    assert main(["evaluate", str(run), "--manifest", str(manifest), "--n-boot", "0"]) == 0
    out = json.loads((run.parent / "metrics.json").read_text())
    p_val, ds = predict_rows(load_model(run), val)
    assert out["threshold"] == pytest.approx(_youden_by_brute_force(ds.labels.numpy(), p_val[:, 1]))
    assert out["operating_point"]["chosen"].startswith("at evaluation")
