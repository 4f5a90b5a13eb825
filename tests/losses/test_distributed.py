"""Two gloo processes with DDP give the same loss and gradients as one process on the whole batch.

The process group is initialised from a file in a fresh temporary folder (``init_method=file://``),
so there is no TCP rendezvous port to pick and no race for it with other jobs on the machine. One
spawn runs every case: each child builds the same tiny model (a Linear projection), wraps it in
``DistributedDataParallel``, takes its part of the batch, computes the contrastive parts asked for
with ``gather=True``, weights them as the objective does (``λ1 · sup + λ2 · ssl``) and
back-propagates; the parent repeats each case in a single process on the whole batch and compares
the weighted loss, each part's value and the parameter gradients.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from medcl.losses import MoCoLoss, SSCLLoss, gather_no_grad, gather_with_grad
from tests.losses._ranks import run_on_two_ranks

N, IN_DIM, OUT_DIM = 8, 6, 5
# Rank 0 holds 3 labelled samples, rank 1 only 1 (the SSCL mean must use the global count);
# patients 0 and 3 have images on both ranks; patient 0 has images of two different labels.
LABELS = [0, 1, -1, 0, 0, -1, -1, -1]
GROUPS = [0, 1, 2, 3, 0, 5, 3, 7]

# name: (loss factory, {part: weight} asked for, n_views, use groups, rank split)
CASES: dict[str, tuple[Any, dict[str, float], int, bool, tuple[int, int]]] = {
    "ntxent": (lambda: SSCLLoss(temperature=0.2), {"ssl": 1.0}, 2, False, (4, 4)),
    "ntxent_groups": (lambda: SSCLLoss(temperature=0.2), {"ssl": 1.0}, 2, True, (4, 4)),
    "supcon": (lambda: SSCLLoss(temperature=0.2), {"sup": 1.0}, 2, False, (4, 4)),
    "supcon_groups": (lambda: SSCLLoss(temperature=0.2), {"sup": 1.0}, 2, True, (4, 4)),
    # rank 1 holds no labelled sample: its SupCon share is 0, the mean uses the global count
    "supcon_uneven_split": (lambda: SSCLLoss(), {"sup": 0.7}, 2, True, (5, 3)),
    "sscl": (lambda: SSCLLoss(), {"sup": 0.7, "ssl": 1.3}, 2, False, (4, 4)),
    "sscl_groups": (lambda: SSCLLoss(), {"sup": 0.7, "ssl": 1.3}, 2, True, (4, 4)),
    "sscl_group_positives_v3": (
        lambda: SSCLLoss(group_positives=True),
        {"sup": 1.0, "ssl": 1.0},
        3,
        True,
        (4, 4),
    ),
    "sscl_uneven_split": (lambda: SSCLLoss(), {"sup": 0.7, "ssl": 1.0}, 2, True, (5, 3)),
}


def run_case(name: str, rank: int, distributed: bool) -> dict[str, Any]:
    """Forward + backward of one case; the whole batch when not distributed."""
    make_loss, weights, views, use_groups, split = CASES[name]
    torch.manual_seed(0)
    model = nn.Linear(IN_DIM, OUT_DIM).double()
    inputs = torch.randn(N, views, IN_DIM, dtype=torch.float64)
    labels = torch.tensor(LABELS)
    groups = torch.tensor(GROUPS) if use_groups else None
    if distributed:
        start = sum(split[:rank])
        part = slice(start, start + split[rank])
        inputs, labels = inputs[part], labels[part]
        groups = groups[part] if groups is not None else None
        model = nn.parallel.DistributedDataParallel(model)
    parts = make_loss()(model(inputs), labels, groups, sup="sup" in weights, ssl="ssl" in weights)
    asked = {key: getattr(parts, key) for key in weights}
    assert all(value is not None for value in asked.values())
    assert {key for key in ("sup", "ssl") if getattr(parts, key) is not None} == set(asked)
    value = sum(weights[key] * part for key, part in asked.items())
    value.backward()
    params = model.module if distributed else model
    return {
        "loss": value.detach(),
        "parts": {key: part.detach() for key, part in asked.items()},
        "grads": {k: p.grad.detach().clone() for k, p in params.named_parameters()},
    }


def gather_checks(rank: int) -> dict[str, Any]:
    """Direct checks of the gathers (uneven sizes) and of MoCo's cross-rank enqueue."""
    x = torch.full((rank + 1, 2), float(rank + 1), requires_grad=True)
    gathered = gather_with_grad(x)
    weights = torch.arange(1.0, gathered.shape[0] + 1)[:, None] * (rank + 1)
    (gathered * weights).sum().backward()
    moco = MoCoLoss(dim=3, queue_size=4)
    moco.enqueue(torch.full((2, 3), float(rank + 1)), groups=torch.tensor([rank, rank]))
    return {
        "gathered": gathered.detach(),
        "grad": x.grad,
        "labels": gather_no_grad(torch.tensor([rank] * (rank + 1))),
        "moco_groups": moco.queued()[2],
    }


def rank_results_of(rank: int) -> dict[str, Any]:
    """One rank's part of every case and the gather checks (run by :func:`run_on_two_ranks`)."""
    results = {name: run_case(name, rank, distributed=True) for name in CASES}
    results["_gather"] = gather_checks(rank)
    return results


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return run_on_two_ranks(rank_results_of, tmp_path_factory.mktemp("ranks"))


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_equal_one_process(name: str, rank_results: list[dict[str, Any]]) -> None:
    single = run_case(name, 0, distributed=False)
    for rank, results in enumerate(rank_results):
        got = results[name]
        msg = f"{name}, rank {rank}"
        torch.testing.assert_close(got["loss"], single["loss"], atol=1e-5, rtol=1e-6, msg=msg)
        for key, grad in single["grads"].items():
            torch.testing.assert_close(
                got["grads"][key], grad, atol=1e-5, rtol=1e-6, msg=f"{msg}, grad of {key}"
            )
        assert set(got["parts"]) == set(single["parts"]), msg
        for key, part in single["parts"].items():
            torch.testing.assert_close(
                got["parts"][key], part, atol=1e-5, rtol=1e-6, msg=f"{msg}, part {key}"
            )


def test_gathers_and_moco_enqueue_across_ranks(rank_results: list[dict[str, Any]]) -> None:
    expected = torch.tensor([[1.0, 1.0], [2.0, 2.0], [2.0, 2.0]])
    for rank, results in enumerate(rank_results):
        checks = results["_gather"]
        torch.testing.assert_close(checks["gathered"], expected)
        assert checks["labels"].tolist() == [0, 1, 1]
        assert checks["moco_groups"].tolist() == [0, 0, 1, 1]
        # d/dx_r of sum_s sum_rows (rows weights * (s + 1)) = 3 * row weight, for this rank's rows
        rows = torch.arange(1.0, 4.0)[: rank + 1] if rank == 0 else torch.arange(2.0, 4.0)
        torch.testing.assert_close(checks["grad"], (3 * rows)[:, None].expand(-1, 2))


def test_gathers_are_identity_without_process_group() -> None:
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x
    assert gather_no_grad(x) is x
