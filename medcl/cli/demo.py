"""``medcl demo``: the whole pipeline on the embedded phantom cohort."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``demo``."""
    p = sub.add_parser(
        "demo",
        help="end-to-end run on the generated phantom cohort (≈11–13 min on 2 CPU cores)",
        description="synth → ingest → split → supervised, FixMatch, SSCL, self-training and SSCL + "
        "self-training at 5 %% labels (3 seeds, paired differences) and 100 %% (1 seed) → medcl's "
        "pick (chosen on validation) vs supervised → model, metrics, embeddings, report. "
        "Re-running continues an interrupted demo.",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run folder (default runs/demo, or runs/demo-multilabel with --task multilabel)",
    )
    p.add_argument(
        "--task",
        choices=("multiclass", "multilabel"),
        default="multiclass",
        help="multiclass: the phantom's lesion count (default); multilabel: its three "
        "independent findings (lesion, nodule, vessel), reported in macro AUROC",
    )
    p.add_argument("--quick", action="store_true", help="tiny settings (about a minute)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from medcl.demo import run_demo

    out = args.out or Path("runs/demo" if args.task == "multiclass" else "runs/demo-multilabel")
    r = run_demo(out, quick=args.quick, seed=args.seed, task=args.task)
    out = r.out_dir
    print()
    print(r.headline)
    print(f"\nresults in {out}/:")
    print("  efficiency/report.md, efficiency/efficiency.png   label-efficiency comparison")
    print("  metrics.json, model/ (weights, metadata.json, model_card.md), embeddings.parquet")
    print(f"finished in {r.summary['seconds']:.0f} s")
    print(f"\nopen the dashboard:  .venv/bin/medcl dashboard {out}")
    print(f"                 or:  .venv/bin/streamlit run apps/dashboard.py -- {out}")
    return 0
