"""Ingest throughput at 1 and N worker processes on a synthetic 2-D DICOM cohort.

Generates a phantom cohort with :func:`medcl.data.synth.generate_cohort` (about 4 files per
patient: 500 patients ≈ 2,000 files) in a temporary folder, ingests it from scratch once per worker
count (fresh manifest and cache each time, so nothing is reused), checks that the manifests agree
and prints files/s, the CPU seconds spent (this process and its workers) and the speed-up. The
load average is printed with each run: on a shared machine a speed-up needs idle cores.

    python benchmarks/ingest_bench.py [--patients 500] [--size 64] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd

from medcl.data.ingest import ingest
from medcl.data.manifest import read_manifest
from medcl.data.synth import generate_cohort


def _cpu_seconds() -> float:
    """CPU time of this process plus its finished child processes (the workers)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print one line per worker count plus the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--size", type=int, default=64, help="image rows/columns")
    parser.add_argument("--workers", type=int, default=2, help="parallel run's worker count")
    parser.add_argument("--modality", default="mr", choices=("mr", "ct", "xr"))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="medcl-ingest-bench-") as tmp:
        tmp_path = Path(tmp)
        cohort = tmp_path / "cohort"
        t0 = time.perf_counter()
        summary = generate_cohort(
            cohort,
            patients=args.patients,
            size=args.size,
            dims=2,
            modality=args.modality,
            progress=False,
        )
        print(
            f"cohort: {summary.patients} patients, {summary.files} DICOM files "
            f"{args.size}x{args.size} {args.modality} (generated in "
            f"{time.perf_counter() - t0:.1f} s)"
        )
        rates = {}
        frames = {}
        for workers in (1, args.workers):
            out = tmp_path / f"w{workers}" / "manifest.csv"
            t0, c0 = time.perf_counter(), _cpu_seconds()
            report = ingest(
                cohort,
                out,
                labels=cohort / "labels.csv",
                workers=workers,
                secret=tmp_path / "secret.key",
                progress=False,
            )
            elapsed, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
            rates[workers] = report.files_seen / elapsed
            frames[workers] = read_manifest(out).df.drop(columns="cache_path")
            print(
                f"workers={workers}: {report.files_seen} files, {report.rows} rows, "
                f"{report.rejected} rejected in {elapsed:.2f} s = {rates[workers]:.0f} files/s "
                f"(CPU {cpu:.2f} s incl. workers; load average {os.getloadavg()[0]:.1f} on "
                f"{os.cpu_count()} CPUs)"
            )
        pd.testing.assert_frame_equal(frames[1], frames[args.workers])
        print(
            f"speed-up {args.workers} vs 1 worker: {rates[args.workers] / rates[1]:.2f}x "
            "(manifests identical)"
        )


if __name__ == "__main__":
    main()
