"""The efficiency experiment's arms see what they should, and an interrupted run resumes.

Behaviour only: spies on the experiment's calls to ``pretrain`` and ``finetune`` record what each
arm was given (labels in its manifests, the pretraining weights λ_sup, the encoder it starts from)
and then call the real functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import medcl.evaluate.efficiency as eff
from medcl.config import load_config
from medcl.data.manifest import Manifest, read_manifest
from medcl.errors import ConfigError
from tests.conftest import TINY_OVERRIDES, make_manifest

ARMS = ("supervised", "simclr", "simclr+linear", "sscl", "sscl+linear")


def train_labels(m: Manifest) -> dict[str, str]:
    """``{image_id: label}`` of the labelled training rows."""
    rows = m.df[(m.df["split"] == "train") & (m.df["label"] != "")]
    return dict(zip(rows["image_id"], rows["label"], strict=True))


def train_images(m: Manifest) -> set[str]:
    return set(m.df.loc[m.df["split"] == "train", "image_id"])


@dataclass
class Pretraining:
    out: Path
    lambda_sup: float
    labels: dict[str, str]
    images: set[str]
    augment: dict[str, Any]


@dataclass
class Finetuning:
    pretrained: Path | None
    labels: dict[str, str]
    augment: dict[str, Any]


@pytest.fixture(scope="module")
def arms(tmp_path_factory):
    root = tmp_path_factory.mktemp("arms")
    manifest = make_manifest(root / "data", n_patients=15, labelled_patients=9, test_patients=3)
    cfg = load_config(
        None,
        [
            *TINY_OVERRIDES,
            "optim.epochs=1",
            "efficiency.fractions=[0.5]",
            "efficiency.seeds=[0]",
            "efficiency.methods=[supervised, simclr, sscl]",
            "efficiency.linear_probe=true",
            "efficiency.n_boot=10",
            "method.lambda_sup=0.5",
            "augment.options.p_blur=0.0",
            "efficiency.scratch_augment={rotate_deg: 25, p_affine: 1.0}",
        ],
    )
    pre: list[Pretraining] = []
    fine: list[Finetuning] = []
    real_pretrain, real_finetune = eff.pretrain, eff.finetune

    def pretrain(c: Any, *args: Any, **kwargs: Any) -> Any:
        m = read_manifest(c.data.manifest)
        pre.append(
            Pretraining(
                Path(c.out).resolve(),
                c.method.lambda_sup,
                train_labels(m),
                train_images(m),
                dict(c.augment.options),
            )
        )
        return real_pretrain(c, *args, **kwargs)

    def finetune(c: Any, m: Manifest, pretrained: Any = None, **kwargs: Any) -> Any:
        where = None if pretrained is None else Path(pretrained).resolve()
        fine.append(Finetuning(where, train_labels(m), dict(c.augment.options)))
        return real_finetune(c, m, pretrained=pretrained, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(eff, "pretrain", pretrain)
        mp.setattr(eff, "finetune", finetune)
        result = eff.run_efficiency(cfg, manifest, root / "out", log=lambda s: None, progress=False)
    assert len(fine) == len(result.records)  # one fine-tuning per run, in the order of the runs
    by_arm = {r["method"]: f for r, f in zip(result.records, fine, strict=True)}
    assert set(by_arm) == set(ARMS)
    return read_manifest(manifest), pre, by_arm


def pretraining_of(pre: list[Pretraining], f: Finetuning) -> list[Pretraining]:
    assert f.pretrained is not None
    calls = [p for p in pre if p.out == f.pretrained]
    assert calls, f"{f.pretrained} was not pretrained by the experiment"
    return calls


def test_every_arm_is_fine_tuned_on_the_same_label_subset(arms):
    base, _, by_arm = arms
    subset = by_arm["supervised"].labels
    assert all(f.labels == subset for f in by_arm.values())
    everything = train_labels(base)
    assert 0 < len(subset) < len(everything)  # fraction 0.5 of the labelled training images
    assert subset.items() <= everything.items()


def test_supervised_arm_starts_from_scratch(arms):
    _, _, by_arm = arms
    assert by_arm["supervised"].pretrained is None


@pytest.mark.parametrize("arm", ["simclr", "simclr+linear"])
def test_simclr_pretraining_sees_no_label(arms, arm):
    base, pre, by_arm = arms
    for p in pretraining_of(pre, by_arm[arm]):
        assert p.lambda_sup == 0
        assert p.labels == {}
        assert p.images == train_images(base)  # every training image, unlabelled


@pytest.mark.parametrize("arm", ["sscl", "sscl+linear"])
def test_sscl_pretraining_sees_exactly_the_subset_labels(arms, arm):
    base, pre, by_arm = arms
    for p in pretraining_of(pre, by_arm[arm]):
        assert p.lambda_sup == 0.5
        assert p.labels == by_arm["supervised"].labels
        assert p.images == train_images(base)  # the unlabelled rest still feeds NT-Xent


def test_only_the_from_scratch_arm_fine_tunes_with_scratch_augment(arms):
    _, pre, by_arm = arms
    # merged over augment.options, for the arm that starts from nothing
    assert by_arm["supervised"].augment == {"p_blur": 0.0, "rotate_deg": 25, "p_affine": 1.0}
    for arm in ("simclr", "sscl"):  # pretrained encoders: augment.options as given
        assert by_arm[arm].augment == {"p_blur": 0.0}
        assert all(p.augment == {"p_blur": 0.0} for p in pretraining_of(pre, by_arm[arm]))


def test_a_bad_scratch_augment_option_is_refused_before_any_run(tmp_path, monkeypatch):
    manifest = make_manifest(tmp_path / "data", n_patients=8, labelled_patients=4)
    cfg = load_config(
        None,
        [
            *TINY_OVERRIDES,
            "efficiency.fractions=[0.5]",
            "efficiency.seeds=[0]",
            "efficiency.methods=[supervised]",
            "efficiency.scratch_augment={rotate_degrees: 25}",
        ],
    )

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a run started")

    monkeypatch.setattr(eff, "finetune", never)
    monkeypatch.setattr(eff, "pretrain", never)
    with pytest.raises(ConfigError, match=r"efficiency\.scratch_augment: .*rotate_degrees"):
        eff.run_efficiency(cfg, manifest, tmp_path / "out", log=lambda s: None, progress=False)


class SimulatedCrashError(Exception):
    pass


def test_resume_after_an_interruption_computes_each_run_once(tmp_path, monkeypatch):
    manifest = make_manifest(tmp_path / "data", n_patients=15, labelled_patients=9, test_patients=3)
    cfg = load_config(
        None,
        [
            *TINY_OVERRIDES,
            "finetune.epochs=1",
            "efficiency.fractions=[0.5, 1.0]",
            "efficiency.seeds=[0, 1]",
            "efficiency.methods=[supervised]",
            "efficiency.n_boot=10",
        ],
    )
    out = tmp_path / "out"
    real_finetune = eff.finetune
    calls: list[int] = []
    fail_at: list[int] = [3]

    def finetune(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) in fail_at:
            raise SimulatedCrashError
        return real_finetune(*args, **kwargs)

    monkeypatch.setattr(eff, "finetune", finetune)
    with pytest.raises(SimulatedCrashError):
        eff.run_efficiency(cfg, manifest, out, log=lambda s: None, progress=False)
    first = json.loads((out / "results.json").read_text())["records"]
    assert len(first) == 2 and len(calls) == 3

    calls.clear()
    fail_at.clear()
    result = eff.run_efficiency(cfg, manifest, out, log=lambda s: None, progress=False)
    assert len(calls) == 2  # only the two runs not finished before the interruption
    keys = [(r["method"], r["label_fraction"], r["seed"]) for r in result.records]
    assert sorted(keys) == sorted(("supervised", f, s) for f in (0.5, 1.0) for s in (0, 1))
    # exact: the finished records are read back from JSON, not recomputed (their timings too)
    assert result.records[:2] == first
    saved = json.loads(result.results.read_text())["records"]
    assert saved == result.records


def _comparable(rec: dict[str, Any]) -> dict[str, Any]:
    """A record without its timings and folder paths."""
    drop = {"seconds", "pretrain_seconds", "finetune_seconds", "pretrain_dir", "model_dir"}
    return {k: v for k, v in rec.items() if k not in drop and k != "predictions"}


def test_an_arms_records_do_not_depend_on_the_other_arms(tmp_path):
    """SSCL with a λ1 = 0 prefix, run alone and beside supervised and SimCLR (which once lent it
    their checkpoint): the same records, predictions and pretraining."""
    manifest = make_manifest(tmp_path / "data", n_patients=15, labelled_patients=9, test_patients=3)
    common = [
        *TINY_OVERRIDES,
        "optim.epochs=2",
        "finetune.epochs=2",
        "method.lambda_sup_start=0.5",
        "efficiency.fractions=[0.5]",
        "efficiency.seeds=[0]",
        "efficiency.linear_probe=false",
        "efficiency.n_boot=10",
    ]
    runs = {}
    for name, methods in (("alone", "[sscl]"), ("beside", "[supervised, simclr, sscl]")):
        cfg = load_config(None, [*common, f"efficiency.methods={methods}"])
        res = eff.run_efficiency(cfg, manifest, tmp_path / name, log=lambda s: None, progress=False)
        runs[name] = next(r for r in res.records if r["method"] == "sscl")
    assert _comparable(runs["alone"]) == _comparable(runs["beside"])
    import numpy as np

    a, b = (np.load(runs[k]["predictions"]) for k in ("alone", "beside"))
    assert np.array_equal(a["proba"], b["proba"])
    weights = [json.loads((Path(runs[k]["pretrain_dir"]) / "run.json").read_text()) for k in runs]
    assert weights[0]["steps"] == weights[1]["steps"] and weights[1]["warm_start"] is None


def test_adding_arms_seeds_and_budgets_reuses_finished_runs(tmp_path, monkeypatch):
    manifest = make_manifest(tmp_path / "data", n_patients=15, labelled_patients=9, test_patients=3)
    common = [
        *TINY_OVERRIDES,
        "finetune.epochs=1",
        "efficiency.fractions=[0.5]",
        "efficiency.n_boot=10",
        "efficiency.linear_probe=false",
    ]
    out = tmp_path / "out"
    first = load_config(None, [*common, "efficiency.seeds=[0]", "efficiency.methods=[supervised]"])
    before = eff.run_efficiency(first, manifest, out, log=lambda s: None, progress=False).records
    real_finetune = eff.finetune
    fitted: list[str] = []

    def finetune(c: Any, *args: Any, **kwargs: Any) -> Any:
        fitted.append(f"{c.finetune.mode}/s{c.trainer.seed}")
        return real_finetune(c, *args, **kwargs)

    monkeypatch.setattr(eff, "finetune", finetune)
    more = load_config(
        None,
        [
            *common,
            "efficiency.seeds=[0, 1]",
            "efficiency.labels_per_class=[1]",
            "efficiency.methods=[supervised, fixmatch]",
        ],
    )
    res = eff.run_efficiency(more, manifest, out, log=lambda s: None, progress=False)
    keys = sorted(r["run"] for r in res.records)
    assert keys == sorted(
        f"{m}_{b}_s{s}" for m in ("supervised", "fixmatch") for b in ("k1", "f0.5") for s in (0, 1)
    )
    assert len(fitted) == 7  # every run but the finished one
    assert next(r for r in res.records if r["run"] == "supervised_f0.5_s0") == before[0]
    k1 = [r for r in res.records if r["budget"] == "k1"]
    assert all(r["labels_per_class"] == 1 and r["n_labelled_images"] == 3 for r in k1)
    # a change to how runs are computed is still refused
    changed = load_config(None, [*common, "efficiency.seeds=[0]", "finetune.lr=0.5"])
    with pytest.raises(ConfigError, match="different config"):
        eff.run_efficiency(changed, manifest, out, log=lambda s: None, progress=False)


def test_a_bad_fixmatch_view_option_is_refused_before_any_run(tmp_path, monkeypatch):
    manifest = make_manifest(tmp_path / "data", n_patients=8, labelled_patients=4)
    cfg = load_config(
        None,
        [
            *TINY_OVERRIDES,
            "efficiency.fractions=[0.5]",
            "efficiency.seeds=[0]",
            "efficiency.methods=[supervised, fixmatch]",
            "finetune.fixmatch_strong={p_blurr: 0.0}",
        ],
    )

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a run started")

    monkeypatch.setattr(eff, "finetune", never)
    with pytest.raises(ConfigError, match=r"fixmatch_strong.*p_blurr"):
        eff.run_efficiency(cfg, manifest, tmp_path / "out", log=lambda s: None, progress=False)
