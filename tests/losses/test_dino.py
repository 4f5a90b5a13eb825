"""DINO's loss, center and teacher temperature against explicit-loop references, and on two gloo
ranks against one process on the whole batch.

The reference writes the cross-entropy out element by element: for each image, each teacher view
``w`` and each *other* student view ``v``, ``−Σ_k q_k log p_k`` with ``q`` the softmax of the
centered teacher logits over ``τ_t`` and ``log p`` the log-softmax of the student logits over
``τ_s``, each softmax summed by hand. Gradients of both come from ``torch.autograd``.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from medcl.losses import dino_center_update, dino_loss, teacher_temperature
from tests.losses._ranks import run_on_two_ranks

N, K, IN_DIM = 8, 7, 6
TS, TT = 0.1, 0.04


def reference_loss(
    student: Tensor, teacher: Tensor, center: Tensor, ts: float, tt: float
) -> Tensor:
    """Mean over images and pairs (w, v ≠ w) of ``−Σ_k q_k log p_k``, by loops."""
    n, vs, k = student.shape
    vt = teacher.shape[1]
    total = student.new_zeros(())
    pairs = 0
    for i in range(n):
        for w in range(vt):
            t = teacher[i, w].detach()
            t_exp = [math.exp((float(t[j]) - float(center[j])) / tt) for j in range(k)]
            q = [e / sum(t_exp) for e in t_exp]
            for v in range(vs):
                if v == w:
                    continue
                denom = sum(torch.exp(student[i, v, j] / ts) for j in range(k))
                for j in range(k):
                    total = total - q[j] * (student[i, v, j] / ts - torch.log(denom))
                pairs += 1
    return total / pairs


def reference_center(center: Tensor, teacher: Tensor, m: float) -> Tensor:
    rows = [teacher[i, w] for i in range(teacher.shape[0]) for w in range(teacher.shape[1])]
    mean = [sum(float(r[j]) for r in rows) / len(rows) for j in range(center.shape[0])]
    values = [m * float(c) + (1 - m) * x for c, x in zip(center, mean, strict=True)]
    return torch.tensor(values, dtype=torch.float64)


def logits(vs: int, vt: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    student = (2 * torch.randn(N, vs, K, generator=gen, dtype=torch.float64)).requires_grad_()
    teacher = torch.randn(N, vt, K, generator=gen, dtype=torch.float64).requires_grad_()
    center = 0.3 * torch.randn(K, generator=gen, dtype=torch.float64)
    return student, teacher, center


@pytest.mark.parametrize(
    ("vs", "vt"), [(2, 2), (3, 3), (4, 2)], ids=["two_views", "three_views", "two_global_two_local"]
)
def test_loss_and_gradient_equal_the_loop_reference(vs: int, vt: int) -> None:
    student, teacher, center = logits(vs, vt)
    got = dino_loss(student, teacher, center, student_temp=TS, teacher_temp=TT)
    want = reference_loss(student, teacher, center, TS, TT)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    (g_got,) = torch.autograd.grad(got, student)
    (g_want,) = torch.autograd.grad(want, student)
    torch.testing.assert_close(g_got, g_want, atol=1e-12, rtol=1e-9)
    # the teacher is a target: no gradient reaches it
    (g_teacher,) = torch.autograd.grad(
        dino_loss(student, teacher, center, student_temp=TS, teacher_temp=TT),
        teacher,
        allow_unused=True,
    )
    assert g_teacher is None or not g_teacher.abs().any()


def test_same_view_pairs_and_the_center_matter() -> None:
    """Guards that the reference sees what the loss must: pairing a view with itself or
    forgetting the center changes the value (so those mistakes would fail the test above)."""
    student, teacher, center = logits(2, 2)
    student = student.detach()
    base = dino_loss(student, teacher, center, student_temp=TS, teacher_temp=TT)
    uncentered = dino_loss(student, teacher, 0 * center, student_temp=TS, teacher_temp=TT)
    swapped = dino_loss(student, teacher.flip(1), center, student_temp=TS, teacher_temp=TT)
    assert abs(float(base - uncentered)) > 1e-3 and abs(float(base - swapped)) > 1e-3


def test_center_update_is_the_ema_of_the_batch_mean() -> None:
    _, teacher, center = logits(2, 3)
    got = dino_center_update(center, teacher, 0.9)
    torch.testing.assert_close(got, reference_center(center, teacher.detach(), 0.9))
    assert got.dtype == center.dtype and not got.requires_grad
    torch.testing.assert_close(dino_center_update(center, teacher, 1.0), center)


def test_teacher_temperature_warms_up_linearly() -> None:
    assert teacher_temperature(0, 100, 0.04, 0.07, 0.3) == pytest.approx(0.04)
    assert teacher_temperature(15, 100, 0.04, 0.07, 0.3) == pytest.approx(0.055)
    assert teacher_temperature(30, 100, 0.04, 0.07, 0.3) == pytest.approx(0.07)
    assert teacher_temperature(90, 100, 0.04, 0.07, 0.3) == pytest.approx(0.07)
    assert teacher_temperature(0, 100, 0.04, 0.07, 0.0) == pytest.approx(0.07)


def test_bad_shapes_are_refused() -> None:
    student, teacher, center = logits(2, 2)
    with pytest.raises(ValueError, match="V_t"):
        dino_loss(student, torch.randn(N, 3, K).double(), center)
    with pytest.raises(ValueError, match="center"):
        dino_loss(student, teacher, torch.zeros(K + 1))


# --------------------------------------------------------------------------------------------------
# Two gloo ranks = one process on the whole batch
# --------------------------------------------------------------------------------------------------

SPLITS = {"even": (4, 4), "uneven": (5, 3)}


def parity_data() -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    """The student (a Linear), its inputs, the teacher logits and the center, seeded."""
    torch.manual_seed(0)
    model = nn.Linear(IN_DIM, K).double()
    inputs = torch.randn(N, 2, IN_DIM, dtype=torch.float64)
    teacher = torch.randn(N, 2, K, dtype=torch.float64)
    center = 0.3 * torch.randn(K, dtype=torch.float64)
    return model, inputs, teacher, center


def parity_case(split: tuple[int, int], rank: int, distributed: bool) -> dict[str, Tensor]:
    """Loss, parameter gradients and the updated center of this rank's part of the batch (DDP on
    two ranks), or of the whole batch in a single process."""
    model, inputs, teacher, center = parity_data()
    if distributed:
        start = sum(split[:rank])
        part = slice(start, start + split[rank])
        inputs, teacher = inputs[part], teacher[part]
        model = nn.parallel.DistributedDataParallel(model)
    value = dino_loss(model(inputs), teacher, center, student_temp=TS, teacher_temp=TT)
    value.backward()
    params = model.module if distributed else model
    return {
        "loss": value.detach(),
        "center": dino_center_update(center, teacher, 0.9),
        **{f"grad.{k}": p.grad.detach().clone() for k, p in params.named_parameters()},
    }


def rank_results_of(rank: int) -> dict[str, Any]:
    """One rank's part of every split (run by :func:`run_on_two_ranks`)."""
    return {name: parity_case(split, rank, True) for name, split in SPLITS.items()}


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return run_on_two_ranks(rank_results_of, tmp_path_factory.mktemp("dino_ranks"))


@pytest.mark.parametrize("name", list(SPLITS))
def test_two_ranks_equal_one_process(name: str, rank_results: list[dict[str, Any]]) -> None:
    """Loss and gradients as on the whole batch, and one center on both ranks: the full-batch
    update (the reference loop's)."""
    single = parity_case(SPLITS[name], 0, distributed=False)
    _, _, teacher, center = parity_data()
    full_center = reference_center(center, teacher, 0.9)
    for rank, results in enumerate(rank_results):
        got = results[name]
        for key, want in single.items():
            torch.testing.assert_close(
                got[key], want, atol=1e-5, rtol=1e-6, msg=f"{name}, rank {rank}, {key}"
            )
        torch.testing.assert_close(got["center"], full_center, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(rank_results[0][name]["center"], rank_results[1][name]["center"])
