"""The arm table: an arm is one record, and the experiment and report need nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from medcl.config import Config, load_config
from medcl.errors import ConfigError
from medcl.evaluate import arms as arms_mod
from medcl.evaluate.arms import ARMS, Arm, Pretraining, register_arm, report_order, resolve_arms
from medcl.evaluate.efficiency import EfficiencyResult, run_efficiency
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
    tmp_path: Path, methods: str, *overrides: str
) -> tuple[Config, EfficiencyResult]:
    """A one-seed experiment at half the labels of a 15-patient cohort: its config and results."""
    manifest = make_manifest(tmp_path / "data", n_patients=15, labelled_patients=9, test_patients=3)
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
    line = headline(res.records, res.paired, "balanced_accuracy", 0.5)
    assert "Toy " in line and "supervised " in line
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
