"""The label-efficiency experiment: does SSCL pretraining beat training from scratch on few labels?

For every seed and label fraction F (a patient-level subset of the training images keeps its labels,
see :func:`medcl.data.split.apply_label_fraction`; val and test are fixed):

- ``supervised``: the encoder trained from scratch on the labelled subset (``finetune.mode``,
  normally ``full``);
- ``simclr``: NT-Xent pretraining on all training images with no labels (λ1 = 0), then fine-tuned
  on the subset. Its pretraining does not depend on F, so it runs once per seed and is shared;
- ``sscl``: ``λ1·SupCon(labelled subset) + λ2·NT-Xent(all)`` pretraining (depends on F), then
  fine-tuned on the subset;
- with ``efficiency.linear_probe``, ``simclr+linear`` and ``sscl+linear``: a logistic-regression
  probe on the frozen pretrained encoder.

Each run is evaluated on the test split with patient-bootstrap intervals and appended to
``results.json`` as soon as it finishes; re-running the command skips finished runs (pretraining
runs
resume from their checkpoints). Layout::

    OUT/splits/       label-fraction manifests
    OUT/pretrain/     simclr_s{seed}/, sscl_f{F}_s{seed}/  (medcl pretrain run folders)
    OUT/runs/         {method}_f{F}_s{seed}/model/ and metrics.json
    OUT/results.json  one record per run
    OUT/report.md, OUT/efficiency.png
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medcl.config import Config, save_config
from medcl.data.manifest import Manifest, read_manifest, write_manifest
from medcl.data.split import apply_label_fraction
from medcl.errors import ConfigError, MedclError
from medcl.evaluate.card import model_card
from medcl.evaluate.evaluation import evaluate_model, write_json
from medcl.evaluate.finetune import finetune
from medcl.evaluate.model import save_model
from medcl.evaluate.report import write_report
from medcl.train.pretrain import comparable_config, pretrain


@dataclass
class EfficiencyResult:
    """Where the experiment wrote its outputs, and its records."""

    out_dir: Path
    results: Path
    report: Path
    plot: Path
    records: list[dict[str, Any]]


def _frac_tag(f: float) -> str:
    return f"{f:g}"


def _run_key(method: str, frac: float, seed: int) -> str:
    return f"{method}_f{_frac_tag(frac)}_s{seed}"


def _pretrain_cfg(cfg: Config, manifest: Path, out: Path, seed: int, lambda_sup: float) -> Config:
    c = copy.deepcopy(cfg)
    c.data.manifest = str(manifest)
    c.out = str(out)
    c.method.name = "simclr"
    c.method.lambda_sup = lambda_sup
    c.trainer.seed = seed
    return c


def run_efficiency(
    cfg: Config,
    manifest: str | Path,
    out: str | Path,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> EfficiencyResult:
    """Run (or resume) the experiment described by ``cfg.efficiency`` on a split manifest.

    Args:
        cfg: The run config; ``efficiency``, ``method`` (λ1, λ2, τ), ``model``, ``augment``,
            ``optim``, ``finetune`` and ``trainer`` sections are used.
        manifest: A split manifest whose training rows carry all available labels.
        out: Output folder.
        log: Where progress lines go.
        progress: Show progress bars of pretraining.
    """
    eff = cfg.efficiency
    out = Path(out)
    base = read_manifest(manifest)
    if (base.df["split"] == "").any():
        raise MedclError(f"{manifest}: rows without a split; run `medcl split` first")
    if not ((base.df["split"] == "train") & (base.df["label"] != "")).any():
        raise MedclError(f"{manifest}: no labelled training rows")
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    saved = out / "config.yaml"
    if results_path.is_file() and saved.is_file():
        before = yaml.safe_load(saved.read_text()) or {}
        if comparable_config(before) != comparable_config(cfg.to_dict()):
            raise ConfigError(
                f"{out} holds results of a different config; choose another output folder"
            )
    save_config(cfg, saved)
    records: list[dict[str, Any]] = []
    if results_path.is_file():
        records = json.loads(results_path.read_text()).get("records", [])
    done = {r["run"] for r in records}

    def _save() -> None:
        write_json(
            {"manifest": str(Path(manifest).resolve()), "metric": eff.metric, "records": records},
            results_path,
        )

    n_total = (
        len(eff.seeds)
        * len(eff.fractions)
        * (len(eff.methods) + (eff.linear_probe and sum(m != "supervised" for m in eff.methods)))
    )
    for seed in eff.seeds:
        simclr_dir: Path | None = None
        for frac in eff.fractions:
            split_path = out / "splits" / f"f{_frac_tag(frac)}_s{seed}.csv"
            subset = apply_label_fraction(base, float(frac), seed)
            write_manifest(subset, split_path)
            jobs: list[tuple[str, str]] = []  # (record method, finetune mode)
            for method in eff.methods:
                jobs.append((method, cfg.finetune.mode))
                if method != "supervised" and eff.linear_probe:
                    jobs.append((f"{method}+linear", "linear"))
            for name, mode in jobs:
                key = _run_key(name, frac, seed)
                if key in done:
                    continue
                started = time.perf_counter()
                method = name.split("+")[0]
                pre_dir: Path | None = None
                if method == "simclr":
                    if simclr_dir is None:
                        pool_path = out / "splits" / f"unlabelled_s{seed}.csv"
                        write_manifest(apply_label_fraction(base, 0.0, seed), pool_path)
                        simclr_dir = out / "pretrain" / f"simclr_s{seed}"
                        log(f"[{len(records) + 1}/{n_total}] pretraining SimCLR (seed {seed})")
                        pretrain(
                            _pretrain_cfg(cfg, pool_path, simclr_dir, seed, 0.0), progress=progress
                        )
                    pre_dir = simclr_dir
                elif method == "sscl":
                    pre_dir = out / "pretrain" / f"sscl_f{_frac_tag(frac)}_s{seed}"
                    if not (pre_dir / "run.json").is_file():
                        log(
                            f"[{len(records) + 1}/{n_total}] pretraining SSCL "
                            f"(fraction {_frac_tag(frac)}, seed {seed})"
                        )
                    pretrain(
                        _pretrain_cfg(cfg, split_path, pre_dir, seed, cfg.method.lambda_sup),
                        progress=progress,
                    )
                rec = _one_run(cfg, subset, name, mode, frac, seed, pre_dir, out / "runs" / key)
                rec["seconds"] = time.perf_counter() - started
                records.append(rec)
                done.add(key)
                _save()
                log(
                    f"[{len(records)}/{n_total}] {name} @ {_frac_tag(frac)} labels, seed {seed}: "
                    f"test {eff.metric} {rec['metrics'].get(eff.metric, float('nan')):.3f}"
                )
    _save()
    report, png = write_report(records, eff.metric, out)
    return EfficiencyResult(out, results_path, report, png, records)


def _one_run(
    cfg: Config,
    subset: Manifest,
    name: str,
    mode: str,
    frac: float,
    seed: int,
    pre_dir: Path | None,
    run_dir: Path,
) -> dict[str, Any]:
    c = copy.deepcopy(cfg)
    c.finetune.mode = mode
    c.trainer.seed = seed
    res = finetune(c, subset, pretrained=pre_dir)
    metrics = evaluate_model(res.model, subset, "test", n_boot=cfg.efficiency.n_boot, seed=seed)
    res.model.meta["name"] = f"{name} (label fraction {_frac_tag(frac)}, seed {seed})"
    res.model.meta["test_metrics"] = {
        k: metrics.get(k)
        for k in ("accuracy", "balanced_accuracy", "macro_auroc", "macro_f1", "ece", "intervals")
    }
    res.model.meta["training_data"] = _data_summary(subset)
    save_model(run_dir / "model", res.model, card=model_card(res.model.meta, metrics))
    write_json(metrics, run_dir / "metrics.json")
    return {
        "run": _run_key(name, frac, seed),
        "method": name,
        "label_fraction": float(frac),
        "seed": seed,
        "finetune": mode,
        "val_balanced_accuracy": res.val_balanced_accuracy,
        "n_labelled_images": res.model.meta["finetune"]["train_labelled_images"],
        "n_labelled_patients": res.model.meta["finetune"]["train_labelled_patients"],
        "pretrain_dir": None if pre_dir is None else str(pre_dir),
        "model_dir": str(run_dir / "model"),
        "metrics": metrics,
    }


def _data_summary(m: Manifest) -> dict[str, Any]:
    df = m.df
    out: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        rows = df[df["split"] == split]
        out[split] = (
            f"{rows['patient_key'].nunique()} patients, {len(rows)} images, "
            f"{int((rows['label'] != '').sum())} labelled"
        )
    out["label_fraction"] = m.extra.get("label_fraction", 1.0)
    return out
