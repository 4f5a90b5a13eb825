"""Run a computation on two gloo ranks and collect each rank's results (shared by the parity tests).

The process group is initialised from a file in a fresh temporary folder (``init_method=file://``),
so there is no TCP port to pick and no race for it with other jobs on the machine.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD_SIZE = 2


def _rank_main(rank: int, compute: Callable[[int], Any], init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        torch.save(compute(rank), Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()  # no rank tears the group down while the other still receives
    finally:
        # DDP wrappers hold the process group through reference cycles; freed later, at exit,
        # gloo's threads abort the process ("terminate called without an active exception")
        gc.collect()
        dist.destroy_process_group()


def run_on_two_ranks(
    compute: Callable[[int], Any], out_dir: Path, timeout: float = 120
) -> list[Any]:
    """``compute(rank)`` on each of two spawned ranks (a module-level function, so that spawn can
    import it); the ranks' return values, in rank order."""
    init_file = out_dir / "rendezvous"  # must not exist yet: the ranks create and share it
    context = mp.spawn(
        _rank_main,
        args=(compute, str(init_file), str(out_dir)),
        nprocs=WORLD_SIZE,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout  # a hang guard, not a speed check
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"distributed workers did not finish within {timeout:.0f} s")
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD_SIZE)]
