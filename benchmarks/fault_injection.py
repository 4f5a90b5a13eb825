"""Fault injection: ``kill -9`` medcl commands at random moments, re-run them, compare the results.

Each trial starts one command in its own process group on a fresh output folder, kills the group
with SIGKILL at a random moment, runs the same command again to the end, and compares what it
produced with an uninterrupted run of the same command:

- ``medcl pretrain`` (one thread, a checkpoint every step), killed either mid-epoch (once a
  random step's checkpoint exists) or during a checkpoint write (as soon as a checkpoint's
  temporary file appears): the final encoder weights must be bit-identical;
- ``medcl efficiency`` (two arms, two seeds), killed once a random number of its files exist:
  the same records (every value but the wall times);
- ``medcl ingest`` of a phantom cohort, killed once a random number of its files (cached arrays)
  exist: the same manifest and sidecar, and every cached array equal.

A kill that comes after the command already finished is drawn again (it would test nothing).
The last line reads ``N kills, N resumed, 0 differences`` when every re-run finished and matched.

Usage::

    python benchmarks/fault_injection.py --kills 6 --seed 0 [--work DIR]

Takes about a minute per kill on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

try:
    import medcl  # noqa: F401
except ModuleNotFoundError:  # run from a source checkout without installing medcl
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

# tiny networks and images, one thread, no loader workers: a run takes seconds and is exact
TINY = (
    "model.encoder=resnet10 model.width=0.125 model.proj_dim=16 model.proj_hidden=32 "
    "data.image_size=16 data.batch_size=8 finetune.batch_size=8 trainer.threads=1 "
    "data.num_workers=0 trainer.logger=[csv]"
).split()
PRETRAIN = [*TINY, "optim.epochs=3", "trainer.checkpoint_every_n_steps=1"]
EFFICIENCY = [
    *TINY,
    "optim.epochs=1",
    "finetune.epochs=2",
    "efficiency.methods=[supervised, sscl]",
    "efficiency.fractions=[0.5]",
    "efficiency.seeds=[0, 1]",
    "efficiency.linear_probe=false",
    "efficiency.n_boot=10",
]
KINDS = ("pretrain mid-epoch", "pretrain during a checkpoint write", "efficiency", "ingest")


def medcl(*args: str) -> list[str]:
    """The command line of ``medcl ARGS`` with this interpreter."""
    return [sys.executable, "-m", "medcl.cli.main", *args]


class Setup:
    """The shared inputs: a phantom cohort, its secret and its split manifest."""

    def __init__(self, work: Path) -> None:
        from medcl.data.ingest import ingest
        from medcl.data.manifest import read_manifest, write_manifest
        from medcl.data.split import split_manifest
        from medcl.data.synth import generate_cohort

        self.work = work
        self.cohort = work / "cohort"
        self.secret = work / "private" / "secret.key"
        generate_cohort(self.cohort, patients=24, size=16, seed=0, progress=False)
        manifest = work / "data" / "manifest.csv"
        ingest(
            self.cohort,
            manifest,
            labels=self.cohort / "labels.csv",
            secret=self.secret,
            progress=False,
        )
        split = split_manifest(read_manifest(manifest), val=0.25, test=0.25, seed=0)
        self.split = write_manifest(split, work / "data" / "split.csv")

    def command(self, kind: str, out: Path) -> list[str]:
        """The command of a trial kind writing into ``out``."""
        if kind.startswith("pretrain"):
            return medcl("pretrain", f"data.manifest={self.split}", f"out={out}", *PRETRAIN)
        if kind == "efficiency":
            return medcl("efficiency", f"data.manifest={self.split}", f"out={out}", *EFFICIENCY)
        labels = str(self.cohort / "labels.csv")
        return medcl(
            "ingest", str(self.cohort), "--out", str(out / "m.csv"), "--labels", labels,
            "--secret", str(self.secret),
        )  # fmt: skip


def run(cmd: list[str]) -> float:
    """Run ``cmd`` to the end (exit status 0 required); returns its wall time."""
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[2:4])} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def kill_at(cmd: list[str], ready: Callable[[float], bool], timeout: float) -> bool:
    """Start ``cmd`` in a new process group and SIGKILL the group once ``ready(elapsed)`` holds.

    Returns:
        True when the kill came while the command was running, False when it ended first.
    """
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    started = time.perf_counter()
    while proc.poll() is None:
        elapsed = time.perf_counter() - started
        if ready(elapsed) or elapsed > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    return False


def _encoder_state(run_dir: Path) -> dict[str, torch.Tensor]:
    from medcl.models.export import load_encoder

    encoder, _ = load_encoder(run_dir)
    return encoder.state_dict()


def compare_pretrain(ref: Path, out: Path) -> list[str]:
    """Names of the encoder tensors that differ from the reference run's."""
    a, b = _encoder_state(ref), _encoder_state(out)
    return [k for k in a if k not in b or not torch.equal(a[k], b[k])] + [
        k for k in b if k not in a
    ]


def _records(out: Path) -> list[dict]:
    """The records of ``results.json``, wall times left out, the run folder's path as ``OUT``."""
    data = json.loads((out / "results.json").read_text())

    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if "seconds" not in k}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v.replace(str(out), "OUT") if isinstance(v, str) else v

    return strip(data["records"])


def compare_efficiency(ref: Path, out: Path) -> list[str]:
    """Runs whose record differs from the reference's (wall times left out)."""
    a = {r["run"]: r for r in _records(ref)}
    b = {r["run"]: r for r in _records(out)}
    return [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def compare_ingest(ref: Path, out: Path) -> list[str]:
    """Differences between two ingests' manifests (text) and cached arrays (values)."""
    from medcl.data.cache import load_cached
    from medcl.data.manifest import read_manifest

    diffs = [
        name
        for name in ("m.csv", "m.meta.json")
        if (ref / name).read_bytes() != (out / name).read_bytes()
    ]
    a, b = read_manifest(ref / "m.csv").df, read_manifest(out / "m.csv").df
    pairs = zip(a["image_id"], a["cache_path"], b["cache_path"], strict=False)
    for ia, pa, pb in pairs:
        if not np.array_equal(load_cached(pa), load_cached(pb)):
            diffs.append(f"cache of {ia}")
    return diffs


COMPARE = {
    "pretrain": compare_pretrain,
    "efficiency": compare_efficiency,
    "ingest": compare_ingest,
}


def _write_in_progress(out: Path) -> Callable[[float], bool]:
    ckpts = out / "checkpoints"
    return lambda _: ckpts.is_dir() and any(ckpts.glob(".*.tmp"))


def _mid_epoch(out: Path, step: int) -> Callable[[float], bool]:
    ckpts = out / "checkpoints"
    return lambda _: (ckpts / f"step-step={step}.ckpt").exists()


def _files(folder: Path) -> int:
    return sum(len(f) for _, _, f in os.walk(folder)) if folder.is_dir() else 0


def _written(out: Path, count: int) -> Callable[[float], bool]:
    """Ready once ``out`` holds ``count`` files: a moment inside the command's real work."""
    return lambda _: _files(out) >= count


def main(argv: list[str] | None = None) -> int:
    """Run the trials; exit status 1 when a re-run failed or differed."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--kills", type=int, default=6, help="number of kills (default 6)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    ap.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="medcl-faults-"))
    if work.exists() and any(work.iterdir()):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"setting up in {work}", flush=True)
    setup = Setup(work)
    ref, took = {}, {}
    for target in COMPARE:
        ref[target] = work / "ref" / target
        took[target] = run(setup.command(target, ref[target]))
        print(f"uninterrupted {target}: {took[target]:.1f} s", flush=True)
    info = json.loads((ref["pretrain"] / "run.json").read_text())
    steps, per_epoch = int(info["steps"]), int(info["steps"]) // 3
    kills = resumed = differences = during_write = 0
    for trial in range(args.kills):
        kind = KINDS[trial % len(KINDS)]
        target = kind.split()[0]
        cmd_out = work / "trials" / f"{trial}_{target}"
        for _attempt in range(5):
            shutil.rmtree(cmd_out, ignore_errors=True)
            if kind == "pretrain mid-epoch":
                step = rng.choice([s for s in range(1, steps) if s % per_epoch])
                ready, detail = _mid_epoch(cmd_out, step), f"after step {step}"
            elif kind == "pretrain during a checkpoint write":
                ready, detail = _write_in_progress(cmd_out), "while a checkpoint was written"
            else:
                count = rng.randint(1, max(1, _files(ref[target]) - 1))
                ready, detail = _written(cmd_out, count), f"once {count} files were written"
            if kill_at(setup.command(kind, cmd_out), ready, 3 * took[target] + 60):
                break
        else:
            raise SystemExit(f"trial {trial}: {kind} always finished before the kill")
        kills += 1
        left = list((cmd_out / "checkpoints").glob(".*.tmp")) if target == "pretrain" else []
        during_write += bool(left)
        try:
            run(setup.command(kind, cmd_out))
        except SystemExit as exc:
            print(f"trial {trial}: {kind} killed {detail}: re-run failed: {exc}", flush=True)
            differences += 1
            continue
        resumed += 1
        diff = COMPARE[target](ref[target], cmd_out)
        differences += bool(diff)
        mid_write = " (a checkpoint's temporary was left half-written)" if left else ""
        print(
            f"trial {trial}: {kind} killed {detail}{mid_write}: "
            + ("same result" if not diff else f"DIFFERS: {diff[:5]}"),
            flush=True,
        )
    print(f"{during_write} of the kills interrupted a checkpoint write")
    print(f"{kills} kills, {resumed} resumed, {differences} differences")
    return 0 if differences == 0 and resumed == kills else 1


if __name__ == "__main__":
    sys.exit(main())
