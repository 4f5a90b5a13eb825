"""Choose the CPU recipe on the **validation** split: a sweep of pretraining/fine-tuning settings.

Builds the demo's phantom cohort, or with ``--cohort brain`` the brain-atrophy cohort (a global
question, :mod:`medcl.data.synth.brain`), once (synth → ingest → patient split → label-fraction
subset, all cached under ``--work``, the brain cohort under ``--work/brain``), then for every
named setting runs the arms asked for and prints one row per arm: optimiser steps, wall time,
validation kNN / linear-probe / fine-tune balanced accuracy. The test split is never read here: a
recipe chosen on it would flatter the demo.

Arms: ``supervised`` (from scratch on the labelled subset), ``simclr`` (NT-Xent on every training
image, no label), ``sscl`` (λ1·SupCon(labelled subset) + λ2·NT-Xent(all)); each pretrained arm is
scored by a kNN and a linear probe on the frozen encoder and by full fine-tuning.

Usage::

    python benchmarks/recipe_sweep.py                       # the shipped sweep, all settings
    python benchmarks/recipe_sweep.py --only demo --arms sscl simclr
    python benchmarks/recipe_sweep.py --only demo e40 e80 --arms simclr --seeds 0 1 2
    python benchmarks/recipe_sweep.py --set "mine: optim.epochs=40 method.temperature=0.2"
    python benchmarks/recipe_sweep.py --only demo --set "mine: ..."   # mine next to the demo
    python benchmarks/recipe_sweep.py --cohort brain --only demo --arms supervised --fraction 0.01

Each setting is a list of ``medcl`` config overrides on top of the demo's recipe
(:data:`medcl.demo.FULL`). Runs on the CPU; a setting costs about as much as one demo arm.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

try:
    import medcl  # noqa: F401
except ModuleNotFoundError:  # run from a source checkout without installing medcl
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medcl.config import derive, load_config
from medcl.data.manifest import read_manifest, write_manifest
from medcl.data.split import apply_label_fraction
from medcl.demo import FULL, build_demo_data
from medcl.evaluate.budget import stage_overrides
from medcl.evaluate.finetune import finetune
from medcl.train.pretrain import pretrain

# name -> overrides on top of the demo recipe; the first rows are the ones the demo was chosen from
SWEEP: dict[str, list[str]] = {
    "demo": [],
    # single random rows instead of 16 patients × 2 images: same-patient positives almost never
    # meet in a batch (0.16 siblings per row on average)
    "single-rows": ["data.images_per_patient=1"],
    # the previous demo: batches of 64 (half the steps), λ1 = 1, natural labelled share
    "b64-lam1": [
        "data.batch_size=64",
        "method.lambda_sup=1.0",
        "data.labelled_share=auto",
    ],
    # batches of 64 for twice the epochs (as many steps as the demo, twice the compute)
    "b64-e40": ["data.batch_size=64", "optim.epochs=40"],
    # λ1 = 1 with the natural labelled share (about 5 % labelled rows → 25 % of each batch)
    "lam1-auto": ["method.lambda_sup=1.0", "data.labelled_share=auto"],
    # SupCon from the first step (no shared SimCLR prefix: one more full pretraining per seed)
    "start0": ["method.lambda_sup_start=0.0"],
    # the pretrained encoder fine-tuned at 0.1 × the head's learning rate
    "ftlr01": ["finetune.encoder_lr_mult=0.1"],
    # twice as wide an encoder (about 3.5× slower on the CPU)
    "width50": ["model.width=0.5"],
    # longer pretraining: 2× and 4× the demo's steps (and wall time)
    "e40": ["optim.epochs=40"],
    "e80": ["optim.epochs=80"],
    # augmentation strength (pretraining and fine-tuning; the supervised arm's on top of the
    # demo's efficiency.scratch_augment, which these rows chose: run them with
    # "efficiency.scratch_augment={}" to compare with the preset): intensity stronger, geometry
    # stronger, everything but geometry weaker than the MR preset's defaults
    "aug-intensity+": [
        "augment.options.p_gamma=0.9",
        "augment.options.log_gamma_range=[-0.6,0.6]",
        "augment.options.p_contrast=0.9",
        "augment.options.contrast_range=[0.5,1.6]",
        "augment.options.p_bias=0.7",
        "augment.options.bias_coef=0.5",
    ],
    "aug-geometry+": [
        "augment.options.p_affine=1.0",
        "augment.options.rotate_deg=25",
        "augment.options.scale_range=[0.8,1.2]",
        "augment.options.translate_frac=0.1",
        "augment.options.p_blur=0.4",
        "augment.options.noise_std_range=[0.0,0.06]",
    ],
    "aug-weak": [
        "augment.options.p_gamma=0.2",
        "augment.options.p_contrast=0.2",
        "augment.options.p_bias=0.1",
        "augment.options.p_noise=0.2",
        "augment.options.p_rician=0.05",
        "augment.options.p_blur=0.05",
    ],
}


def _row(name: str, arm: str, steps: int, seconds: float, scores: dict[str, list[float]]) -> str:
    def cell(k: str) -> str:
        v = scores.get(k)
        if not v:
            return "-"
        mean = f"{sum(v) / len(v):.3f}"
        return mean if len(v) == 1 else f"{mean} ({', '.join(f'{x:.3f}' for x in v)})"

    cells = " | ".join(cell(k) for k in ("knn", "linear", "finetune"))
    return f"| {name} | {arm} | {steps} | {seconds:.0f} | {cells} |"


def _subsets(work: Path, fraction: float, seed: int) -> tuple[Path, Path]:
    """The label-fraction subset of ``seed`` and the label-free pool, written once."""
    full = work / "data" / "split_full.csv"
    sub_path = work / "splits" / f"f{fraction:g}_s{seed}.csv"
    pool_path = work / "splits" / f"unlabelled_s{seed}.csv"
    if not sub_path.is_file():
        m = read_manifest(full)
        write_manifest(apply_label_fraction(m, fraction, seed), sub_path)
        write_manifest(apply_label_fraction(m, 0.0, seed), pool_path)
    return sub_path, pool_path


def run_setting(
    name: str,
    overrides: list[str],
    arms: list[str],
    work: Path,
    fraction: float,
    seeds: list[int],
) -> list[str]:
    """Run the arms of one setting for every seed; returns the printed table rows.

    Each seed has its own label subset. SimCLR reads no label, so (as in the demo,
    ``efficiency.share_simclr``) one SimCLR pretraining, on the first seed's label-free pool, is
    scored on every seed's subset; SSCL and supervised runs are per seed. A row gives the mean over
    the seeds and, with several, the per-seed values in brackets; ``seconds`` is the arm's total.
    """
    rows = []
    for arm in arms:
        started = time.perf_counter()
        scores: dict[str, list[float]] = {}
        steps = 0
        for seed in seeds:
            base = [*FULL["overrides"], *overrides, f"trainer.seed={seed}"]
            sub_path, pool_path = _subsets(work, fraction, seed)
            sub = read_manifest(sub_path)
            if arm == "supervised":
                cfg = load_config(None, [*base, "finetune.mode=full", "out=unused"])
                cfg = derive(
                    cfg, **stage_overrides(cfg, sub, from_scratch=True)
                )  # budget, own augmentation
                res = finetune(cfg, sub, pretrained=None)
                scores.setdefault("finetune", []).append(res.val_balanced_accuracy)
                steps = max(steps, int(res.details.get("steps", 0)))
                continue
            pre_seed = seeds[0] if arm == "simclr" else seed
            _, pre_pool = _subsets(work, fraction, pre_seed)
            pre_base = [*FULL["overrides"], *overrides, f"trainer.seed={pre_seed}"]
            # one folder per pretraining recipe; fine-tuning settings reuse it
            pre_args = [o for o in pre_base if not o.startswith("finetune.")]
            tag = hashlib.sha256(" ".join(pre_args).encode()).hexdigest()[:8]
            out = work / "runs" / f"{arm}_s{pre_seed}_{tag}"
            lam = ["method.lambda_sup=0.0"] if arm == "simclr" else []
            man = pre_pool if arm == "simclr" else sub_path
            cfg = load_config(None, [*pre_args, *lam, f"data.manifest={man}", f"out={out}"])
            pre = pretrain(cfg, progress=False)
            steps = pre.steps
            for mode in ("knn", "linear", "full"):
                c = load_config(None, [*base, f"finetune.mode={mode}", "out=unused"])
                r = finetune(c, sub, pretrained=pre.out_dir)
                scores.setdefault("finetune" if mode == "full" else mode, []).append(
                    r.val_balanced_accuracy
                )
        rows.append(_row(name, arm, steps, time.perf_counter() - started, scores))
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("runs/recipe_sweep"))
    ap.add_argument(
        "--only",
        nargs="*",
        help="names from the shipped sweep (default: all of them, or none when --set is given)",
    )
    ap.add_argument("--set", action="append", default=[], help='"name: key=value key=value"')
    ap.add_argument("--arms", nargs="*", default=["supervised", "simclr", "sscl"])
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument(
        "--seeds", type=int, nargs="*", default=[0], help="label subsets to score (e.g. 0 1 2)"
    )
    ap.add_argument("--patients", type=int, default=FULL["patients"])
    ap.add_argument(
        "--cohort",
        choices=("phantom", "brain"),
        default="phantom",
        help="the demo's lesion-count phantom (default) or the brain-atrophy cohort (a global "
        "question; needs nilearn), built under --work/brain",
    )
    args = ap.parse_args(argv)
    if args.cohort == "brain":
        args.work = args.work / "brain"
    if args.only is None:
        args.only = [] if args.set else list(SWEEP)
    settings = {k: v for k, v in SWEEP.items() if k in args.only}
    for item in args.set:
        name, _, rest = item.partition(":")
        settings[name.strip()] = rest.split()
    build_demo_data(
        args.work,
        patients=args.patients,
        size=FULL["size"],
        seed=0,
        log=lambda s: None,
        cohort=args.cohort,
    )
    seeds = ", ".join(map(str, args.seeds))
    print(
        f"{args.cohort} cohort: validation balanced accuracy at {100 * args.fraction:g} % labels, "
        f"seeds {seeds}"
    )
    print("| setting | arm | steps | seconds | val kNN | val linear | val fine-tune |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for name, overrides in settings.items():
        rows += run_setting(name, overrides, args.arms, args.work, args.fraction, args.seeds)
    (args.work / "sweep.json").write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
