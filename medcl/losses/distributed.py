"""Cross-rank gathering for contrastive losses (negatives from every device).

Forward, :func:`gather_with_grad` concatenates every rank's tensor along dim 0. Backward, each rank
holds the gradient of *its own* loss with respect to the whole gathered tensor; the gradient of the
sum of all ranks' losses with respect to this rank's slice is

    dL/dx_r = sum_s d(L_s)/d(gathered)[slice_r],

so the backward pass all-reduces (SUM) the incoming gradient and returns this rank's slice
(docs/scale.md, "The distributed gather rule"; the same construction as the all-gather used by
SimCLR, Chen et al. 2020).
:func:`gather_no_grad` is the plain version for labels and patient ids.

Both are no-ops (they return their input) when ``torch.distributed`` is unavailable, not
initialised, or the world size is 1. Ranks may hold different numbers of rows: sizes are gathered
first and tensors padded to the largest size for the collective.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """Return whether a process group with more than one rank is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Return the world size, 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """Return this process's rank, 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def gather_sizes(n: int, device: torch.device | str = "cpu") -> list[int]:
    """Return every rank's ``n`` (dim-0 size), in rank order; ``[n]`` when not distributed.

    Args:
        n: this rank's size.
        device: device for the collective (CUDA for NCCL, CPU for gloo).
    """
    if not is_distributed():
        return [n]
    local = torch.tensor([n], dtype=torch.int64, device=device)
    out = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(out, local)
    return [int(t.item()) for t in out]


def _all_gather_cat(x: Tensor, sizes: list[int]) -> Tensor:
    """All-gather ``x`` (dim-0 sizes ``sizes``) and concatenate along dim 0, no autograd."""
    x = x.contiguous()
    longest = max(sizes)
    if x.shape[0] < longest:
        pad = x.new_zeros((longest - x.shape[0], *x.shape[1:]))
        x = torch.cat([x, pad], dim=0)
    parts = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(parts, x)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)], dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """Autograd-aware all-gather: all_gather + cat forward, all_reduce(SUM) + slice backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, sizes: list[int]) -> Tensor:
        r = dist.get_rank()
        ctx.start = sum(sizes[:r])
        ctx.stop = ctx.start + sizes[r]
        return _all_gather_cat(x, sizes)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.stop], None


def gather_with_grad(x: Tensor, sizes: list[int] | None = None) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0, letting gradients flow back to every rank.

    Args:
        x: this rank's tensor, ``(n_r, ...)``; trailing dims must agree across ranks.
        sizes: every rank's ``n_r`` if already known (from :func:`gather_sizes`), to skip one
            collective.

    Returns:
        ``(sum_r n_r, ...)``, rank 0's rows first; ``x`` itself when not distributed.
    """
    return _gather(x, sizes, _GatherWithGrad.apply)


def gather_no_grad(x: Tensor, sizes: list[int] | None = None) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0 without gradient (labels, patient ids, keys).

    Args:
        x: this rank's tensor, ``(n_r, ...)``.
        sizes: every rank's ``n_r`` if already known.

    Returns:
        ``(sum_r n_r, ...)`` without gradient, rank 0's rows first; ``x`` itself when not
        distributed.
    """
    return _gather(x, sizes, _all_gather_cat_no_grad)


def _gather(
    x: Tensor, sizes: list[int] | None, gather: Callable[[Tensor, list[int]], Tensor]
) -> Tensor:
    """``gather(x, sizes)`` with ``sizes`` collected when not given; ``x`` when not distributed."""
    if not is_distributed():
        return x
    if sizes is None:
        sizes = gather_sizes(x.shape[0], x.device)
    return gather(x, sizes)


@torch.no_grad()
def _all_gather_cat_no_grad(x: Tensor, sizes: list[int]) -> Tensor:
    return _all_gather_cat(x.detach(), sizes)


def all_reduce_sum(x: Tensor) -> Tensor:
    """Return the detached sum of ``x`` over ranks (for reporting); ``x.detach()`` if single."""
    out = x.detach().clone()
    if is_distributed():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out
