"""``medcl demo``: the whole pipeline on the embedded phantom cohort, end to end.

synth cohort → ingest (de-identified manifest + cache) → patient-level split (50/20/30) →
label-efficiency experiment (supervised from scratch, FixMatch, SSCL pretraining + fine-tuning,
self-training and SSCL + self-training, at 5 % of the training labels with 3 seeds and at 100 %
with one) → the headline: medcl's pick (chosen on validation) against supervised as a paired
difference, then each arm → the pick's model of seed 0 at 5 % labels exported with its test
metrics, embeddings and model card → a run folder the dashboard opens. Every step is skipped when
its output is already there, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medcl.config import Config, derive, load_config, save_config
from medcl.data.leaks import find_leaks, write_leak_report
from medcl.data.manifest import read_manifest, write_manifest
from medcl.data.split import split_manifest
from medcl.errors import MedclError

FULL = {
    "patients": 600,
    "size": 48,
    "overrides": [
        "data.image_size=48",
        "data.batch_size=32",
        "data.images_per_patient=2",
        "data.labelled_share=0.5",
        "model.encoder=resnet10",
        "model.width=0.25",
        "model.pool=avgmax",
        "model.proj_dim=64",
        "model.proj_hidden=256",
        "method.temperature=0.2",
        "method.group_positives=true",
        "method.lambda_sup=2.0",
        "optim.epochs=20",
        "optim.lr=0.002",
        "finetune.epochs=15",
        "finetune.patience=8",
        "finetune.batch_size=32",
        "finetune.epoch_steps=16",
        "finetune.lr=0.002",
        "finetune.encoder_lr_mult=1.0",
        "method.lambda_sup_start=0.5",
        "efficiency.fractions=[0.05, 1.0]",
        "efficiency.seeds=[0, 1, 2]",
        "efficiency.full_label_seeds=1",
        "finetune.fixmatch_mu=1",
        "efficiency.methods=[supervised, fixmatch, sscl, selftrain, sscl+selftrain]",
        "efficiency.n_boot=500",
        "efficiency.scratch_augment={p_affine: 1.0, rotate_deg: 25, scale_range: [0.8, 1.2], "
        "translate_frac: 0.1, p_blur: 0.4, noise_std_range: [0.0, 0.06]}",
        "trainer.monitor_every_n_epochs=10",
    ],
}
"""The CPU recipe, chosen on validation (``benchmarks/recipe_sweep.py`` and per-arm runs on the
validation split; the test split is read once per arm at the end): a narrow ResNet-10 at 48 px;
pretraining batches of 16 patients × 2 images, so that same-patient positives (MICLe) meet in
every batch; SSCL switching SupCon on (λ1 = 2, half of each batch labelled) after half of its
epochs; the from-scratch arms with stronger geometric augmentation (their own, chosen on
validation: 0.710 against 0.646 with the preset's, mean of 3 seeds at 5 %); FixMatch with one
unlabelled image per labelled one (μ = 1: 0.702 on validation at a third of μ = 3's time, 0.683);
self-training from the supervised model with patient-pooled pseudo-labels (τ = 0.8: 0.757 on
validation against the supervised teacher's 0.702, 3 seeds); every arm trained on its own (no
shared prefix); 3 seeds at 5 % labels and one at 100 %. medcl's pick is chosen among the arms on
validation."""
QUICK = {
    "patients": 36,
    "size": 32,
    "overrides": [
        "data.image_size=32",
        "data.batch_size=16",
        "data.num_workers=0",
        "model.encoder=resnet10",
        "model.width=0.125",
        "model.proj_dim=16",
        "model.proj_hidden=32",
        "optim.epochs=1",
        "finetune.epochs=2",
        "finetune.batch_size=8",
        "efficiency.fractions=[0.1]",
        "efficiency.seeds=[0]",
        "efficiency.methods=[supervised, sscl]",
        "efficiency.linear_probe=false",
        "efficiency.n_boot=50",
    ],
}


COHORTS = {"phantom": "phantom cohort", "brain": "brain cohort (MNI152 template, atrophy grades)"}
"""The cohorts :func:`build_demo_data` can build, with the name its log line gives them."""

TASKS = ("multiclass", "multilabel")
"""The demo's tasks: the phantom's lesion count (one class per image), or its three independent
findings (lesion in the organ, nodule outside it, dilated vessel; several per image)."""

SPLIT = (0.2, 0.3)
"""Validation and test shares of the patients: large held-out splits, so that the patient-bootstrap
intervals can separate methods (docs/comparing.md)."""


@dataclass
class DemoResult:
    """Paths and the headline of a demo run."""

    out_dir: Path
    headline: str
    summary: dict[str, Any]


def demo_config(quick: bool, out: Path, threads: int = 0) -> Config:
    """The config the demo uses (``quick`` for tests: about a minute)."""
    preset = QUICK if quick else FULL
    extra = [f"trainer.threads={threads}"] if threads else []
    return load_config(None, [*preset["overrides"], f"out={out}", *extra])


def build_demo_data(
    out: Path,
    patients: int,
    size: int = 64,
    seed: int = 0,
    log: Any = print,
    cohort: str = "phantom",
    task: str = "multiclass",
) -> Path:
    """A generated cohort → de-identified manifest → patient split, under ``out/data``.

    Args:
        out: Work folder; everything is written under ``out/data``.
        patients: Number of patients to generate.
        size: Rows and columns of the generated images.
        seed: Seed of the cohort and of the split.
        log: Called with each progress line.
        cohort: ``"phantom"`` (the demo's lesion-count phantom, :mod:`medcl.data.synth`) or
            ``"brain"`` (grades of atrophy on the MNI152 template, :mod:`medcl.data.synth.brain`;
            needs nilearn).
        task: ``"multiclass"`` or ``"multilabel"`` (the phantom's findings, a multi-label
            manifest; phantom only).

    Returns:
        The split manifest (every training label kept). Each step is skipped when its output is
        there. The split is a function of the files and ``seed`` only (not of the secret).

    Raises:
        MedclError: ``cohort`` or ``task`` is unknown, or ``out/data`` already holds another
            cohort or task.
    """
    from medcl.data.ingest import ingest

    if cohort not in COHORTS:
        raise MedclError(f"cohort must be one of {', '.join(COHORTS)}, got {cohort!r}")
    if task not in TASKS:
        raise MedclError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if task == "multilabel" and cohort != "phantom":
        raise MedclError("the multi-label demo task is the phantom's findings: use cohort phantom")
    data = Path(out) / "data"
    folder = data / "cohort"
    what = "" if task == "multiclass" else ", multi-label findings"
    log(f"[1/6] {COHORTS[cohort]}{what}: {patients} patients, {size} px MR")
    classes = _generate(folder, cohort, patients, size, seed, task)
    log("[2/6] ingest → de-identified manifest + training cache")
    manifest = data / "manifest.csv"
    by_task = {"classes": classes} if task == "multiclass" else {"findings": classes}
    rep = ingest(
        folder,
        manifest,
        labels=folder / "labels.csv",
        workers=min(2, os.cpu_count() or 1),
        secret=data / "secret.key",
        task=task,
        **by_task,
    )
    log(f"      {rep.rows} images, {rep.rejected} files not images (listed in {rep.rejects.name})")
    val, test = SPLIT
    shares = f"{100 * (1 - val - test):.0f}/{100 * val:.0f}/{100 * test:.0f}"
    log(f"[3/6] patient-level split ({shares} train/val/test, stratified)")
    split_full = data / "split_full.csv"
    if not split_full.is_file():
        full = split_manifest(read_manifest(manifest), val=val, test=test, seed=seed)
        write_manifest(full, split_full)
    return split_full


def _generate(
    folder: Path, cohort: str, patients: int, size: int, seed: int, task: str = "multiclass"
) -> list[str]:
    """Write ``cohort`` into ``folder`` unless it is there; returns its classes in label order
    (its findings, for the multi-label task)."""
    from medcl.data import synth
    from medcl.data.synth import brain
    from medcl.data.synth.spec import GENERATOR

    record = folder / "cohort.json"
    generator = {"phantom": GENERATOR, "brain": brain.GENERATOR}[cohort]
    if record.is_file():
        held = json.loads(record.read_text(encoding="utf-8"))
        found, found_task = held.get("generator"), held.get("task", "multiclass")
        if found != generator or found_task != task:
            raise MedclError(
                f"{folder} holds a {found_task} cohort from {found!r}, not the {cohort} cohort's "
                f"{task} task; use another output folder for each cohort and task"
            )
    elif cohort == "phantom":
        synth.generate_cohort(
            folder,
            patients=patients,
            seed=seed,
            modality="mr",
            size=size,
            dims=2,
            workers=0,
            task=task,
        )
    else:
        brain.generate_brain_cohort(folder, patients=patients, seed=seed, size=size, workers=0)
    if task == "multilabel":
        return list(synth.FINDINGS)
    return list(synth.CLASSES if cohort == "phantom" else brain.CLASSES)


def run_demo(
    out: str | Path = "runs/demo",
    quick: bool = False,
    seed: int = 0,
    log: Any = print,
    task: str = "multiclass",
) -> DemoResult:
    """Run the demo into ``out``; returns the headline and the run summary.

    ``task="multilabel"`` runs it on the phantom's three findings: a multi-label manifest, heads
    with one sigmoid per finding, and macro AUROC as the headline metric."""
    from medcl.evaluate.bundle import export_bundle
    from medcl.evaluate.efficiency import run_parallel
    from medcl.evaluate.embed import embed_manifest, write_embeddings
    from medcl.evaluate.label_budget import LabelBudget
    from medcl.evaluate.model import load_model
    from medcl.evaluate.pick import picks_at
    from medcl.evaluate.report import headline as eff_headline
    from medcl.io import atomic_dir, atomic_path, write_json

    started = time.perf_counter()
    out = Path(out)
    try:  # refuse an unusable run folder before minutes of work
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MedclError(f"{out}: cannot create the run folder ({exc.strerror})") from None
    preset = QUICK if quick else FULL
    # two shards of the experiment in two processes of one thread each: on two cores that is
    # faster than one process with two threads (small networks use a second thread poorly)
    workers = 1 if quick else min(2, os.cpu_count() or 1)
    cfg = demo_config(quick, out, threads=1 if workers > 1 else 0)
    data = out / "data"
    fraction = cfg.efficiency.fractions[0]

    split_full = build_demo_data(
        out, patients=preset["patients"], size=preset["size"], seed=seed, log=log, task=task
    )
    cfg = derive(cfg, **{"data.manifest": str(split_full)})
    save_config(cfg, out / "config.yaml")
    log(
        f"[4/6] label-efficiency experiment: {cfg.efficiency.methods} × fractions "
        f"{cfg.efficiency.fractions} (pretraining and fine-tuning on the CPU takes a while)"
    )
    eff = run_parallel(
        cfg, split_full, out / "efficiency", workers, log=lambda s: log("      " + s)
    )
    budget = LabelBudget(fraction=fraction)
    first = cfg.efficiency.seeds[0]
    pick = next(p for p in picks_at(eff.picks, budget) if p["seed"] == first)
    log(
        f"[5/6] export medcl's pick ({pick['method']}, chosen on validation), its test metrics "
        "and embeddings"
    )
    main = out / "efficiency" / "runs" / pick["run"]
    with atomic_dir(out / "model") as tmp:
        shutil.copytree(main / "model", tmp, dirs_exist_ok=True)
    with atomic_path(out / "metrics.json") as tmp:
        shutil.copyfile(main / "metrics.json", tmp)
    split = read_manifest(out / "efficiency" / "splits" / f"{budget.tag}_s{first}.csv")
    write_manifest(split, data / "split.csv")
    leaks = find_leaks(split)  # near-duplicates across the splits, for the dashboard
    write_leak_report(leaks, data / "split.csv")
    log(f"      {leaks.summary()}")
    table = embed_manifest(load_model(out / "model"), split, seed=seed)
    write_embeddings(table, out / "embeddings.parquet")
    bundle = export_bundle(out / "model", out / "bundle").out_dir  # medcl.evaluate.bundle
    log(f"      MONAI bundle: {bundle} (python -m monai.bundle run, or medcl predict {bundle})")
    log("[6/6] report")
    headline = eff_headline(eff.records, eff.paired, eff.metric, budget, eff.picks)
    summary = {
        "kind": "medcl-run",
        "headline": headline,
        "manifest": "data/split.csv",
        "metrics": "metrics.json",
        "embeddings": "embeddings.parquet",
        "model": "model",
        "efficiency": "efficiency/results.json",
        "efficiency_report": "efficiency/report.md",
        "efficiency_plot": "efficiency/efficiency.png",
        "config": "config.yaml",
        "label_fraction": fraction,
        "pick": pick["method"],
        "task": task,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(summary, out / "run_summary.json")
    return DemoResult(out, headline, summary)
