"""Where a label-efficiency experiment's wall time goes: optimiser steps, data loading, validation,
Trainer set-up, and everything outside the fits (evaluation on test, bootstrap, reports, I/O).

Runs ``medcl efficiency`` in this process on the demo's data and recipe (:data:`medcl.demo.FULL`),
one seed at one label fraction by default, with every Lightning ``Trainer`` it builds instrumented
by a timing callback (the benchmark wraps ``Trainer.__init__`` and ``Trainer.fit``; medcl's code is
unchanged):

- *optimiser steps*: ``on_train_batch_start`` → ``on_train_batch_end`` (forward, backward, step, of
  the pretraining and of every fitting stage);
- *data loading*: the rest of each training epoch (waiting for the next batch, augmentation in the
  main process);
- *validation*: ``on_validation_start`` → ``on_validation_end`` (sanity check included);
- *trainer set-up and teardown*: the rest of each ``fit`` call;
- *outside the fits*: the experiment's wall time minus its fits (test evaluation, patient
  bootstrap, teacher pseudo-labels, writing records, the report and plot).

Usage::

    python benchmarks/experiment_profile.py                      # 1 seed at 5 %, the demo's arms
    python benchmarks/experiment_profile.py --methods supervised sscl --threads 1
    python benchmarks/experiment_profile.py --tiny               # seconds, for the test suite

Prints the split in seconds and as shares of the wall time, and the issue's target (≥ 90 % of
the wall time in optimiser steps). Use ``--threads 1`` for figures comparable across runs on a
shared machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import medcl  # noqa: F401
except ModuleNotFoundError:  # run from a source checkout without installing medcl
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L

TINY = [
    "data.image_size=32",
    "model.width=0.125",
    "model.proj_dim=16",
    "model.proj_hidden=32",
    "optim.epochs=1",
    "finetune.epochs=2",
    "finetune.epoch_steps=2",
    "efficiency.n_boot=20",
    "efficiency.linear_probe=false",
]
"""Overrides of ``--tiny`` on top of the demo's recipe: seconds, not minutes."""

PARTS = (
    "optimiser steps",
    "data loading",
    "validation",
    "trainer set-up and teardown",
    "outside the fits",
)


class Clock(L.Callback):
    """Accumulates, over every Trainer it is attached to, the time of each part of a fit."""

    def __init__(self, totals: dict[str, float], counts: dict[str, int]) -> None:
        self.totals, self.counts = totals, counts
        self._marks: dict[str, float] = {}

    def _start(self, key: str) -> None:
        self._marks[key] = time.perf_counter()

    def _stop(self, key: str, part: str) -> None:
        began = self._marks.pop(key, None)
        if began is not None:
            self.totals[part] += time.perf_counter() - began

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start("epoch")
        self._epoch_steps = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self._start("step")

    def on_train_batch_end(self, *args: Any) -> None:
        began = self._marks.pop("step", None)
        if began is not None:
            spent = time.perf_counter() - began
            self.totals["optimiser steps"] += spent
            self._epoch_steps += spent
            self.counts["optimiser steps"] += 1

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start("validation")
        self._val_in_epoch = "epoch" in self._marks

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        began = self._marks.get("validation")
        self._stop("validation", "validation")
        self.counts["validation"] += 1
        if began is not None and getattr(self, "_val_in_epoch", False):
            # validation inside a training epoch is not data loading: take it off the epoch
            self._marks["epoch"] += time.perf_counter() - began

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        began = self._marks.pop("epoch", None)
        if began is not None:
            self.totals["epochs"] += time.perf_counter() - began
            self.totals["data loading"] += max(0.0, time.perf_counter() - began - self._epoch_steps)


@contextmanager
def instrumented(totals: dict[str, float], counts: dict[str, int]) -> Iterator[None]:
    """Attach a :class:`Clock` to every Trainer built inside, and time every ``fit``."""
    init, fit = L.Trainer.__init__, L.Trainer.fit

    def init_with_clock(self: L.Trainer, *args: Any, **kwargs: Any) -> None:
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), Clock(totals, counts)]
        init(self, *args, **kwargs)

    def timed_fit(self: L.Trainer, *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return fit(self, *args, **kwargs)
        finally:
            totals["fits"] += time.perf_counter() - began
            counts["fits"] += 1

    L.Trainer.__init__, L.Trainer.fit = init_with_clock, timed_fit  # type: ignore[method-assign]
    try:
        yield
    finally:
        L.Trainer.__init__, L.Trainer.fit = init, fit  # type: ignore[method-assign]


def split(totals: dict[str, float], wall: float) -> dict[str, float]:
    """The wall time's parts (seconds); they add up to ``wall``."""
    inside = (
        totals["optimiser steps"] + totals["data loading"] + totals["validation"]
        # validation inside an epoch is already off the epoch's data-loading share
    )
    return {
        "optimiser steps": totals["optimiser steps"],
        "data loading": totals["data loading"],
        "validation": totals["validation"],
        "trainer set-up and teardown": max(0.0, totals["fits"] - inside),
        "outside the fits": max(0.0, wall - totals["fits"]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None, help="data and runs (default: a temp dir)")
    ap.add_argument("--methods", nargs="*", default=None, help="arms (default: the demo's)")
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--patients", type=int, default=None)
    ap.add_argument("--tiny", action="store_true", help="tiny sizes, seconds (the test suite)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("overrides", nargs="*", help="further medcl config overrides")
    args = ap.parse_args(argv)

    import torch

    from medcl.config import load_config
    from medcl.demo import FULL, build_demo_data
    from medcl.evaluate.efficiency import run_efficiency

    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="medcl_profile_"))
    patients = args.patients or (24 if args.tiny else FULL["patients"])
    size = 32 if args.tiny else FULL["size"]
    manifest = build_demo_data(work, patients=patients, size=size, seed=0, log=lambda s: None)
    overrides = [o for o in FULL["overrides"] if not o.startswith("efficiency.methods")]
    if args.methods:
        overrides.append(f"efficiency.methods=[{', '.join(args.methods)}]")
    else:
        overrides += [o for o in FULL["overrides"] if o.startswith("efficiency.methods")]
    overrides += [
        f"efficiency.fractions=[{args.fraction}]",
        f"efficiency.seeds=[{args.seed}]",
        f"trainer.threads={args.threads}",
        *(TINY if args.tiny else []),
        *args.overrides,
    ]
    cfg = load_config(None, overrides)
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    began = time.perf_counter()
    with instrumented(totals, counts):
        result = run_efficiency(
            cfg, manifest, work / "efficiency", log=lambda s: None, progress=False
        )
    wall = time.perf_counter() - began
    parts = split(totals, wall)
    print(
        f"experiment: {', '.join(cfg.efficiency.methods)} at {args.fraction:g} of the labels, "
        f"seed {args.seed}, {args.threads} thread(s); {len(result.records)} records, "
        f"{counts['fits']} fits, {counts['optimiser steps']} optimiser steps, "
        f"{counts['validation']} validation passes"
    )
    print(f"{'part':<30} {'seconds':>9} {'share':>7}")
    for name in PARTS:
        print(f"{name:<30} {parts[name]:>9.1f} {100 * parts[name] / wall:>6.1f}%")
    print(f"{'wall time':<30} {wall:>9.1f} {100.0:>6.1f}%")
    share = parts["optimiser steps"] / wall
    verdict = "met" if share >= 0.9 else "NOT met"
    print(f"target (>= 90 % of the wall time in optimiser steps): {100 * share:.1f} %, {verdict}")
    if args.json:
        figures = {"wall_s": wall, "parts_s": parts, "counts": dict(counts)}
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
