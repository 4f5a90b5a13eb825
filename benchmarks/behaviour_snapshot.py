"""A snapshot of what medcl computes, to show that a redesign changed no number.

Writes one JSON file with, at a fixed seed and one CPU thread:

- every pretraining objective's per-step losses (``train/loss_step``, and per epoch every
  ``train/*`` value, read from the run's ``logs/metrics.csv``) for a short run on a small
  phantom cohort: SimCLR, SSCL (SimCLR with λ1 > 0), MoCo, BYOL, SimSiam, DINO, VICReg;
- every fine-tuning mode (linear, kNN, full, FixMatch) on the SSCL encoder: validation score,
  optimiser steps and a digest of the fitted weights;
- ``medcl demo --quick``: each run's test metrics and the headline.

Usage::

    python benchmarks/behaviour_snapshot.py --out /tmp/before.json
    (change the code)
    python benchmarks/behaviour_snapshot.py --out /tmp/after.json --compare /tmp/before.json

``--compare`` prints every value that differs (losses compared bit for bit, as the snapshot is
taken on the same machine and thread count) and exits 1 when any does. Takes a few minutes.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

try:
    import medcl  # noqa: F401
except ModuleNotFoundError:  # run from a source checkout without installing medcl
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from medcl.config import load_config
from medcl.data.manifest import read_manifest, write_manifest
from medcl.data.split import apply_label_fraction
from medcl.demo import QUICK, build_demo_data, run_demo
from medcl.evaluate.finetune import finetune
from medcl.train.pretrain import pretrain

OBJECTIVES = {
    "simclr": ["method.name=simclr", "method.lambda_sup=0.0"],
    "sscl": ["method.name=simclr", "method.lambda_sup=1.0", "method.lambda_sup_warmup=0.3"],
    "moco": ["method.name=moco", "method.options.moco.queue_size=64"],
    "byol": ["method.name=byol"],
    "simsiam": ["method.name=simsiam"],
    "dino": ["method.name=dino"],
    "vicreg": ["method.name=vicreg"],
}
"""Each objective's overrides on top of :data:`medcl.demo.QUICK` (λ1 = 1 unless said)."""

SHORT = ["optim.epochs=2", "trainer.threads=1", "data.labelled_share=0.5"]


def _step_losses(run: Path) -> dict[str, list[str]]:
    """Per-step values of the logged losses, as the CSV logger wrote them (text: bit-exact)."""
    out: dict[str, list[str]] = {}
    with open(run / "logs" / "metrics.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            for key, value in row.items():
                if key.startswith("train/") and value and not key.endswith("_per_s"):
                    out.setdefault(key, []).append(value)
    return out


def _digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def snapshot(work: Path) -> dict[str, Any]:
    """Take the snapshot in ``work`` (a fresh folder)."""
    torch.set_num_threads(1)
    split_full = build_demo_data(work, QUICK["patients"], QUICK["size"], log=lambda s: None)
    subset = apply_label_fraction(read_manifest(split_full), 0.3, 0)
    sub_path = write_manifest(subset, work / "subset.csv")
    result: dict[str, Any] = {"objectives": {}, "finetune": {}}
    base = [*QUICK["overrides"], *SHORT, f"data.manifest={sub_path}"]
    for name, extra in OBJECTIVES.items():
        cfg = load_config(None, [*base, *extra, f"out={work / 'pre' / name}"])
        run = pretrain(cfg, progress=False)
        result["objectives"][name] = {"steps": run.steps, **_step_losses(run.out_dir)}
        print(f"{name}: {run.steps} steps", flush=True)
    for mode in ("linear", "knn", "full", "fixmatch"):
        cfg = load_config(None, [*base, f"finetune.mode={mode}", "out=unused"])
        res = finetune(cfg, subset, pretrained=work / "pre" / "sscl")
        result["finetune"][mode] = {
            "val": repr(res.val_balanced_accuracy),
            "steps": int(res.details.get("steps", 0)),
            "weights": _digest(res.model),
        }
        print(f"finetune {mode}: {res.val_balanced_accuracy!r}", flush=True)
    demo = run_demo(work / "demo", quick=True, log=lambda s: None)
    recs = json.loads((work / "demo" / "efficiency" / "results.json").read_text())["records"]
    result["demo"] = {
        "headline": demo.headline,
        "runs": {
            r["run"]: {k: repr(r["metrics"].get(k)) for k in ("balanced_accuracy", "accuracy")}
            for r in recs
        },
    }
    return result


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only in {'after' if k not in b else 'before'}")
            else:
                out += _diff(a[k], b[k], f"{path}/{k}")
        return out
    return [] if a == b else [f"{path}: {b!r} before, {a!r} after"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="snapshot JSON to write")
    ap.add_argument("--compare", type=Path, help="an earlier snapshot to compare with")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        snap = snapshot(Path(tmp))
    args.out.write_text(json.dumps(snap, indent=1) + "\n")
    print(f"snapshot written to {args.out}")
    if args.compare is None:
        return 0
    diffs = _diff(snap, json.loads(args.compare.read_text()))
    for line in diffs:
        print(line)
    n_loss = sum(
        len(v) for o in snap["objectives"].values() for v in o.values() if isinstance(v, list)
    )
    print(
        f"{len(diffs)} differences ({n_loss} per-step losses, 4 fine-tunings, "
        f"{len(snap['demo']['runs'])} demo runs compared)"
    )
    return 1 if diffs else 0


if __name__ == "__main__":
    raise SystemExit(main())
