"""Pretraining step throughput: the whole pipeline vs the bare encoder, side by side.

pipeline = cached images from a DataLoader (mixed labelled/unlabelled batches, loader-side views)
           + batched augmentation on the device + encoder on every view + projection head
           + SSCLLoss + backward + AdamW step                         (PretrainModule.objective)
bare     = encoder forward + backward + AdamW step on a ready tensor of the same number of views

Both are timed in interleaved rounds (so load from other processes hits both alike); the figure is
views per second (batch × views). Target on the CPU: pipeline ≥ 0.95 × bare.

    python benchmarks/pretrain_bench.py       # CPU: resnet18, 64², batch 128, 2 threads
    python benchmarks/pretrain_bench.py --device cuda --encoder resnet50 --size 224 --batch 256

On CUDA the step runs under bf16 autocast with channels-last (as `medcl pretrain` does) and GPU
utilisation is sampled with nvidia-smi while the pipeline runs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from medcl.config import load_config
from medcl.data.manifest import Manifest, new_frame, write_manifest
from medcl.train.datamodule import PretrainData
from medcl.train.module import PretrainModule
from medcl.transforms import build_preset


def fake_cache(root: Path, n: int, size: int, seed: int = 0) -> Path:
    """A split manifest of ``n`` cached MR-like images (25 % labelled, 4 images per patient)."""
    rng = np.random.default_rng(seed)
    rows = []
    (root / "cache").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size] / size
    for i in range(n):
        img = (
            0.4
            + 0.2 * np.sin(6 * xx + rng.random()) * np.cos(5 * yy)
            + rng.normal(0, 0.05, (size, size))
        )
        f = root / "cache" / f"{i}.npy"
        np.save(f, np.clip(img, 0, 1).astype(np.float32)[None])
        rows.append(
            {
                "image_id": f"i{i}",
                "path": str(f),
                "patient_key": f"p{i // 4}",
                "study_key": f"s{i}",
                "modality": "MR",
                "split": "train",
                "label": f"c{i % 3}" if i % 4 == 0 else "",
                "sha256": f"{i:064x}",
                "dims": 2,
                "rows": size,
                "cols": size,
                "slices": 1,
                "cache_path": str(f),
                "intensity": "unit",
            }
        )
    return write_manifest(Manifest(new_frame(rows), ["c0", "c1", "c2"]), root / "split.csv")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="steps per round and path")
    ap.add_argument("--workers", default="auto", help="DataLoader workers (auto: 2 for MR)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        manifest = fake_cache(Path(tmp), max(4 * args.batch, 512), args.size)
        cfg = load_config(
            None,
            [
                f"data.manifest={manifest}",
                f"data.image_size={args.size}",
                f"data.batch_size={args.batch}",
                f"data.num_workers={args.workers}",
                f"model.encoder={args.encoder}",
                f"model.width={args.width}",
            ],
        )
        from medcl.data.manifest import read_manifest

        m = read_manifest(manifest)
        preset = build_preset("mr", {}, dims=2)
        dm = PretrainData(cfg, m, preset, 2)
        dm.setup()
        loader = dm.train_dataloader()
        module = PretrainModule(cfg, preset, 2, 3).to(dev)
        if cuda:
            module.encoder.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
        bare_opt = torch.optim.AdamW(module.encoder.parameters(), lr=1e-3)
        views = cfg.augment.views
        ready = torch.rand(args.batch * views, 1, args.size, args.size, device=dev)
        if cuda:
            ready = ready.contiguous(memory_format=torch.channels_last)
        amp = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if cuda
            else torch.autocast("cpu", enabled=False)
        )

        def sync() -> None:
            if cuda:
                torch.cuda.synchronize()

        it = iter(loader)

        def pipeline_step() -> None:
            nonlocal it
            try:
                x, y, g, _ = next(it)
            except StopIteration:
                it = iter(loader)
                x, y, g, _ = next(it)
            x, y, g = x.to(dev, non_blocking=True), y.to(dev), g.to(dev)
            with amp:
                loss, _ = module.objective(x, y, g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def bare_step() -> None:
            with amp:
                out = module.encoder(ready)
            bare_opt.zero_grad(set_to_none=True)
            out.float().mean().backward()
            bare_opt.step()

        for f in (pipeline_step, bare_step):  # warm-up
            f()
            f()
        sync()
        util: list[float] = []
        stop = threading.Event()
        if cuda:

            def poll() -> None:
                while not stop.is_set():
                    try:
                        r = subprocess.run(
                            [
                                "nvidia-smi",
                                "--query-gpu=utilization.gpu",
                                "--format=csv,noheader,nounits",
                            ],
                            capture_output=True,
                            text=True,
                            timeout=5,
                        )
                        util.append(float(r.stdout.split()[0]))
                    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                        pass
                    time.sleep(0.2)

            threading.Thread(target=poll, daemon=True).start()
        rates: dict[str, list[float]] = {"pipeline": [], "bare": []}
        for _ in range(args.rounds):
            for name, f in (("pipeline", pipeline_step), ("bare", bare_step)):
                if name == "pipeline":
                    # a fresh iterator: no batch prefetched by loader workers during the bare round
                    it = iter(loader)
                sync()
                t = time.perf_counter()
                for _ in range(args.steps):
                    f()
                sync()
                rates[name].append(args.steps * args.batch * views / (time.perf_counter() - t))
        stop.set()
    p, b = statistics.median(rates["pipeline"]), statistics.median(rates["bare"])
    print(
        f"{args.encoder} (width {args.width}), {args.size}x{args.size}, batch {args.batch} × "
        f"{views} views, device {dev}, {args.threads} threads, torch {torch.__version__}; "
        f"median of {args.rounds} interleaved rounds × {args.steps} steps"
    )
    print(f"pipeline (loader + augment + encoder + head + SSCL loss + step): {p:8.1f} views/s")
    print(f"bare encoder (forward + backward + step):                       {b:8.1f} views/s")
    print(f"ratio pipeline / bare: {p / b:.2f} (target >= 0.95)")
    if util:
        print(
            f"GPU utilisation during the run: median {statistics.median(util):.0f} %, "
            f"max {max(util):.0f} %"
        )


if __name__ == "__main__":
    main()
