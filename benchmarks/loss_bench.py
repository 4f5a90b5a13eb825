"""Benchmark: medcl ``SSCLLoss`` vs ``monai.losses.ContrastiveLoss``, forward + backward on CPU.

Run ``python benchmarks/loss_bench.py`` (about three minutes on 2 cores, dominated by MONAI at
N*V = 2048; MONAI needs about 13 GB there). Sizes N*V = 512, 2048, 8192 views of dimension D = 128,
``torch.set_num_threads(2)``.

What is compared:
    - medcl: ``SSCLLoss`` on ``(N*V/2, 2, 128)`` features with realistic side information (25 % of
      samples labelled with 10 classes, two images per patient), i.e. both the SupCon and the
      NT-Xent terms and the patient masks: strictly more work than plain NT-Xent.
    - MONAI: ``ContrastiveLoss`` (NT-Xent) on the equivalent pairs ``(features[:, 0],
      features[:, 1])``. It builds an ``(NV, NV, D)`` tensor through broadcasting in
      ``cosine_similarity``. Before timing, the script checks that medcl's NT-Xent part and
      MONAI's loss give the same value on the same pairs.

How it is measured (honestly, and why):
    Every (implementation, size) case runs in a fresh subprocess, so one case's allocator caches and
    peaks cannot leak into another. Inside it, the inputs are allocated and the loss run once on a
    tiny batch (lazy initialisation), then the kernel's peak-RSS counter is reset by writing ``5``
    to ``/proc/self/clear_refs`` (Linux >= 4.0), ``VmRSS`` is read as the baseline, forward and
    backward run once, and the peak is ``VmHWM - baseline``: the largest resident memory the step
    added on top of what existed before it. ``tracemalloc`` cannot see torch's C++ allocations.
    The children run with ``MALLOC_MMAP_THRESHOLD_=1048576`` so that glibc serves every block of
    1 MiB or more with mmap and returns it to the OS on free (by default glibc raises this
    threshold after the first large free and then recycles freed tensors inside its heap, which
    would hide a repeated step's peak): resident memory then tracks the live tensors. The memory is
    taken from the first run at the measured size. Where ``clear_refs`` is not writable the script
    falls back to ``ru_maxrss - baseline`` (an upper bound) and says so. Time is the minimum wall
    time over that first run and three repetitions (only the first run for MONAI above
    N*V = 512, which takes minutes). Other processes on the machine add noise to times, not memory.

MONAI is skipped at a size when its estimated peak (about 6 x NV^2 x D x 4 bytes, measured) exceeds
``--monai-max-gb`` (default 16) or 80 % of the currently available memory: at N*V = 8192 it would
need about 200 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

SIZES = (512, 2048, 8192)
DIM = 128
THREADS = 2
TEMPERATURE = 0.1
MONAI_BYTES_PER_NVNVD = 6 * 4  # measured: peak ≈ 6 float32 tensors of shape (NV, NV, D)
MMAP_THRESHOLD = 1 << 20  # glibc: blocks >= 1 MiB are mmap'd, so freeing returns them to the OS
REPO = Path(__file__).resolve().parents[1]


def _proc_status_mib(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _available_gb() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / 1e9
    return float("inf")


def _make_inputs(nv: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    n = nv // 2
    features = torch.randn(n, 2, DIM, generator=gen)
    labels = torch.randint(0, 10, (n,), generator=gen)
    labels[torch.rand(n, generator=gen) > 0.25] = -1
    groups = torch.randperm(n, generator=gen) // 2
    return features, labels, groups


def _step(impl: str, features: Tensor, labels: Tensor, groups: Tensor) -> float:
    """One forward + backward; returns the loss value."""
    x = features.detach().requires_grad_(True)
    if impl == "medcl":
        from medcl.losses import SSCLLoss

        parts = SSCLLoss(temperature=TEMPERATURE)(x, labels, groups)
        loss = parts.sup + parts.ssl
    elif impl == "ntxent":
        from medcl.losses import SSCLLoss

        loss = SSCLLoss(temperature=TEMPERATURE)(x, sup=False).ssl
    elif impl == "limit":
        # the least any (NV, NV) contrastive loss must do: normalise, one matmul, one row
        # log-softmax and pick each view's partner, forward and backward
        import torch
        import torch.nn.functional as F

        z = F.normalize(x.reshape(-1, x.shape[-1]), dim=1)
        logp = torch.log_softmax((z / TEMPERATURE) @ z.T, dim=1)
        partner = torch.arange(z.shape[0]) ^ 1  # views of a sample are adjacent (V = 2)
        loss = -logp[torch.arange(z.shape[0]), partner].mean()
    else:
        from monai.losses import ContrastiveLoss

        loss = ContrastiveLoss(temperature=TEMPERATURE)(x[:, 0], x[:, 1])
    loss.backward()
    return float(loss.detach())


def child(impl: str, nv: int) -> dict[str, object]:
    """Measure one case in this (fresh) process."""
    import torch

    torch.set_num_threads(THREADS)
    features, labels, groups = _make_inputs(nv)
    _step(impl, *_make_inputs(64, seed=1))  # lazy initialisation, tiny

    exact = _reset_peak()
    baseline = _proc_status_mib("VmRSS")
    start = time.perf_counter()
    _step(impl, features, labels, groups)  # the first run at this size sets the memory peak
    times = [time.perf_counter() - start]
    if exact:
        peak = _proc_status_mib("VmHWM") - baseline
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline
    repeats = 0 if impl == "monai" and nv > 512 else 5
    for _ in range(repeats):
        start = time.perf_counter()
        _step(impl, features, labels, groups)
        times.append(time.perf_counter() - start)
    return {"time_s": min(times), "peak_mib": peak, "exact_peak": exact}


def run_case(impl: str, nv: int) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", impl, str(nv)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def value_check() -> float:
    """|medcl NT-Xent - MONAI ContrastiveLoss| on the same pairs (NV = 256)."""
    import torch
    from monai.losses import ContrastiveLoss

    from medcl.losses import SSCLLoss

    features, _, _ = _make_inputs(256, seed=2)
    ours = SSCLLoss(temperature=TEMPERATURE)(features, sup=False).ssl
    theirs = ContrastiveLoss(temperature=TEMPERATURE)(features[:, 0], features[:, 1])
    return float((ours - theirs).abs()) / max(1.0, float(torch.as_tensor(theirs).abs()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "NV"), help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--monai-max-gb", type=float, default=16.0)
    args = parser.parse_args()
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return

    import torch

    torch.set_num_threads(THREADS)
    print(f"torch {torch.__version__}, {THREADS} threads, D={DIM}, tau={TEMPERATURE}")
    print(f"value check: |NT-Xent - monai ContrastiveLoss| / |loss| = {value_check():.1e}")
    print("medcl = SSCLLoss fwd+bwd (25% labelled, 10 classes, 2 images/patient)")
    print("monai = monai.losses.ContrastiveLoss fwd+bwd on the same (B, D) view pairs")
    print("time = min wall time; peak = peak RSS added by the step (VmHWM - VmRSS)\n")
    header = (
        f"{'N*V':>6} | {'medcl time':>10} | {'medcl peak':>10} | {'monai time':>10} | "
        f"{'monai peak':>10} | {'faster':>7} | {'less mem':>8}"
    )
    print(header)
    print("-" * len(header))
    notes, results = [], {}
    for nv in args.sizes:
        ours = run_case("medcl", nv)
        need_gb = MONAI_BYTES_PER_NVNVD * nv * nv * DIM / 1e9
        limit_gb = min(args.monai_max_gb, 0.8 * _available_gb())
        theirs = None
        if need_gb <= limit_gb:
            theirs = run_case("monai", nv)
        else:
            notes.append(
                f"monai skipped at N*V={nv}: needs ~{need_gb:.0f} GB > limit {limit_gb:.1f} GB"
            )
        exact = ours["exact_peak"] and (theirs is None or theirs["exact_peak"])
        if not exact:
            notes.append(f"N*V={nv}: peak from ru_maxrss (upper bound), clear_refs unavailable")
        row = f"{nv:>6} | {ours['time_s']:>8.3f} s | {ours['peak_mib']:>6.0f} MiB | "
        if theirs is None:
            row += f"{'skipped':>10} | {'skipped':>10} | {'-':>7} | {'-':>8}"
        else:
            speed = theirs["time_s"] / ours["time_s"]
            mem = theirs["peak_mib"] / max(ours["peak_mib"], 1.0)
            row += (
                f"{theirs['time_s']:>8.2f} s | {theirs['peak_mib']:>6.0f} MiB | "
                f"{speed:>6.0f}x | {mem:>7.0f}x"
            )
            results[nv] = (speed, mem)
        print(row, flush=True)
    for note in notes:
        print(note)
    print(
        "\nagainst the limit (normalise + one matmul + row log-softmax, fwd+bwd, same process kind)"
    )
    limits = {}
    for nv in args.sizes:
        bare = run_case("limit", nv)["time_s"]
        plain = run_case("ntxent", nv)["time_s"]
        full = run_case("medcl", nv)["time_s"]
        limits[nv] = full / bare
        print(
            f"N*V={nv:>5}: limit {bare:.4f} s | NT-Xent {plain:.4f} s ({plain / bare:.2f}x) | "
            f"SSCL with labels and patient ids {full:.4f} s ({full / bare:.2f}x)",
            flush=True,
        )
    if 2048 in limits:
        verdict = "met" if limits[2048] <= 1.5 else "NOT met"
        print(f"target at N*V=2048 (SSCL <= 1.5x the limit): {limits[2048]:.2f}x, {verdict}")
    if 2048 in results:
        speed, mem = results[2048]
        verdict = "met" if speed >= 5 and mem >= 10 else "NOT met"
        print(f"target at N*V=2048 (>= 5x faster, >= 10x less memory): {verdict}")


if __name__ == "__main__":
    main()
