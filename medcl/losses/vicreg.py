"""VICReg: variance-invariance-covariance regularisation (Bardes, Ponce & LeCun 2022, "VICReg:
Variance-Invariance-Covariance Regularization for Self-Supervised Learning", ICLR).

For the embeddings ``Z, Z' ∈ R^{n×d}`` of two views of a batch (the expander's outputs), Eq. 1-6::

    s(Z, Z') = 1/(n·d) Σ_i ‖z_i − z'_i‖²                         (invariance: mean squared error)
    v(Z)     = 1/d Σ_j max(0, γ − sqrt(Var(Z_{:,j}) + ε))          (variance hinge, γ = 1, ε = 1e-4)
    c(Z)     = 1/d Σ_{j≠l} C(Z)_{jl}²,  C(Z) = 1/(n−1) Σ_i (z_i − z̄)(z_i − z̄)ᵀ   (covariance)

    L = λ·s(Z, Z') + μ·[v(Z) + v(Z')] + ν·[c(Z) + c(Z')]          (λ = μ = 25, ν = 1)

``Var`` is the unbiased variance over the batch. (The authors' code averages the two views'
variance terms instead of summing them; this module follows the paper's Eq. 6.) With ``V > 2``
views, ``s`` is averaged over the ``V(V−1)/2`` pairs and ``v``, ``c`` over the views, times 2, so
that ``V = 2`` is exactly Eq. 6. There are no negatives and no target network; the variance term
prevents collapse and the covariance term decorrelates the dimensions.

Distributed (``gather=True`` under ``torch.distributed``): variance and covariance are statistics
of the *global* batch, so the embeddings are gathered with gradient
(:func:`~medcl.losses.distributed.gather_with_grad`) and every rank computes the loss of the whole
batch; the gather's backward sums the ranks' gradients and DDP divides by the world size, so the
parameter gradient equals the single-process one.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from medcl.losses.distributed import gather_with_grad, is_distributed


class VICRegParts(NamedTuple):
    """The VICReg loss and its unweighted terms.

    Attributes:
        loss: ``λ·invariance + μ·variance + ν·covariance``, differentiable.
        invariance: ``s`` (averaged over view pairs), detached.
        variance: ``v(Z) + v(Z')`` (2 × the mean over views), detached.
        covariance: ``c(Z) + c(Z')`` (2 × the mean over views), detached.
    """

    loss: Tensor
    invariance: Tensor
    variance: Tensor
    covariance: Tensor


def variance_term(z: Tensor, gamma: float = 1.0, eps: float = 1e-4) -> Tensor:
    """``v(Z) = mean_j max(0, γ − sqrt(Var(Z_{:,j}) + ε))`` of ``(n, d)`` embeddings, unbiased."""
    std = torch.sqrt(z.var(dim=0, unbiased=True) + eps)
    return F.relu(gamma - std).mean()


def covariance_term(z: Tensor) -> Tensor:
    """``c(Z) = Σ_{j≠l} C(Z)_{jl}² / d`` of ``(n, d)`` embeddings (``C`` with ``1/(n−1)``)."""
    n, d = z.shape
    centred = z - z.mean(dim=0)
    cov = (centred.T @ centred) / (n - 1)
    off_diagonal = cov - torch.diag_embed(torch.diagonal(cov))
    return off_diagonal.pow(2).sum() / d


def vicreg_loss(
    z: Tensor,
    *,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
    gather: bool = True,
) -> VICRegParts:
    """The VICReg loss of the views' embeddings (see the module docstring).

    Args:
        z: ``(N, V, D)`` embeddings (expander outputs), ``V ≥ 2`` views of each image.
        sim_weight: ``λ``, weight of the invariance term.
        var_weight: ``μ``, weight of the variance term.
        cov_weight: ``ν``, weight of the covariance term.
        gamma: ``γ``, the target standard deviation.
        eps: ``ε`` under the square root.
        gather: Under ``torch.distributed``, compute the loss over every rank's images (gathered
            with gradient).

    Returns:
        The loss (the same value on every rank) and its terms.

    Raises:
        ValueError: If ``z`` is not ``(N, V ≥ 2, D)`` or the (global) batch has fewer than 2
            images.
    """
    if z.ndim != 3 or z.shape[1] < 2:
        raise ValueError(f"z must be (N, V ≥ 2, D); got {tuple(z.shape)}")
    with torch.autocast(device_type=z.device.type, enabled=False):
        z = z.to(torch.promote_types(z.dtype, torch.float32))
        if gather and is_distributed():
            z = gather_with_grad(z)
        n, v, _ = z.shape
        if n < 2:
            raise ValueError(f"VICReg's variance needs at least 2 images in the batch; got {n}")
        pairs = [(a, b) for a in range(v) for b in range(a + 1, v)]
        invariance = torch.stack([F.mse_loss(z[:, a], z[:, b]) for a, b in pairs]).mean()
        variance = 2.0 * torch.stack([variance_term(z[:, a], gamma, eps) for a in range(v)]).mean()
        covariance = 2.0 * torch.stack([covariance_term(z[:, a]) for a in range(v)]).mean()
        loss = sim_weight * invariance + var_weight * variance + cov_weight * covariance
    return VICRegParts(loss, invariance.detach(), variance.detach(), covariance.detach())
