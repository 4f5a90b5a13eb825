"""The label-efficiency experiment: does SSCL pretraining beat training from scratch on few labels?

For every seed and label fraction F (a patient-level subset of the training images keeps its labels,
see :func:`medcl.data.split.apply_label_fraction`; val and test are fixed):

- ``supervised``: the encoder trained from scratch on the labelled subset (``finetune.mode``,
  normally ``full``) with a fair budget (:func:`scratch_budget`: as many optimiser steps as
  pretraining + fine-tuning);
- ``fixmatch``: FixMatch from scratch on the labelled subset and the unlabelled pool, same budget;
  both from-scratch arms fine-tune with ``efficiency.scratch_augment`` merged over
  ``augment.options`` (their augmentation chosen on validation, like every arm's recipe);
- ``simclr``: NT-Xent pretraining on all training images with no labels (λ1 = 0), then fine-tuned
  on the subset. Its pretraining does not depend on F, so it runs once per seed and is shared
  (once for all seeds with ``efficiency.share_simclr``);
- ``dino``, ``vicreg``: the same, with DINO or VICReg as the label-free pretraining objective
  (:mod:`medcl.train.objectives`);
- ``sscl``: ``λ1·SupCon(labelled subset) + λ2·NT-Xent(all)`` pretraining (depends on F), then
  fine-tuned on the subset. With ``method.lambda_sup_start`` its λ1 = 0 beginning is the SimCLR
  run's, and it starts from that run's checkpoint;
- ``sscl+fixmatch``: the SSCL pretraining, then FixMatch fine-tuning;
- with ``efficiency.linear_probe``, ``simclr+linear`` (``dino+linear``, ``vicreg+linear``) and
  ``sscl+linear``: a logistic-regression probe on the frozen pretrained encoder.

Each run is evaluated on the test split with patient-bootstrap intervals, its predictions saved, and
appended to ``results.json`` as soon as it finishes; re-running the command skips finished runs
(pretraining runs resume from their checkpoints). At the end, :func:`paired_comparisons` adds
paired SSCL − X differences over seeds × test patients. Layout::

    OUT/splits/       label-fraction manifests
    OUT/pretrain/     simclr_s{seed}/ (dino_, vicreg_), sscl_f{F}_s{seed}/  (medcl pretrain runs)
    OUT/runs/         {method}_f{F}_s{seed}/model/, metrics.json, predictions.npz
    OUT/results.json  one record per run, and the paired differences
    OUT/report.md, OUT/efficiency.png
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medcl.config import Config, check_resume, derive, save_config
from medcl.data.dataset import manifest_geometry
from medcl.data.manifest import Manifest, read_manifest, write_manifest
from medcl.data.split import apply_label_fraction
from medcl.errors import ConfigError, MedclError
from medcl.evaluate.card import model_card
from medcl.evaluate.evaluation import evaluate_with_predictions
from medcl.evaluate.finetune import epoch_samples, finetune, one_device_note
from medcl.evaluate.model import save_model
from medcl.evaluate.report import write_report
from medcl.io import atomic_path, write_json
from medcl.train.pretrain import prefix_checkpoint, pretrain
from medcl.transforms.options import make_options
from medcl.transforms.presets import preset_for_modality


@dataclass
class EfficiencyResult:
    """Where the experiment wrote its outputs, and its records."""

    out_dir: Path
    results: Path
    report: Path
    plot: Path
    records: list[dict[str, Any]]
    paired: list[dict[str, Any]]


def _frac_tag(f: float) -> str:
    return f"{f:g}"


def _run_key(method: str, frac: float, seed: int) -> str:
    return f"{method}_f{_frac_tag(frac)}_s{seed}"


SSL_ONLY = ("simclr", "dino", "vicreg")
"""Arms pretrained without labels (λ1 = 0) by the objective of that name, then fine-tuned."""


def _pretrain_cfg(
    cfg: Config, manifest: Path, out: Path, seed: int, lambda_sup: float, objective: str = "simclr"
) -> Config:
    return derive(
        cfg,
        **{
            "data.manifest": str(manifest),
            "out": str(out),
            "method.name": objective,
            "method.lambda_sup": lambda_sup,
            "trainer.seed": seed,
        },
    )


def planned_pretrain_steps(cfg: Config, n_train: int) -> int:
    """Optimiser steps a pretraining on ``n_train`` training rows will take (one process)."""
    per_epoch = max(1, n_train // cfg.data.batch_size)  # MixedBatchSampler, drop-last
    steps = per_epoch * cfg.optim.epochs // cfg.trainer.accumulate_grad_batches
    return min(steps, cfg.optim.max_steps) if cfg.optim.max_steps > 0 else steps


def scratch_budget(cfg: Config, n_train: int, n_labelled: int) -> tuple[int, int]:
    """Fine-tuning epochs and patience of an arm that starts from nothing.

    A fair from-scratch arm gets at least as many optimiser steps as pretraining and fine-tuning
    together: ``finetune.epochs`` plus the pretraining's steps in fine-tuning epochs
    (:func:`medcl.evaluate.finetune.epoch_samples`). Patience grows in proportion, but at most to
    twice ``finetune.patience``: a network trained from nothing improves on validation by fits and
    starts, so it gets more patience than a pretrained one, yet a proportional patience (33
    epochs in the demo) lets every run go to its last epoch. Measured on the demo's validation
    split (supervised from scratch, 62 epochs): at 5 % labels the best epoch was the 32nd and
    nothing better came in the 30 after it; at 100 % it kept improving to the end, with at most 9
    epochs between improvements. Early stopping on validation then picks how much of the budget
    is used.
    """
    ft = cfg.finetune
    per_epoch = epoch_samples(ft, n_labelled) // ft.batch_size
    extra = math.ceil(planned_pretrain_steps(cfg, n_train) / max(1, per_epoch))
    epochs = ft.epochs + extra
    grown = round(ft.patience * epochs / ft.epochs)
    return epochs, max(ft.patience, min(2 * ft.patience, grown))


def scratch_overrides(cfg: Config, subset: Manifest) -> dict[str, Any]:
    """The config changes of an arm that starts from nothing, for :func:`derive`.

    ``finetune.epochs`` and ``patience`` from :func:`scratch_budget` (with
    ``efficiency.fair_budget``), and ``efficiency.scratch_augment`` as ``augment.options`` (which
    ``derive`` merges over the current options).
    """
    fields: dict[str, Any] = {}
    if cfg.efficiency.fair_budget:
        df = subset.df
        train = df["split"] == "train"
        epochs, patience = scratch_budget(
            cfg, int(train.sum()), int((train & (df["label"] != "")).sum())
        )
        fields.update({"finetune.epochs": epochs, "finetune.patience": patience})
    if cfg.efficiency.scratch_augment:
        fields["augment.options"] = dict(cfg.efficiency.scratch_augment)
    return fields


def one_device(cfg: Config, log: Callable[[str], None] = print) -> Config:
    """``cfg`` with every run of the experiment on one device, said in one line when it asked
    for more.

    The experiment is hundreds of short trainings in one process; Lightning's DDP launcher would
    re-run the whole command in every other rank, each writing the same results. So its
    pretraining and fine-tuning run on one device of ``trainer.accelerator`` with
    ``trainer.precision``; multi-device pretraining is ``medcl pretrain``.
    """
    if one_device_note(cfg, "") is None:
        return cfg
    t = cfg.trainer
    log(
        f"medcl efficiency runs every pretraining and fine-tuning on one device "
        f"(trainer.devices={t.devices}, trainer.num_nodes={t.num_nodes}, "
        f"trainer.strategy={t.strategy} not used; multi-device pretraining: medcl pretrain)"
    )
    return derive(
        cfg,
        **{
            "trainer.devices": 1,
            "trainer.num_nodes": 1,
            "trainer.strategy": "auto",
            "trainer.sync_batchnorm": "auto",
        },
    )


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
    cfg.trainer.check_hardware()  # before the manifest is read
    cfg = one_device(cfg, log)
    if cfg.data.volume_mode == "patches":  # the arms fine-tune encoders end to end
        raise ConfigError(
            "data.volume_mode=patches: not supported by `medcl efficiency` (its supervised and "
            "FixMatch arms train on whole volumes); use medcl pretrain + finetune (linear or knn)"
        )
    eff = cfg.efficiency
    out = Path(out)
    base = read_manifest(manifest)
    if (base.df["split"] == "").any():
        raise MedclError(f"{manifest}: rows without a split; run `medcl split` first")
    if eff.scratch_augment:  # a bad option name or value is refused before any run
        preset = cfg.augment.preset
        if preset == "auto":
            preset = preset_for_modality(manifest_geometry(base)[1])
        try:
            make_options(preset, {**cfg.augment.options, **eff.scratch_augment})
        except ConfigError as exc:
            raise ConfigError(f"efficiency.scratch_augment: {exc}") from None
    if not ((base.df["split"] == "train") & (base.df["label"] != "")).any():
        raise MedclError(f"{manifest}: no labelled training rows")
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    saved = out / "config.yaml"
    if results_path.is_file():
        check_resume(
            saved, cfg, f"{out} holds results of a different config; choose another output folder"
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

    per_run = len(eff.methods) + eff.linear_probe * sum(
        m in (*SSL_ONLY, "sscl") for m in eff.methods
    )
    full_seeds = min(len(eff.seeds), eff.full_label_seeds or len(eff.seeds))
    n_total = per_run * sum(full_seeds if f >= 1.0 else len(eff.seeds) for f in eff.fractions)
    prefix_epochs = round(cfg.method.lambda_sup_start * cfg.optim.epochs)
    share_prefix = prefix_epochs > 0 and "simclr" in eff.methods
    ssl_dirs: dict[tuple[str, int], Path] = {}

    def simclr_run(seed: int, objective: str = "simclr") -> Path:
        """The label-free pretraining of ``seed`` with ``objective`` (SimCLR, DINO or VICReg; one
        for all seeds with ``share_simclr``)."""
        s = eff.seeds[0] if eff.share_simclr else seed
        if (objective, s) not in ssl_dirs:
            pool_path = out / "splits" / f"unlabelled_s{s}.csv"
            write_manifest(apply_label_fraction(base, 0.0, s), pool_path)
            run = out / "pretrain" / f"{objective}_s{s}"
            if not (run / "run.json").is_file():
                title = {"simclr": "SimCLR", "dino": "DINO", "vicreg": "VICReg"}[objective]
                log(f"[{len(records) + 1}/{n_total}] pretraining {title} (seed {s})")
            share = share_prefix and objective == "simclr"
            pretrain(
                _pretrain_cfg(cfg, pool_path, run, s, 0.0, objective),
                progress=progress,
                save_prefix=prefix_epochs if share else 0,
            )
            ssl_dirs[objective, s] = run
        return ssl_dirs[objective, s]

    for seed in eff.seeds:
        for frac in eff.fractions:
            if (
                frac >= 1.0
                and eff.full_label_seeds
                and seed not in eff.seeds[: eff.full_label_seeds]
            ):
                continue
            split_path = out / "splits" / f"f{_frac_tag(frac)}_s{seed}.csv"
            subset = apply_label_fraction(base, float(frac), seed)
            write_manifest(subset, split_path)
            jobs: list[tuple[str, str]] = []  # (record method, finetune mode)
            for method in eff.methods:
                fixmatch = method in ("fixmatch", "sscl+fixmatch")
                jobs.append((method, "fixmatch" if fixmatch else cfg.finetune.mode))
                if method in (*SSL_ONLY, "sscl") and eff.linear_probe:
                    jobs.append((f"{method}+linear", "linear"))
            for name, mode in jobs:
                key = _run_key(name, frac, seed)
                if key in done:
                    continue
                started = time.perf_counter()
                method = name.split("+")[0]
                pre_dir: Path | None = None
                if method in SSL_ONLY:
                    pre_dir = simclr_run(seed, method)
                elif method == "sscl":
                    pre_dir = out / "pretrain" / f"sscl_f{_frac_tag(frac)}_s{seed}"
                    # SSCL's λ1 = 0 prefix is the SimCLR run's beginning: start from its checkpoint
                    warm = (
                        prefix_checkpoint(simclr_run(seed), prefix_epochs) if share_prefix else None
                    )
                    if not (pre_dir / "run.json").is_file():
                        log(
                            f"[{len(records) + 1}/{n_total}] pretraining SSCL "
                            f"(fraction {_frac_tag(frac)}, seed {seed}"
                            + (f", from SimCLR's epoch {prefix_epochs})" if warm else ")")
                        )
                    pretrain(
                        _pretrain_cfg(cfg, split_path, pre_dir, seed, cfg.method.lambda_sup),
                        progress=progress,
                        warm_start=warm,
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
    paired = paired_comparisons(records, eff.metric, list(base.classes), eff.n_boot)
    write_json(
        {
            "manifest": str(Path(manifest).resolve()),
            "metric": eff.metric,
            "records": records,
            "paired": paired,
        },
        results_path,
    )
    report, png = write_report(records, eff.metric, out, paired=paired)
    return EfficiencyResult(out, results_path, report, png, records, paired)


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
    fields: dict[str, Any] = {"finetune.mode": mode, "trainer.seed": seed}
    pre_steps = 0
    if pre_dir is not None:
        pre_steps = int(json.loads((pre_dir / "run.json").read_text()).get("steps", 0))
    else:
        fields.update(scratch_overrides(cfg, subset))
    res = finetune(derive(cfg, **fields), subset, pretrained=pre_dir)
    metrics, preds = evaluate_with_predictions(
        res.model, subset, "test", n_boot=cfg.efficiency.n_boot, seed=seed
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(run_dir / "predictions.npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **preds)  # a half-written file is never read
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
        "predictions": str(run_dir / "predictions.npz"),
        "pretrain_steps": pre_steps,
        "finetune_steps": int(res.details.get("steps", 0)),
        "metrics": metrics,
    }


COMPARISONS = {
    "sscl": ("supervised", "fixmatch", "simclr", "dino", "vicreg"),
    "sscl+linear": ("simclr+linear", "dino+linear", "vicreg+linear"),
    "sscl+fixmatch": ("supervised", "fixmatch", "simclr", "sscl"),
}
"""Which arms each SSCL arm is compared with: like with like (fine-tuned with fine-tuned, probe
with probe)."""


def paired_comparisons(
    records: list[dict[str, Any]], metric: str, classes: list[str], n_boot: int
) -> list[dict[str, Any]]:
    """Paired differences ``A − B`` on the seeds both ran, per label fraction.

    A is each SSCL arm and B each arm of :data:`COMPARISONS` present at that fraction; the
    interval is the seeds × test-patient bootstrap of
    :func:`medcl.evaluate.paired.paired_difference`. Runs without saved predictions are skipped.
    """
    from medcl.evaluate.paired import paired_difference

    runs: dict[tuple[str, float, int], dict[str, np.ndarray]] = {}
    for r in records:
        path = r.get("predictions")
        if path and Path(path).is_file():
            with np.load(path) as z:
                runs[(r["method"], float(r["label_fraction"]), int(r["seed"]))] = dict(z)
    out: list[dict[str, Any]] = []
    for frac in sorted({k[1] for k in runs}):
        methods = sorted({k[0] for k in runs if k[1] == frac})
        for a, rivals in COMPARISONS.items():
            if a not in methods:
                continue
            for b in (m for m in rivals if m in methods):
                seeds = sorted(
                    {k[2] for k in runs if k[:2] == (a, frac)}
                    & {k[2] for k in runs if k[:2] == (b, frac)}
                )
                if not seeds:
                    continue
                ref = runs[(a, frac, seeds[0])]
                if any(
                    not np.array_equal(runs[(m, frac, s)]["image_id"], ref["image_id"])
                    for m in (a, b)
                    for s in seeds
                ):
                    raise MedclError(f"runs at fraction {frac:g} were tested on different images")
                d = paired_difference(
                    ref["y"],
                    ref["patient"] if "patient" in ref else ref["patient_key"],
                    [runs[(a, frac, s)]["proba"] for s in seeds],
                    [runs[(b, frac, s)]["proba"] for s in seeds],
                    classes,
                    metric,
                    n_boot=n_boot,
                )
                out.append({"label_fraction": frac, "a": a, "b": b, "seeds": seeds, **d})
    return out


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
