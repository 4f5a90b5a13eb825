"""The label-efficiency experiment: which way of using few labels and many unlabelled images wins?

For every label budget (a fraction of the labelled training images, ``efficiency.fractions``, or a
number of labelled images per class, ``efficiency.labels_per_class``; a patient-level subset of the
training images keeps its labels, see :mod:`medcl.evaluate.label_budget`; val and test are fixed)
and seed, every arm of ``efficiency.methods`` (the table :data:`medcl.evaluate.arms.ARMS`) runs:

- ``supervised``: the encoder trained from scratch on the labelled subset (``finetune.mode``,
  normally ``full``);
- ``fixmatch``: FixMatch from scratch on the labelled subset and the unlabelled pool; both
  from-scratch arms fine-tune with ``efficiency.scratch_augment`` merged over ``augment.options``
  (their augmentation chosen on validation, like every arm's recipe);
- ``simclr``: NT-Xent pretraining on all training images with no labels (λ1 = 0), then fine-tuned
  on the subset. Its pretraining does not depend on the budget, so it runs once per seed
  (once for all seeds with ``efficiency.share_simclr``);
- ``dino``, ``vicreg``: the same, with DINO or VICReg as the label-free pretraining objective
  (:mod:`medcl.train.objectives`);
- ``sscl``: ``λ1·SupCon(labelled subset) + λ2·NT-Xent(all)`` pretraining (depends on the
  budget), then fine-tuned on the subset;
- ``sscl+fixmatch``: the SSCL pretraining, then FixMatch fine-tuning;
- with ``efficiency.linear_probe``, ``simclr+linear`` (``dino+linear``, ``vicreg+linear``) and
  ``sscl+linear``: a logistic-regression probe on the frozen pretrained encoder.

Every fitting stage has the same budget rule (:mod:`medcl.evaluate.budget`): at most the
from-scratch cap of epochs, early-stopped on validation. An arm's runs depend on its own config
and seed only, never on which other arms run: arms share a pretraining only where it is the same
run (SSCL's for ``sscl`` and ``sscl+fixmatch``).

The experiment is a plan of jobs (:func:`~medcl.evaluate.plan.plan_jobs`, one per arm, budget and
seed), each run by
ensuring its pretraining (:class:`Pretrainings`), fitting it (:func:`run_job`) and recording it.
Each run is evaluated on the test split with patient-bootstrap intervals, its predictions saved, and
appended to ``results.json`` as soon as it finishes; re-running the command skips finished runs
(pretraining runs resume from their checkpoints), and adding arms, seeds or budgets to a finished
experiment runs only what is new. At the end medcl's pick (:mod:`medcl.evaluate.pick`) is chosen
on validation for every budget and seed, and the paired differences each arm asks for
(``Arm.compare_with``) and the pick's against supervised are added, over seeds × test patients
(:mod:`medcl.evaluate.comparisons`). A binary task's headline metric is the positive class's
AUROC (``efficiency.metric: auto``), its paired differences are differences of AUROC, and its
pick is chosen on validation AUROC; a multi-class task's are balanced accuracy. A multi-label
task's (``task: multilabel``) are the macro AUROC over its findings (test records: per-finding
AUROC with intervals, :func:`medcl.evaluate.evaluation.evaluate_findings`; the pick: validation
macro AUROC, ``val_macro_auroc``). An arm whose pretraining or fitting refuses a multi-label task
(raises :class:`~medcl.errors.MedclError`) is recorded as refused with that one line
(``refused``) and the experiment goes on; the report lists it. Layout::

    OUT/splits/       label-subset manifests (f0.05_s0.csv, k2_s0.csv, unlabelled_s0.csv)
    OUT/pretrain/     simclr_s{seed}/ (dino_, vicreg_), sscl_{budget}_s{seed}/ (pretraining runs)
    OUT/runs/         {method}_{budget}_s{seed}/model/, metrics.json, predictions.npz
    OUT/results.json  one record per run, the picks and the paired differences
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

from medcl.config import Config, check_resume, derive, load_config, save_config
from medcl.data.dataset import manifest_geometry
from medcl.data.manifest import Manifest, read_manifest, write_manifest
from medcl.data.split import apply_label_fraction
from medcl.errors import ConfigError, MedclError
from medcl.evaluate.arms import ARMS, Pretraining, resolve_arms
from medcl.evaluate.budget import budget_rule, stage_overrides
from medcl.evaluate.card import model_card
from medcl.evaluate.comparisons import paired_comparisons
from medcl.evaluate.evaluation import evaluate_with_predictions
from medcl.evaluate.finetune import finetune, one_device_note
from medcl.evaluate.fixmatch import check_fixmatch_views
from medcl.evaluate.label_budget import LabelBudget
from medcl.evaluate.model import load_model, save_model
from medcl.evaluate.pick import BINARY_VAL_KEY, MULTILABEL_VAL_KEY, choose_picks, pick_key
from medcl.evaluate.plan import Job, Shard, plan_jobs
from medcl.evaluate.report import write_report
from medcl.io import atomic_path, write_json
from medcl.models.init import check_init
from medcl.train.objectives import check_objective_options
from medcl.train.pretrain import pretrain
from medcl.transforms.options import make_options
from medcl.transforms.presets import preset_for_modality


@dataclass
class EfficiencyResult:
    """Where the experiment wrote its outputs, its records, picks and paired differences."""

    out_dir: Path
    results: Path
    report: Path
    plot: Path
    records: list[dict[str, Any]]
    paired: list[dict[str, Any]]
    picks: list[dict[str, Any]] = field(default_factory=list)
    metric: str = "balanced_accuracy"


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


def headline_metric(metric: str, classes: list[str], multilabel: bool = False) -> str:
    """The metric ``efficiency.metric`` means for a task with these classes: ``auto`` is
    ``macro_auroc`` for a multi-label task, ``auroc`` with two classes, else
    ``balanced_accuracy``.

    Raises:
        ConfigError: ``auroc`` for a task of more than two classes; any metric but
            ``macro_auroc`` for a multi-label task.
    """
    if multilabel:
        if metric not in ("auto", "macro_auroc"):
            raise ConfigError(
                f"efficiency.metric: {metric} is a single-label metric; a multi-label task is "
                "measured by macro_auroc (or auto)"
            )
        return "macro_auroc"
    binary = len(classes) == 2
    if metric == "auto":
        return "auroc" if binary else "balanced_accuracy"
    if metric == "auroc" and not binary:
        raise ConfigError(
            f"efficiency.metric: auroc is for binary tasks, the manifest has {len(classes)} "
            "classes (macro_auroc, or auto: balanced_accuracy)"
        )
    return metric


def check_experiment(cfg: Config, manifest: str | Path) -> Manifest:
    """Every refusal of the experiment, before any run; returns the split manifest.

    Refused: 3-D patch mode, unknown arms (``efficiency.methods``), bad options of an arm's
    pretraining objective (``method.options``), a ``model.init`` that names no weights, a bad
    ``efficiency.scratch_augment`` or FixMatch view option, a manifest
    without splits or without labelled training rows, ``efficiency.metric: auroc`` for more than
    two classes or for a test split without both classes.
    """
    if cfg.data.volume_mode == "patches":  # the arms fine-tune encoders end to end
        raise ConfigError(
            "data.volume_mode=patches: not supported by `medcl efficiency` (its supervised and "
            "FixMatch arms train on whole volumes); use medcl pretrain + finetune (linear or knn)"
        )
    eff = cfg.efficiency
    arms = resolve_arms(list(eff.methods), eff.linear_probe)  # an unknown arm is refused here
    # every arm's pretraining objective and its options (method.options.<name>)
    check_objective_options(cfg, [a.pretraining.objective for a in arms if a.pretraining])
    check_init(cfg)  # model.init names weights that exist
    base = read_manifest(manifest)
    if (base.df["split"] == "").any():
        raise MedclError(f"{manifest}: rows without a split; run `medcl split` first")
    dims, modality = manifest_geometry(base)
    preset = cfg.augment.preset if cfg.augment.preset != "auto" else preset_for_modality(modality)
    if eff.scratch_augment:  # a bad option name or value is refused before any run
        try:
            make_options(preset, {**cfg.augment.options, **eff.scratch_augment})
        except ConfigError as exc:
            raise ConfigError(f"efficiency.scratch_augment: {exc}") from None
    for arm in arms:  # FixMatch's view options, with the options its arm fine-tunes with
        if arm.finetune_mode(cfg.finetune.mode) == "fixmatch":
            scratch = eff.scratch_augment if arm.pretraining is None else {}
            check_fixmatch_views(derive(cfg, **{"augment.options": dict(scratch)}), preset, dims)
    if not ((base.df["split"] == "train") & (base.df["label"] != "")).any():
        raise MedclError(f"{manifest}: no labelled training rows")
    metric = headline_metric(eff.metric, list(base.classes), base.multilabel)
    if metric == "macro_auroc" and base.multilabel:
        test = base.subset((base.df["split"] == "test") & (base.df["label"] != "")).findings()
        if not ((test == 1).any(axis=0) & (test == 0).any(axis=0)).any():
            raise MedclError(
                f"{manifest}: no finding is both present and absent among the labelled test "
                "rows; the macro AUROC is undefined"
            )
    if metric == "auroc":
        test = base.df.loc[(base.df["split"] == "test") & (base.df["label"] != ""), "label"]
        if test.nunique() < 2:
            raise ConfigError(
                f"efficiency.metric: AUROC needs both classes among the labelled test rows of "
                f"{manifest} (found {sorted(test.unique())}); set efficiency.metric: "
                "balanced_accuracy"
            )
    return base


PLAN_FIELDS = (
    "efficiency.methods",
    "efficiency.seeds",
    "efficiency.fractions",
    "efficiency.labels_per_class",
    "efficiency.full_label_seeds",
    "efficiency.linear_probe",
)
"""What may change between an experiment and its continuation: which runs it holds, not how any
run is computed (nor ``efficiency.metric``, a :data:`~medcl.config.RESUMABLE_FIELDS`). Adding
arms, seeds or budgets re-uses the finished runs."""


def _check_continuation(saved: Path, cfg: Config, out: Path) -> None:
    """Refuse to continue ``out`` unless its saved config equals ``cfg`` outside the plan."""
    if not saved.is_file():
        return
    try:
        before = load_config(saved)
    except ConfigError:
        before = None  # compared as it stands: refused below
    current = cfg
    if before is not None:  # the saved plan in place of the current one: only the rest counts
        current = derive(cfg, **{k: _get(before, k) for k in PLAN_FIELDS})
    check_resume(
        saved,
        current,
        f"{out} holds results of a different config (only efficiency.methods, seeds, fractions, "
        "labels_per_class, full_label_seeds, linear_probe and metric may change); choose another "
        "output folder",
    )


def _get(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


@dataclass
class Pretrainings:
    """The experiment's pretraining runs, each run (or resumed, or found complete) once.

    A label-free pretraining (``Pretraining.labelled`` false) depends on the seed only (on the
    first seed's with ``efficiency.share_simclr``) and runs on the label-free pool
    ``splits/unlabelled_s{seed}.csv``; a labelled one on the label subset of its budget and seed.
    Each is exactly the run its arm would compute alone: no run starts from another's checkpoint.

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
    _runs: dict[tuple[str, str, int], Path] = field(default_factory=dict)

    def ensure(self, spec: Pretraining, budget: LabelBudget, seed: int, subset: Path) -> Path:
        """The run folder of ``spec`` at ``budget`` and ``seed``, pretrained when needed.

        Args:
            spec: The pretraining.
            budget: The label budget (ignored by a label-free pretraining).
            seed: The seed.
            subset: The label subset's manifest (for a labelled pretraining).
        """
        if not spec.labelled:
            seed = self.cfg.efficiency.seeds[0] if self.cfg.efficiency.share_simclr else seed
        key = (spec.tag, budget.tag if spec.labelled else "", seed)
        if key in self._runs:
            return self._runs[key]
        if spec.labelled:
            run = self.out / "pretrain" / f"{spec.tag}_{budget.tag}_s{seed}"
            manifest, lambda_sup = subset, self.cfg.method.lambda_sup
            where = f"{budget.text} labels, seed {seed}"
        else:
            run = self.out / "pretrain" / f"{spec.tag}_s{seed}"
            manifest, lambda_sup = self.out / "splits" / f"unlabelled_s{seed}.csv", 0.0
            write_manifest(apply_label_fraction(self.base, 0.0, seed), manifest)
            where = f"seed {seed}"
        if not (run / "run.json").is_file():
            self.log(f"{self.counter()} pretraining {spec.title} ({where})")
        pretrain(
            _pretrain_cfg(self.cfg, manifest, run, seed, lambda_sup, spec), progress=self.progress
        )
        self._runs[key] = run
        return run


def _finished(out: Path, jobs: list[Job]) -> list[dict[str, Any]]:
    """The records of ``jobs`` already written to ``results.json`` or a shard's file, in plan
    order (the first copy of a run wins)."""
    order = {j.key: i for i, j in enumerate(jobs)}
    found: dict[str, dict[str, Any]] = {}
    for path in [out / "results.json", *sorted((out / "shards").glob("*.json"))]:
        if path.is_file():
            for r in json.loads(path.read_text()).get("records", []):
                if r["run"] in order:
                    found.setdefault(r["run"], r)
    return sorted(found.values(), key=lambda r: order[r["run"]])


def run_efficiency(
    cfg: Config,
    manifest: str | Path,
    out: str | Path,
    log: Callable[[str], None] = print,
    progress: bool = True,
    shard: Shard | None = None,
    collect: bool = False,
) -> EfficiencyResult:
    """Run (or resume, or extend) the experiment described by ``cfg.efficiency``.

    Args:
        cfg: The run config; ``efficiency``, ``method`` (λ1, λ2, τ), ``model``, ``augment``,
            ``optim``, ``finetune`` and ``trainer`` sections are used.
        manifest: A split manifest whose training rows carry all available labels.
        out: Output folder.
        log: Where progress lines go.
        progress: Show progress bars of pretraining.
        shard: Run only this share of the plan (:class:`Shard`); its records go to
            ``OUT/shards/<K>of<N>.json`` and the picks, paired differences and report wait for a
            run without a shard.
        collect: Run nothing: merge the finished records (``results.json`` and every shard's)
            into ``results.json`` and write the picks, paired differences and report.

    Returns:
        The outputs; with ``shard``, ``report`` and ``plot`` are not written yet and the paired
        differences and picks are empty.
    """
    cfg.trainer.check_hardware()  # before the manifest is read
    cfg = one_device(cfg, log)
    base = check_experiment(cfg, manifest)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    saved = out / "config.yaml"
    if results_path.is_file() or (out / "shards").is_dir():
        _check_continuation(saved, cfg, out)
    save_config(cfg, saved)
    jobs = plan_jobs(cfg)
    records = _finished(out, jobs)
    mine = jobs if shard is None else shard.jobs(jobs, cfg.efficiency.share_simclr)
    store = results_path if shard is None else out / "shards" / f"{shard.name}.json"
    metric = headline_metric(cfg.efficiency.metric, list(base.classes), base.multilabel)
    header = {"manifest": str(Path(manifest).resolve()), "metric": metric}
    if not collect:
        _run_jobs(cfg, base, out, mine, records, store, header, log, progress)
    if shard is not None:
        return EfficiencyResult(
            out, store, out / "report.md", out / "efficiency.png", records, [], metric=metric
        )
    missing = len(jobs) - len(records)
    if missing:
        log(f"{missing} of {len(jobs)} runs not finished yet (a shard still running?)")
    eff = cfg.efficiency
    ran = [r for r in records if not r.get("refused")]
    picks = choose_picks(ran, pick_key(len(base.classes), base.multilabel))
    paired = paired_comparisons(ran, metric, list(base.classes), eff.n_boot, picks)
    write_json({**header, "records": records, "picks": picks, "paired": paired}, results_path)
    rule = budget_rule(cfg, jobs[0].budget.subset(base, jobs[0].seed)) if jobs else None
    report, png = write_report(records, metric, out, paired=paired, picks=picks, budget_rule=rule)
    return EfficiencyResult(out, results_path, report, png, records, paired, picks, metric)


def _run_jobs(
    cfg: Config,
    base: Manifest,
    out: Path,
    jobs: list[Job],
    records: list[dict[str, Any]],
    store: Path,
    header: dict[str, Any],
    log: Callable[[str], None],
    progress: bool,
) -> None:
    """Run the unfinished ``jobs``, appending each record to ``records`` and writing ``store``
    (the records of ``jobs``) after each."""
    done = {r["run"] for r in records}
    keys = {j.key for j in jobs}
    todo = sum(j.key not in done for j in jobs)
    count = [0]
    pre = Pretrainings(cfg, base, out, log, progress, counter=lambda: f"[{count[0] + 1}/{todo}]")
    for job in jobs:
        subset_path = out / "splits" / f"{job.budget.tag}_s{job.seed}.csv"
        subset = job.budget.subset(base, job.seed)
        write_manifest(subset, subset_path)
        if job.key in done:
            continue
        started = time.perf_counter()
        spec = job.arm.pretraining
        try:
            pre_dir = None if spec is None else pre.ensure(spec, job.budget, job.seed, subset_path)
            rec = run_job(
                cfg,
                subset,
                job,
                pre_dir,
                out / "runs" / job.key,
                _teacher(job, done, out, cfg.finetune.mode),
            )
        except MedclError as exc:
            if not base.multilabel:
                raise
            rec = refused_record(job, subset, str(exc))
        rec["seconds"] = time.perf_counter() - started
        records.append(rec)
        done.add(job.key)
        count[0] += 1
        write_json({**header, "records": [r for r in records if r["run"] in keys]}, store)
        log(
            f"[{count[0]}/{todo}] {job.arm.name} @ {job.budget.text} labels, seed {job.seed}: "
            + _done_text(rec, header["metric"])
        )


def _done_text(rec: dict[str, Any], metric: str) -> str:
    """What a finished run's log line says: its validation and test scores, or its refusal."""
    if rec.get("refused"):
        return f"refused for a multi-label task: {rec['refused']}"
    test = rec["metrics"].get(metric)
    key = MULTILABEL_VAL_KEY if metric == "macro_auroc" and MULTILABEL_VAL_KEY in rec else ""
    val = rec.get(key) if key else rec.get("val_balanced_accuracy")
    name = "macro AUROC" if key else "balanced accuracy"
    return (
        f"val {name} {float('nan') if val is None else val:.3f}, test "
        f"{metric} {float('nan') if test is None else test:.3f}"
    )


def refused_record(job: Job, subset: Manifest, reason: str) -> dict[str, Any]:
    """The record of an arm that refused the task (its one line in ``refused``): it has no
    model, metrics or predictions, is never picked or compared, and is listed by the report."""
    return {
        "run": job.key,
        "method": job.arm.name,
        **job.budget.fields(subset),
        "budget": job.budget.tag,
        "seed": job.seed,
        "refused": reason,
    }


def _teacher(job: Job, done: set[str], out: Path, mode: str) -> Path | None:
    """The finished teacher run's model folder of ``job``'s arm, if it has one: the teacher arm
    must start where this arm starts (the same pretraining, or none) and fit by full
    fine-tuning (``mode``: the config's fitting mode), the fit the student's mode would repeat."""
    name = job.arm.teacher
    if name is None or ARMS[name].pretraining != job.arm.pretraining:
        return None
    if ARMS[name].finetune_mode(mode) != "full":
        return None
    key = f"{name}_{job.budget.tag}_s{job.seed}"
    model = out / "runs" / key / "model"
    return model if key in done and model.is_dir() else None


def run_parallel(
    cfg: Config,
    manifest: str | Path,
    out: str | Path,
    workers: int,
    log: Callable[[str], None] = print,
) -> EfficiencyResult:
    """Run the experiment as ``workers`` shards in as many processes on this machine, then
    collect: the wall time of the longest shard instead of the sum (each process uses
    ``trainer.threads`` threads; on a CPU give each its share of the cores).

    Raises:
        MedclError: If a shard failed (its message; re-running resumes every shard).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if workers <= 1:
        return run_efficiency(cfg, manifest, out, log=log, progress=False)
    check_experiment(cfg, manifest)  # refused here, before any process starts
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        futures = [
            pool.submit(_shard_main, cfg.to_dict(), str(manifest), str(out), k, workers)
            for k in range(workers)
        ]
        errors = [f.exception() for f in futures]
    failed = [e for e in errors if e is not None]
    if failed:
        raise MedclError(f"a shard of the experiment failed: {failed[0]} (run again to resume)")
    return run_efficiency(cfg, manifest, out, log=log, progress=False, collect=True)


def _shard_main(cfg: dict[str, Any], manifest: str, out: str, k: int, n: int) -> None:
    """One shard in a worker process (the config travels as a plain dict)."""
    from medcl.config import load_config as _load

    config = _load(None, base=cfg)
    run_efficiency(
        config,
        manifest,
        out,
        log=lambda s: print(f"[shard {k + 1}/{n}] {s}", flush=True),
        progress=False,
        shard=Shard(k, n),
    )


def run_job(
    cfg: Config,
    subset: Manifest,
    job: Job,
    pre_dir: Path | None,
    run_dir: Path,
    teacher_dir: Path | None = None,
) -> dict[str, Any]:
    """Fit ``job``'s arm on ``subset``, test it, save its model and predictions; its record.

    Args:
        cfg: The experiment's config.
        subset: The label subset of the job's budget and seed.
        job: The job.
        pre_dir: Its pretraining run (``None`` for an arm from scratch).
        run_dir: Where the model, metrics and predictions go.
        teacher_dir: The saved model of the arm's teacher at this budget and seed, when that
            run is finished (the fit the arm would repeat); ``None`` fits it inside.
    """
    seed = job.seed
    mode = job.arm.finetune_mode(cfg.finetune.mode)
    fields: dict[str, Any] = {"finetune.mode": mode, "trainer.seed": seed}
    fields.update(stage_overrides(cfg, subset, from_scratch=pre_dir is None))
    pre_steps, pre_seconds = 0, 0.0
    if pre_dir is not None:
        info = json.loads((pre_dir / "run.json").read_text())
        pre_steps, pre_seconds = int(info.get("steps", 0)), float(info.get("seconds", 0.0))
    started = time.perf_counter()
    teacher = None if teacher_dir is None else load_model(teacher_dir)
    res = finetune(derive(cfg, **fields), subset, pretrained=pre_dir, teacher=teacher)
    fit_seconds = time.perf_counter() - started
    metrics, preds = evaluate_with_predictions(
        res.model,
        subset,
        "test",
        n_boot=cfg.efficiency.n_boot,
        seed=seed,
        specificity=cfg.efficiency.specificity,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(run_dir / "predictions.npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **preds)  # a half-written file is never read
    desc = res.model.description
    desc.name = f"{job.arm.name} ({job.budget.text} labels, seed {seed})"
    desc.record_test(metrics)
    desc.training_data = _data_summary(subset)
    save_model(run_dir / "model", res.model, card=model_card(desc, metrics))
    write_json(metrics, run_dir / "metrics.json")
    return {
        "run": job.key,
        "method": job.arm.name,
        **job.budget.fields(subset),
        "budget": job.budget.tag,
        "seed": seed,
        "finetune": mode,
        # none for findings (NaN is not JSON: results.json must load in any JSON reader)
        "val_balanced_accuracy": None if subset.multilabel else res.val_balanced_accuracy,
        **_val_fields(res, subset),
        "n_labelled_images": desc.finetune.train_labelled_images,  # type: ignore[union-attr]
        "n_labelled_patients": desc.finetune.train_labelled_patients,  # type: ignore[union-attr]
        "pretrain_dir": None if pre_dir is None else str(pre_dir),
        "model_dir": str(run_dir / "model"),
        "predictions": str(run_dir / "predictions.npz"),
        "pretrain_steps": pre_steps,
        "pretrain_seconds": pre_seconds,
        "finetune_steps": int(res.details.get("steps", 0)),
        "finetune_seconds": fit_seconds,
        "metrics": metrics,
    }


def _val_fields(res: Any, subset: Manifest) -> dict[str, Any]:
    """The validation score the pick reads besides ``val_balanced_accuracy``: a binary task's
    ``val_auroc``, a multi-label task's ``val_macro_auroc`` (the fitted result's
    ``val_macro_auroc``)."""
    if subset.multilabel:
        return {MULTILABEL_VAL_KEY: getattr(res, "val_macro_auroc", None)}
    return {} if len(subset.classes) != 2 else {BINARY_VAL_KEY: res.val_auroc}


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
