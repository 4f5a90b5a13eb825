"""DINO's self-distillation loss, its center and its teacher temperature (Caron et al. 2021,
"Emerging Properties in Self-Supervised Vision Transformers", ICCV).

A student network ``g_θs`` and a teacher ``g_θt`` (an EMA of the student, moved by the caller) both
end in ``K`` logits. For image ``i`` with teacher views ``w`` (the global crops) and student views
``v`` (the global crops, then optional local crops), the teacher's output is *centered* and
*sharpened*, the student's only tempered (Eq. 1 and section 3.1)::

    P_t(i, w) = softmax( (t_iw − c) / τ_t )          (no gradient)
    log P_s(i, v) = log_softmax( s_iv / τ_s )

    L = 1/(N·|Π|) Σ_i Σ_{(w, v) ∈ Π} − Σ_k P_t(i, w)_k · log P_s(i, v)_k

over the pairs ``Π = {(w, v) : v ≠ w}`` of *different* views (``|Π| = V_t·V_s − V_t``). Centering
(``c`` subtracted) keeps one dimension from dominating, sharpening (``τ_t < τ_s``) keeps the output
from going uniform; together they avoid collapse. After the loss, the center follows the teacher
outputs' batch mean (Eq. 4)::

    c ← m·c + (1 − m) · 1/(N·V_t) Σ_i Σ_w t_iw

The teacher temperature is warmed up linearly (section 3.1 and appendix; the paper's recipe is
0.04 → 0.07 over the first 30 epochs), :func:`teacher_temperature`.

Distributed (``gather=True`` under ``torch.distributed``): the loss is a mean over images, so no
output is gathered; each rank adds up its own images' terms and divides by the *global* count
``N``. As for the contrastive losses (:mod:`medcl.losses._contrastive`), rank ``r`` back-propagates
``W`` times its share (DDP divides the summed gradients by ``W``) and returns the global value on
every rank; ranks may hold different numbers of images. The center's batch mean is all-reduced
(sum of outputs and count over ranks), so every rank keeps the same center.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from medcl.losses._contrastive import finalise
from medcl.losses.distributed import all_reduce_sum, gather_sizes, is_distributed


def _check(student: Tensor, teacher: Tensor, center: Tensor) -> None:
    if student.ndim != 3 or teacher.ndim != 3:
        raise ValueError(
            f"student and teacher must be (N, V, K); got {tuple(student.shape)}, "
            f"{tuple(teacher.shape)}"
        )
    (n, vs, k), (nt, vt, kt) = student.shape, teacher.shape
    if (nt, kt) != (n, k) or not 1 <= vt <= vs or vs < 2:
        raise ValueError(
            "teacher must be (N, V_t, K) with 1 ≤ V_t ≤ V_s and V_s ≥ 2 for a student (N, V_s, K); "
            f"got {tuple(teacher.shape)} and {tuple(student.shape)}"
        )
    if center.shape != (k,):
        raise ValueError(f"center must be ({k},); got {tuple(center.shape)}")


def dino_loss(
    student: Tensor,
    teacher: Tensor,
    center: Tensor,
    *,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
    gather: bool = True,
) -> Tensor:
    """Cross-entropy between the centered, sharpened teacher and the student over different views.

    See the module docstring for the formula.

    Args:
        student: ``(N, V_s, K)`` student logits, with gradient; the first ``V_t`` views are the
            ones the teacher saw (global crops), any further ones student-only (local crops).
        teacher: ``(N, V_t, K)`` teacher logits (detached here).
        center: ``(K,)`` the center ``c`` (not updated here: :func:`dino_center_update`).
        student_temp: ``τ_s`` (> 0).
        teacher_temp: ``τ_t`` (> 0).
        gather: Under ``torch.distributed``, average over every rank's images (see the module
            docstring).

    Returns:
        The scalar loss, the global mean over images and view pairs.

    Raises:
        ValueError: If the shapes do not fit or a temperature is not positive.
    """
    _check(student, teacher, center)
    if student_temp <= 0 or teacher_temp <= 0:
        raise ValueError(f"temperatures must be > 0; got {student_temp}, {teacher_temp}")
    n, vs, _ = student.shape
    vt = teacher.shape[1]
    with torch.autocast(device_type=student.device.type, enabled=False):
        dtype = torch.promote_types(student.dtype, torch.float32)
        targets = F.softmax((teacher.detach().to(dtype) - center.to(dtype)) / teacher_temp, dim=-1)
        log_p = F.log_softmax(student.to(dtype) / student_temp, dim=-1)
        cross = -torch.einsum("nwk,nvk->nwv", targets, log_p)  # (N, V_t, V_s)
        different = ~torch.eye(vt, vs, dtype=torch.bool, device=student.device)
        n_pairs = vt * vs - vt
        world = 1
        n_global = n
        if gather and is_distributed():
            sizes = gather_sizes(n, student.device)
            world, n_global = len(sizes), sum(sizes)
        local = torch.where(different, cross, 0.0).sum() / (n_global * n_pairs)
        (loss,) = finalise([local], world)
    return loss


@torch.no_grad()
def dino_center_update(
    center: Tensor, teacher: Tensor, momentum: float = 0.9, *, gather: bool = True
) -> Tensor:
    """The next center ``c ← m·c + (1 − m)·mean(teacher outputs)`` (DINO Eq. 4).

    Args:
        center: ``(K,)`` the current center.
        teacher: ``(N, V_t, K)`` (or ``(M, K)``) teacher logits of this step, before centering.
        momentum: ``m`` in ``[0, 1]``.
        gather: Under ``torch.distributed``, the mean is over every rank's outputs (sums and counts
            all-reduced), so all ranks get the same center.

    Returns:
        The new center, ``(K,)``, in ``center``'s dtype (``center`` itself is not changed).

    Raises:
        ValueError: If the sizes do not fit or ``momentum`` is outside ``[0, 1]``.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1]; got {momentum}")
    k = center.shape[-1]
    if center.ndim != 1 or teacher.shape[-1] != k:
        raise ValueError(
            f"center (K,) and teacher (..., K) must agree; got {tuple(center.shape)}, "
            f"{tuple(teacher.shape)}"
        )
    dtype = torch.promote_types(teacher.dtype, torch.float32)
    t = teacher.detach().to(dtype).reshape(-1, k)
    stats = torch.cat([t.sum(dim=0), t.new_tensor([t.shape[0]])])
    if gather and is_distributed():
        stats = all_reduce_sum(stats)
    batch_center = stats[:k] / stats[k].clamp_min(1)
    return (momentum * center.to(dtype) + (1.0 - momentum) * batch_center).to(center.dtype)


def teacher_temperature(
    step: int, total_steps: int, start: float, final: float, warmup: float
) -> float:
    """``τ_t`` at optimiser step ``k`` of ``K``: linear from ``start`` to ``final`` over the first
    ``warmup·K`` steps, then ``final`` (DINO's warm-up of the teacher temperature).

    Args:
        step: Optimiser steps taken ``k`` (clamped to ``[0, K]``).
        total_steps: Optimiser steps of the run ``K`` (> 0).
        start: ``τ_t`` at step 0.
        final: ``τ_t`` after the warm-up.
        warmup: Share of the steps spent warming up, in ``[0, 1]`` (0 = ``final`` throughout).

    Returns:
        The teacher temperature.

    Raises:
        ValueError: If ``total_steps`` is not positive.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0; got {total_steps}")
    span = warmup * total_steps
    if span <= 0:
        return float(final)
    progress = min(max(step, 0), total_steps) / span
    return float(start + (final - start) * min(1.0, progress))
