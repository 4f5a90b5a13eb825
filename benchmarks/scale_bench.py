"""A million rows: ingest, manifest, split, streamed pretraining and embedding, timed with peak RSS.

Generates a MedMNIST-layout ``.npz`` (random uint8 images, 4 images per patient with
``<split>_patient_ids``, 80/10/10 train/val/test by patient, 10 classes) in a temporary folder,
then runs every stage in its own process (so each peak RSS is that stage's own, workers included)
and prints one table:

* ``ingest w1`` / ``ingest w2`` — ``medcl.data.ingest.ingest`` with 1 and 2 worker processes,
  fresh manifest and cache each (target: w2 ≥ 1.8× faster than w1);
* ``manifest`` — ``read_manifest`` (read + validate) of the ingested manifest (target < 10 s at
  10⁶ rows);
* ``split`` — ``split_manifest(label_fraction=0.1)`` + ``write_manifest`` (the file's own
  splits kept, labels kept on 10 % of the training patients);
* ``pretrain`` — the real ``medcl pretrain`` path (``medcl.train.pretrain.pretrain``, Lightning)
  with ``configs/pretrain/tiny.yaml`` at ``image_size`` 28, ``optim.max_steps`` 200,
  ``data.in_memory=false`` (streamed; the packed file is built in this stage, its time
  included), loader workers ``auto`` (target: RSS < 3 GB at 10⁶ images);
* ``loader mem`` / ``loader lazy`` — images/s of the training DataLoader alone (same sampler,
  no augmentation, 0 workers) over the same rows held in memory and streamed, interleaved in
  rounds; run on at most ``--loader-rows`` rows so the in-memory side fits (target: lazy ≥ 0.9×
  mem);
* ``embed`` — a fresh tiny encoder over every row of the split manifest through the streamed
  dataset, batches of 1024 (no model folder needed).

The machine is shared: absolute times move with the load, ratios measured side by side are what
counts. Parts can be run on their own (``--parts ingest,manifest``); ``--keep DIR`` keeps the data
for later parts.

    python benchmarks/scale_bench.py --quick              # 10^5 images at 28²
    python benchmarks/scale_bench.py                      # 10^6 images at 28²
    python benchmarks/scale_bench.py --n 100000 --size 64
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PARTS = ("ingest", "manifest", "split", "pretrain", "loader", "embed")
REPO = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    """Peak resident memory of this process and of its largest finished child, in MiB."""
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(me, kids) / 1024  # Linux reports KiB


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and its finished children (the workers)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def generate(path: Path, n: int, size: int, seed: int = 0) -> None:
    """A MedMNIST-layout file of ``n`` images with patient ids (4 images per patient)."""
    rng = np.random.default_rng(seed)
    patients = np.arange(n) // 4
    n_pat = int(patients[-1]) + 1
    cut = np.array([0.8, 0.9]) * n_pat
    arrays = {}
    for split, lo, hi in (("train", 0, cut[0]), ("val", cut[0], cut[1]), ("test", cut[1], n_pat)):
        idx = np.flatnonzero((patients >= lo) & (patients < hi))
        arrays[f"{split}_images"] = rng.integers(0, 256, (len(idx), size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 10, (len(idx), 1), dtype=np.uint8)
        arrays[f"{split}_patient_ids"] = patients[idx]
    np.savez(path, **arrays)


def _child(part: str, work: Path, args: argparse.Namespace) -> dict:
    """Run one part in a fresh process; its JSON answer."""
    cmd = [sys.executable, __file__, "--child", part, "--dir", str(work), "--size", str(args.size)]
    cmd += ["--steps", str(args.steps), "--loader-rows", str(args.loader_rows)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        return {"error": " | ".join(tail)}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_child(part: str, work: Path, args: argparse.Namespace) -> dict:
    """The body of one part (in the child process)."""
    from medcl.data.ingest import ingest
    from medcl.data.manifest import read_manifest, write_manifest

    secret = work / "secret" / "key"
    source = work / "scale.npz"
    out: dict = {}
    t0 = time.perf_counter()
    if part.startswith("ingest"):
        workers = int(part[-1])
        target = work / f"ingest{workers}" / "m.csv"
        shutil.rmtree(target.parent, ignore_errors=True)  # from scratch: nothing reused
        t0 = time.perf_counter()
        report = ingest(source, target, workers=workers, secret=secret, progress=False)
        out["rows"] = report.rows
        shards = len(list((target.parent / "m.cache").glob("*/*.npy")))
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        out["main_cpu_s"] = me.ru_utime + me.ru_stime
        out["worker_cpu_s"] = kids.ru_utime + kids.ru_stime
        out["note"] = (
            f"{report.rows} rows, {shards} cache files; CPU main {out['main_cpu_s']:.1f} s, "
            f"workers {out['worker_cpu_s']:.1f} s"
        )
    elif part == "manifest":
        m = read_manifest(work / "ingest1" / "m.csv")
        out["rows"] = len(m)
        out["note"] = f"{len(m)} rows, {m.df['patient_key'].nunique()} patients"
    elif part == "split":
        from medcl.data.split import split_manifest

        m = read_manifest(work / "ingest1" / "m.csv")
        t0 = time.perf_counter()
        s = split_manifest(m, label_fraction=0.1, seed=0)
        write_manifest(s, work / "split.csv")
        out["rows"] = len(s)
        lab = int(((s.df["split"] == "train") & (s.df["label"] != "")).sum())
        out["note"] = f"labelled train rows kept: {lab} (read not timed)"
    elif part == "pretrain":
        from medcl.config import load_config
        from medcl.train.pretrain import pretrain

        shutil.rmtree(work / "ingest1" / "m.cache" / "packed", ignore_errors=True)  # timed here
        t0 = time.perf_counter()
        cfg = load_config(
            REPO / "configs" / "pretrain" / "tiny.yaml",
            [
                f"data.manifest={work / 'split.csv'}",
                f"data.image_size={args.size}",
                "data.in_memory=false",
                f"optim.max_steps={args.steps}",
                "trainer.threads=1",
                f"out={work / 'run'}",
                "trainer.logger=[]",
            ],
        )
        res = pretrain(cfg, restart=True, progress=False)
        out["rows"] = res.steps
        out["note"] = f"{res.steps} steps, batch {cfg.data.batch_size}; packing included"
    elif part == "loader":
        out.update(_loader(work, args))
    elif part == "embed":
        out.update(_embed(work, args))
    out["seconds"] = time.perf_counter() - t0
    out["cpu_s"] = cpu_seconds()
    out["rss_mb"] = peak_rss_mb()
    return out


def _loader(work: Path, args: argparse.Namespace) -> dict:
    """Images/s of the training loader, rows in memory vs streamed, interleaved rounds."""
    import torch
    from torch.utils.data import DataLoader

    from medcl.data.dataset import open_images
    from medcl.data.manifest import read_manifest
    from medcl.data.sampler import MixedBatchSampler

    m = read_manifest(work / "split.csv")
    train = m.subset(m.df["split"] == "train")
    train = train.subset(np.arange(len(train)) < args.loader_rows)
    torch.set_num_threads(1)
    sets = {
        "mem": open_images(train, args.size, in_memory=True),
        "lazy": open_images(train, args.size, in_memory=False),
    }
    labels = sets["mem"].labels.numpy()

    def rate(ds, batches: int) -> float:
        sampler = MixedBatchSampler(
            np.flatnonzero(labels >= 0), np.flatnonzero(labels < 0), 128, 0.25, seed=0
        )
        loader = DataLoader(ds, batch_sampler=sampler, num_workers=0)
        t, n = time.perf_counter(), 0
        for k, (x, *_rest) in enumerate(loader):
            n += len(x)
            if k + 1 >= batches:
                break
        return n / (time.perf_counter() - t)

    got: dict[str, list[float]] = {"mem": [], "lazy": []}
    for _ in range(5):
        for name in ("mem", "lazy"):
            got[name].append(rate(sets[name], 40))
    mem, lazy = float(np.median(got["mem"])), float(np.median(got["lazy"]))
    return {
        "rows": len(train),
        "note": f"mem {mem:,.0f} img/s, lazy {lazy:,.0f} img/s: lazy/mem = {lazy / mem:.2f}",
    }


def _embed(work: Path, args: argparse.Namespace) -> dict:
    """A tiny encoder over every row of the split manifest, streamed, batches of 1024."""
    import torch
    from torch.utils.data import DataLoader

    from medcl.config import load_config
    from medcl.data.dataset import open_images
    from medcl.data.manifest import read_manifest
    from medcl.models import EncoderSpec, build_encoder

    torch.set_num_threads(1)
    cfg = load_config(REPO / "configs" / "pretrain" / "tiny.yaml", [f"data.image_size={args.size}"])
    m = read_manifest(work / "split.csv")
    ds = open_images(m, args.size, in_memory=False)
    enc = build_encoder(EncoderSpec.from_config(cfg, 2)).eval()
    feats = None
    with torch.no_grad():
        for k, (x, *_rest) in enumerate(DataLoader(ds, batch_size=1024, num_workers=0)):
            f = enc(x)
            if feats is None:
                feats = torch.empty((len(ds), f.shape[1]))
            feats[k * 1024 : k * 1024 + len(f)] = f
    return {"rows": len(ds), "note": f"features {tuple(feats.shape)} (fresh tiny encoder)"}


def main(argv: list[str] | None = None) -> None:
    """Generate the data, run the parts, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="images in the file")
    parser.add_argument("--size", type=int, default=28, help="image rows/columns")
    parser.add_argument("--quick", action="store_true", help="10^5 images")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"subset of {','.join(PARTS)}")
    parser.add_argument("--steps", type=int, default=200, help="pretraining steps")
    parser.add_argument("--loader-rows", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, default=None, help="work folder kept between runs")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args.child, args.dir, args)))
        return
    n = 100_000 if args.quick else args.n
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}")
    tmp = None
    if args.keep is None:
        tmp = tempfile.TemporaryDirectory(prefix="medcl-scale-")
        work = Path(tmp.name)
    else:
        work = args.keep
        work.mkdir(parents=True, exist_ok=True)
    try:
        source = work / "scale.npz"
        if not source.is_file() or json.loads((work / "gen.json").read_text()) != [n, args.size]:
            t = time.perf_counter()
            generate(source, n, args.size)
            (work / "gen.json").write_text(json.dumps([n, args.size]))
            print(
                f"generated {n:,} images {args.size}x{args.size} in {time.perf_counter() - t:.1f} s"
            )
        load = os.getloadavg()[0]
        print(f"{n:,} images at {args.size}², {os.cpu_count()} CPUs, load average {load:.1f}")
        rows = []
        for part in parts:
            names = ["ingest1", "ingest2"] if part == "ingest" else [part]
            for name in names:
                r = _child(name, work, args)
                rows.append((name, r))
                _print_row(name, r)
        _summary(dict(rows), n)
    finally:
        if tmp is not None:
            tmp.cleanup()


def _print_row(name: str, r: dict) -> None:
    if "error" in r:
        print(f"{name:<10} FAILED  {r['error']}")
        return
    print(
        f"{name:<10} {r['seconds']:8.1f} s wall {r.get('cpu_s', 0):8.1f} s CPU "
        f"{r['rss_mb']:7.0f} MB peak RSS  {r.get('note', '')}"
    )


def _summary(r: dict[str, dict], n: int) -> None:
    """The targets of issue 12 against the figures."""
    print("targets:")
    a, b = r.get("ingest1", {}), r.get("ingest2", {})
    if "seconds" in a and "seconds" in b:
        speed = a["seconds"] / b["seconds"]
        print(f"  ingest 2 workers vs 1: {speed:.2f}x wall (target >= 1.8x) {_ok(speed >= 1.8)}")
        serial = b.get("main_cpu_s", 0.0)
        if serial:  # Amdahl on two idle cores: the main process' part does not parallelise
            bound = a["cpu_s"] / (serial + b["worker_cpu_s"] / 2)
            print(f"  ingest 2 workers, bound on two idle cores from the CPU split: {bound:.2f}x")
    if "seconds" in r.get("manifest", {}):
        s, c = r["manifest"]["seconds"], r["manifest"]["cpu_s"]
        print(
            f"  manifest read + validate of {n:,} rows: {s:.1f} s wall, {c:.1f} s CPU "
            f"(target < 10 s) {_ok(s < 10)}"
        )
    if "rss_mb" in r.get("pretrain", {}):
        gb = r["pretrain"]["rss_mb"] / 1024
        print(f"  pretraining peak RSS: {gb:.2f} GB (target < 3 GB) {_ok(gb < 3)}")
    note = r.get("loader", {}).get("note", "")
    if "=" in note:
        ratio = float(note.rsplit("=", 1)[1])
        print(f"  streamed loader vs in memory: {ratio:.2f} (target >= 0.9) {_ok(ratio >= 0.9)}")


def _ok(flag: bool) -> str:
    return "met" if flag else "MISSED"


if __name__ == "__main__":
    main()
