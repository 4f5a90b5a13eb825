"""Choose recipes on the **validation** split, on both kinds of task: a sweep of settings × arms.

Builds each cohort once (synth → ingest → patient split, cached under ``--work``): the demo's
phantom, where the label is a small finding (lesions counted inside an organ, look-alikes outside),
and the brain cohort built from the MNI152 template in the nilearn wheel, where the label is a
property of the whole anatomy (grades of atrophy). Then, for every named setting, arm, label
budget and seed, it runs the arm exactly as ``medcl efficiency`` would (the arm table
:data:`medcl.evaluate.arms.ARMS`, the stage budget rule, the from-scratch arms' own augmentation)
and prints one row per cohort, setting, arm and budget: optimiser steps (pretraining + fitting),
wall time, and the validation balanced accuracy (mean and per seed). The test split is never
read: a recipe chosen on it would flatter the demo.

Usage::

    python benchmarks/recipe_sweep.py --only demo                         # every arm, phantom
    python benchmarks/recipe_sweep.py --cohort phantom brain --arms supervised fixmatch sscl
    python benchmarks/recipe_sweep.py --cohort brain --per-class 2 --seeds 0 1 2
    python benchmarks/recipe_sweep.py --set "mine: optim.epochs=40 method.temperature=0.2"

Each setting is a list of ``medcl`` config overrides on top of the cohort's recipe (the demo's,
:data:`medcl.demo.FULL`, for both cohorts). Runs on the CPU; a setting costs about as much as
its arms' runs in the demo. The brain cohort needs nilearn (``pip install 'medcl[brain]'``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

try:
    import medcl  # noqa: F401
except ModuleNotFoundError:  # run from a source checkout without installing medcl
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medcl.config import derive, load_config
from medcl.data.manifest import read_manifest, write_manifest
from medcl.demo import FULL, build_demo_data
from medcl.evaluate.arms import ARMS
from medcl.evaluate.budget import stage_overrides
from medcl.evaluate.efficiency import Pretrainings
from medcl.evaluate.finetune import finetune
from medcl.evaluate.label_budget import LabelBudget

# name -> overrides on top of the cohort's recipe
SWEEP: dict[str, list[str]] = {
    "demo": [],
    # single random rows instead of 16 patients × 2 images: same-patient positives almost never
    # meet in a batch
    "single-rows": ["data.images_per_patient=1"],
    # SupCon from the first step instead of after a λ1 = 0 half
    "start0": ["method.lambda_sup_start=0.0"],
    # longer pretraining: 2× the demo's steps (and wall time)
    "e40": ["optim.epochs=40"],
    # augmentation strength (pretraining and fine-tuning of pretrained arms; the from-scratch
    # arms keep efficiency.scratch_augment on top)
    "aug-geometry+": [
        "augment.options.p_affine=1.0",
        "augment.options.rotate_deg=25",
        "augment.options.scale_range=[0.8,1.2]",
        "augment.options.translate_frac=0.1",
    ],
    # views that keep a small finding: no crop, no blur, bounded zoom and intensity changes
    "aug-keep-finding": [
        "augment.options.p_crop=0.0",
        "augment.options.p_blur=0.0",
        "augment.options.scale_range=[0.95,1.05]",
        "augment.options.log_gamma_range=[-0.2,0.2]",
        "augment.options.contrast_range=[0.85,1.15]",
    ],
}

COHORTS = {"phantom": "the demo's phantom (a small finding)", "brain": "MNI152 atrophy grades"}


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean = f"{sum(values) / len(values):.3f}"
    return mean if len(values) == 1 else f"{mean} ({', '.join(f'{v:.3f}' for v in values)})"


def run_arm(
    cohort: str,
    manifest: Path,
    setting: str,
    overrides: list[str],
    arm_name: str,
    budget: LabelBudget,
    seeds: list[int],
    work: Path,
    threads: int = 1,
) -> dict[str, Any]:
    """Run one arm at one budget for every seed, validation only; its row as a dict."""
    arm = ARMS[arm_name]
    cfg = load_config(
        None, [*FULL["overrides"], *overrides, "out=unused", f"trainer.threads={threads}"]
    )
    base = read_manifest(manifest)
    # one folder per pretraining recipe; settings that change fitting only reuse it
    pre_args = [o for o in overrides if not o.startswith(("finetune.", "efficiency."))]
    tag = hashlib.sha256(" ".join(pre_args).encode()).hexdigest()[:8]
    root = work / cohort / f"pre_{tag}"
    pre = Pretrainings(cfg, base, root, lambda s: None, False, counter=lambda: "")
    vals: list[float] = []
    pre_steps = fit_steps = 0
    started = time.perf_counter()
    for seed in seeds:
        subset = budget.subset(base, seed)
        path = write_manifest(subset, root / "splits" / f"{budget.tag}_s{seed}.csv")
        spec = arm.pretraining
        pre_dir = None if spec is None else pre.ensure(spec, budget, seed, path)
        fields: dict[str, Any] = {"finetune.mode": arm.finetune_mode(cfg.finetune.mode)}
        fields["trainer.seed"] = seed
        fields.update(stage_overrides(cfg, subset, from_scratch=pre_dir is None))
        res = finetune(derive(cfg, **fields), subset, pretrained=pre_dir)
        vals.append(res.val_balanced_accuracy)
        fit_steps = max(fit_steps, int(res.details.get("steps", 0)))
        if pre_dir is not None:
            pre_steps = int(json.loads((pre_dir / "run.json").read_text()).get("steps", 0))
    return {
        "cohort": cohort,
        "setting": setting,
        "arm": arm_name,
        "labels": budget.text,
        "steps": f"{pre_steps} + {fit_steps}",
        "seconds": round(time.perf_counter() - started),
        "val": vals,
        "seeds": seeds,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("runs/recipe_sweep"))
    ap.add_argument("--cohort", nargs="*", default=["phantom"], choices=list(COHORTS))
    ap.add_argument(
        "--only",
        nargs="*",
        help="names from the shipped sweep (default: all of them, or none when --set is given)",
    )
    ap.add_argument("--set", action="append", default=[], help='"name: key=value key=value"')
    ap.add_argument("--arms", nargs="*", default=["supervised", "fixmatch", "selftrain", "sscl"])
    ap.add_argument("--fraction", type=float, nargs="*", default=[0.05])
    ap.add_argument("--per-class", type=int, nargs="*", default=[], help="labels per class")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0], help="e.g. 0 1 2")
    ap.add_argument("--patients", type=int, default=FULL["patients"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads of every run")
    args = ap.parse_args(argv)
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        ap.error(f"--arms: choose from {', '.join(ARMS)}; got {unknown}")
    if args.only is None:
        args.only = [] if args.set else list(SWEEP)
    settings = {k: v for k, v in SWEEP.items() if k in args.only}
    for item in args.set:
        name, _, rest = item.partition(":")
        settings[name.strip()] = rest.split()
    budgets = [LabelBudget(per_class=k) for k in args.per_class]
    budgets += [LabelBudget(fraction=f) for f in args.fraction]
    print(f"validation balanced accuracy (mean over seeds {', '.join(map(str, args.seeds))})")
    print("| cohort | setting | arm | labels | steps (pre + fit) | seconds | val |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for cohort in args.cohort:
        manifest = build_demo_data(
            args.work / cohort,
            patients=args.patients,
            size=FULL["size"],
            seed=0,
            log=lambda s: None,
            cohort=cohort,
        )
        for name, overrides in settings.items():
            for arm in args.arms:
                for budget in budgets:
                    row = run_arm(
                        cohort,
                        manifest,
                        name,
                        overrides,
                        arm,
                        budget,
                        args.seeds,
                        args.work,
                        args.threads,
                    )
                    rows.append(row)
                    print(
                        f"| {cohort} | {name} | {arm} | {row['labels']} | {row['steps']} | "
                        f"{row['seconds']} | {_cell(row['val'])} |",
                        flush=True,
                    )
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "sweep.json").write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
