"""The label-efficiency experiment: does SSCL pretraining beat training from scratch on few labels?

For every seed and label fraction F (a patient-level subset of the training images keeps its labels,
see :func:`medcl.data.split.apply_label_fraction`; val and test are fixed), every arm of
``efficiency.methods`` (the table :data:`medcl.evaluate.arms.ARMS`):

- ``supervised``: the encoder trained from scratch on the labelled subset (``finetune.mode``,
  normally ``full``) with a fair budget (:func:`medcl.evaluate.budget.scratch_budget`: as many
  optimiser steps as pretraining + fine-tuning);
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

The experiment is a plan of jobs (:func:`plan_jobs`, one per arm, fraction and seed), each run by
ensuring its pretraining (:class:`Pretrainings`), fitting it (:func:`run_job`) and recording it.
Each run is evaluated on the test split with patient-bootstrap intervals, its predictions saved, and
appended to ``results.json`` as soon as it finishes; re-running the command skips finished runs
(pretraining runs resume from their checkpoints). At the end, :func:`paired_comparisons` adds the
paired differences each arm's record asks for (``Arm.compare_with``) over seeds × test patients.
Layout::

    OUT/splits/       label-fraction manifests
    OUT/pretrain/     simclr_s{seed}/ (dino_, vicreg_), sscl_f{F}_s{seed}/  (medcl pretrain runs)
    OUT/runs/         {method}_f{F}_s{seed}/model/, metrics.json, predictions.npz
    OUT/results.json  one record per run, and the paired differences
    OUT/report.md, OUT/efficiency.png
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medcl.config import Config, check_resume, derive, save_config
from medcl.data.dataset import manifest_geometry
from medcl.data.manifest import Manifest, read_manifest, write_manifest
from medcl.data.split import apply_label_fraction
from medcl.errors import ConfigError, MedclError
from medcl.evaluate.arms import ARMS, Arm, Pretraining, resolve_arms
from medcl.evaluate.budget import scratch_overrides
from medcl.evaluate.card import model_card
from medcl.evaluate.evaluation import evaluate_with_predictions
from medcl.evaluate.finetune import finetune, one_device_note
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


@dataclass(frozen=True)
class Job:
    """One run of the experiment: an arm at a label fraction and seed."""

    arm: Arm
    fraction: float
    seed: int

    @property
    def key(self) -> str:
        """The run's name in ``results.json`` and under ``OUT/runs/``."""
        return _run_key(self.arm.name, self.fraction, self.seed)


def plan_jobs(cfg: Config) -> list[Job]:
    """Every run of ``cfg.efficiency``, in the order they run: seeds, then fractions, then arms.

    At label fraction 1.0 only the first ``efficiency.full_label_seeds`` seeds run (0 = all).
    """
    eff = cfg.efficiency
    arms = resolve_arms(list(eff.methods), eff.linear_probe)
    full_seeds = eff.seeds[: eff.full_label_seeds] if eff.full_label_seeds else eff.seeds
    return [
        Job(arm, float(frac), seed)
        for seed in eff.seeds
        for frac in eff.fractions
        if frac < 1.0 or seed in full_seeds
        for arm in arms
    ]


def _pretrain_cfg(
    cfg: Config, manifest: Path, out: Path, seed: int, lambda_sup: float, spec: Pretraining
) -> Config:
    return derive(
        cfg,
        **{
            "data.manifest": str(manifest),
            "out": str(out),
            "method.name": spec.objective,
            "method.lambda_sup": lambda_sup,
            "trainer.seed": seed,
            **spec.overrides,
        },
    )


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


def check_experiment(cfg: Config, manifest: str | Path) -> Manifest:
    """Every refusal of the experiment, before any run; returns the split manifest.

    Refused: 3-D patch mode, unknown arms (``efficiency.methods``), a bad
    ``efficiency.scratch_augment``, a manifest without splits or without labelled training rows.
    """
    if cfg.data.volume_mode == "patches":  # the arms fine-tune encoders end to end
        raise ConfigError(
            "data.volume_mode=patches: not supported by `medcl efficiency` (its supervised and "
            "FixMatch arms train on whole volumes); use medcl pretrain + finetune (linear or knn)"
        )
    eff = cfg.efficiency
    resolve_arms(list(eff.methods), eff.linear_probe)  # an unknown arm is refused here
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
    return base


@dataclass
class Pretrainings:
    """The experiment's pretraining runs, each run (or resumed, or found complete) once.

    A label-free pretraining (``Pretraining.labelled`` false) depends on the seed only (on the
    first seed's with ``efficiency.share_simclr``) and runs on the label-free pool
    ``splits/unlabelled_s{seed}.csv``; a labelled one on the label subset of its fraction and seed.
    With ``method.lambda_sup_start`` and a SimCLR arm in the experiment, SimCLR keeps a checkpoint
    at the end of that λ1 = 0 prefix and SSCL starts from it.

    Attributes:
        cfg: The experiment's config.
        base: The split manifest with every training label.
        out: The experiment's folder.
        log: Where the "pretraining ..." lines go.
        progress: Show the pretrainings' progress bars.
        counter: Gives the ``[k/n]`` prefix of a log line.
    """

    cfg: Config
    base: Manifest
    out: Path
    log: Callable[[str], None]
    progress: bool
    counter: Callable[[], str]
    _runs: dict[tuple[str, float, int], Path] = field(default_factory=dict)

    @property
    def prefix_epochs(self) -> int:
        """Epochs of the shared λ1 = 0 prefix (0 = none shared)."""
        epochs = round(self.cfg.method.lambda_sup_start * self.cfg.optim.epochs)
        return epochs if "simclr" in self.cfg.efficiency.methods else 0

    def ensure(self, spec: Pretraining, fraction: float, seed: int, subset: Path) -> Path:
        """The run folder of ``spec`` at ``fraction`` and ``seed``, pretrained when needed.

        Args:
            spec: The pretraining.
            fraction: The label fraction (ignored by a label-free pretraining).
            seed: The seed.
            subset: The label subset's manifest (for a labelled pretraining).
        """
        if not spec.labelled:
            seed = self.cfg.efficiency.seeds[0] if self.cfg.efficiency.share_simclr else seed
            fraction = 0.0
        key = (spec.tag, fraction, seed)
        if key in self._runs:
            return self._runs[key]
        if spec.labelled:
            run = self.out / "pretrain" / f"{spec.tag}_f{_frac_tag(fraction)}_s{seed}"
            manifest, lambda_sup = subset, self.cfg.method.lambda_sup
        else:
            run = self.out / "pretrain" / f"{spec.tag}_s{seed}"
            manifest, lambda_sup = self.out / "splits" / f"unlabelled_s{seed}.csv", 0.0
            write_manifest(apply_label_fraction(self.base, 0.0, seed), manifest)
        warm = self._warm_start(spec, seed)
        if not (run / "run.json").is_file():
            where = f"fraction {_frac_tag(fraction)}, seed {seed}" if spec.labelled else ""
            where = where or f"seed {seed}"
            start = f", from SimCLR's epoch {self.prefix_epochs}" if warm else ""
            self.log(f"{self.counter()} pretraining {spec.title} ({where}{start})")
        shared = self.prefix_epochs if spec.tag == "simclr" else 0
        pretrain(
            _pretrain_cfg(self.cfg, manifest, run, seed, lambda_sup, spec),
            progress=self.progress,
            save_prefix=shared,
            warm_start=warm,
        )
        self._runs[key] = run
        return run

    def _warm_start(self, spec: Pretraining, seed: int) -> Path | None:
        """SSCL's λ1 = 0 prefix is the SimCLR run's beginning: its checkpoint, or ``None``."""
        if spec.tag != "sscl" or self.prefix_epochs == 0:
            return None
        simclr = self.ensure(ARMS["simclr"].pretraining, 0.0, seed, Path())  # type: ignore[arg-type]
        return prefix_checkpoint(simclr, self.prefix_epochs)


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
    base = check_experiment(cfg, manifest)
    out = Path(out)
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
    jobs = plan_jobs(cfg)
    header = {"manifest": str(Path(manifest).resolve()), "metric": cfg.efficiency.metric}
    pre = Pretrainings(
        cfg, base, out, log, progress, counter=lambda: f"[{len(records) + 1}/{len(jobs)}]"
    )
    for job in jobs:
        subset_path = out / "splits" / f"f{_frac_tag(job.fraction)}_s{job.seed}.csv"
        subset = apply_label_fraction(base, job.fraction, job.seed)
        write_manifest(subset, subset_path)
        if job.key in done:
            continue
        started = time.perf_counter()
        spec = job.arm.pretraining
        pre_dir = None if spec is None else pre.ensure(spec, job.fraction, job.seed, subset_path)
        rec = run_job(cfg, subset, job, pre_dir, out / "runs" / job.key)
        rec["seconds"] = time.perf_counter() - started
        records.append(rec)
        done.add(job.key)
        write_json({**header, "records": records}, results_path)
        log(
            f"[{len(records)}/{len(jobs)}] {job.arm.name} @ {_frac_tag(job.fraction)} labels, "
            f"seed {job.seed}: test {cfg.efficiency.metric} "
            f"{rec['metrics'].get(cfg.efficiency.metric, float('nan')):.3f}"
        )
    eff = cfg.efficiency
    paired = paired_comparisons(records, eff.metric, list(base.classes), eff.n_boot)
    write_json({**header, "records": records, "paired": paired}, results_path)
    report, png = write_report(records, eff.metric, out, paired=paired)
    return EfficiencyResult(out, results_path, report, png, records, paired)


def run_job(
    cfg: Config, subset: Manifest, job: Job, pre_dir: Path | None, run_dir: Path
) -> dict[str, Any]:
    """Fit ``job``'s arm on ``subset``, test it, save its model and predictions; its record.

    Args:
        cfg: The experiment's config.
        subset: The label subset of the job's fraction and seed.
        job: The job.
        pre_dir: Its pretraining run (``None`` for an arm from scratch).
        run_dir: Where the model, metrics and predictions go.
    """
    frac, seed = job.fraction, job.seed
    mode = job.arm.finetune_mode(cfg.finetune.mode)
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
    desc = res.model.description
    desc.name = f"{job.arm.name} (label fraction {_frac_tag(frac)}, seed {seed})"
    desc.record_test(metrics)
    desc.training_data = _data_summary(subset)
    save_model(run_dir / "model", res.model, card=model_card(desc, metrics))
    write_json(metrics, run_dir / "metrics.json")
    return {
        "run": job.key,
        "method": job.arm.name,
        "label_fraction": float(frac),
        "seed": seed,
        "finetune": mode,
        "val_balanced_accuracy": res.val_balanced_accuracy,
        "n_labelled_images": desc.finetune.train_labelled_images,  # type: ignore[union-attr]
        "n_labelled_patients": desc.finetune.train_labelled_patients,  # type: ignore[union-attr]
        "pretrain_dir": None if pre_dir is None else str(pre_dir),
        "model_dir": str(run_dir / "model"),
        "predictions": str(run_dir / "predictions.npz"),
        "pretrain_steps": pre_steps,
        "finetune_steps": int(res.details.get("steps", 0)),
        "metrics": metrics,
    }


def paired_comparisons(
    records: list[dict[str, Any]], metric: str, classes: list[str], n_boot: int
) -> list[dict[str, Any]]:
    """Paired differences ``A − B`` on the seeds both ran, per label fraction.

    A is every arm with rivals (``Arm.compare_with``, in the table's order) and B each of them
    present at that fraction; the interval is the seeds × test-patient bootstrap of
    :func:`medcl.evaluate.paired.paired_difference`. Runs without saved predictions are skipped.
    """
    from medcl.evaluate.paired import paired_difference

    runs: dict[tuple[str, float, int], dict[str, np.ndarray]] = {}
    for r in records:
        path = r.get("predictions")
        if path and Path(path).is_file():
            with np.load(path) as z:
                runs[(r["method"], float(r["label_fraction"]), int(r["seed"]))] = dict(z)
    rivals = {a.name: a.compare_with for a in resolve_arms(list(ARMS), True) if a.compare_with}
    out: list[dict[str, Any]] = []
    for frac in sorted({k[1] for k in runs}):
        methods = sorted({k[0] for k in runs if k[1] == frac})
        for a, against in rivals.items():
            if a not in methods:
                continue
            for b in (m for m in against if m in methods):
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
