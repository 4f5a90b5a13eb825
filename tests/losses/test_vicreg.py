"""VICReg's loss against an explicit-loop reference (values and gradients), and on two gloo ranks
against one process on the whole batch (variance and covariance are global-batch statistics).

The reference sums by hand over images, dimensions and view pairs: the per-dimension unbiased
variance, its hinge ``max(0, 1 − sqrt(Var + ε))``, every off-diagonal covariance entry squared,
and the squared differences of the two views. Gradients of both come from ``torch.autograd``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from medcl.losses import vicreg_loss
from tests.losses._ranks import run_on_two_ranks

N, D, IN_DIM = 8, 5, 6
EPS = 1e-4


def reference_terms(z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(invariance, variance, covariance)`` by loops; the last two summed over views × 2/V."""
    n, v, d = z.shape

    def column_mean(view: int, j: int) -> Tensor:
        return sum(z[i, view, j] for i in range(n)) / n

    def variance(view: int) -> Tensor:
        total = z.new_zeros(())
        for j in range(d):
            m = column_mean(view, j)
            var = sum((z[i, view, j] - m) ** 2 for i in range(n)) / (n - 1)
            total = total + torch.clamp(1.0 - torch.sqrt(var + EPS), min=0.0)
        return total / d

    def covariance(view: int) -> Tensor:
        means = [column_mean(view, j) for j in range(d)]
        total = z.new_zeros(())
        for a in range(d):
            for b in range(d):
                if a != b:
                    c = sum(
                        (z[i, view, a] - means[a]) * (z[i, view, b] - means[b]) for i in range(n)
                    ) / (n - 1)
                    total = total + c**2
        return total / d

    pairs = [(a, b) for a in range(v) for b in range(a + 1, v)]
    inv = z.new_zeros(())
    for a, b in pairs:
        sq = sum((z[i, a, j] - z[i, b, j]) ** 2 for i in range(n) for j in range(d))
        inv = inv + sq / (n * d)
    var = sum(variance(view) for view in range(v)) * 2 / v
    cov = sum(covariance(view) for view in range(v)) * 2 / v
    return inv / len(pairs), var, cov


def embeddings(v: int, seed: int = 0) -> Tensor:
    """Columns of different spread, so that the variance hinge is active on some dimensions only;
    correlated columns, so that the covariance term is not small."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(N, v, D, generator=gen, dtype=torch.float64)
    base[..., 1] += 0.8 * base[..., 0]
    scale = torch.linspace(0.3, 2.0, D, dtype=torch.float64)
    return (base * scale).requires_grad_()


@pytest.mark.parametrize("v", [2, 3])
@pytest.mark.parametrize("weights", [(25.0, 25.0, 1.0), (1.0, 3.0, 7.0)], ids=["paper", "other"])
def test_loss_terms_and_gradient_equal_the_loop_reference(
    v: int, weights: tuple[float, float, float]
) -> None:
    lam, mu, nu = weights
    z = embeddings(v)
    got = vicreg_loss(z, sim_weight=lam, var_weight=mu, cov_weight=nu)
    inv, var, cov = reference_terms(z)
    want = lam * inv + mu * var + nu * cov
    torch.testing.assert_close(got.loss, want, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(got.invariance, inv.detach())
    torch.testing.assert_close(got.variance, var.detach())
    torch.testing.assert_close(got.covariance, cov.detach())
    (g_got,) = torch.autograd.grad(got.loss, z)
    (g_want,) = torch.autograd.grad(want, z)
    torch.testing.assert_close(g_got, g_want, atol=1e-10, rtol=1e-8)
    # guard: every term is sizeable at these inputs, so a wrong weight or term would show
    assert min(float(inv.detach()), float(var.detach()), float(cov.detach())) > 0.01


def test_collapsed_embeddings_pay_the_full_variance_hinge() -> None:
    """Identical constant embeddings: no invariance or covariance cost, variance 2·(1 − √ε)."""
    z = torch.ones(N, 2, D, dtype=torch.float64)
    parts = vicreg_loss(z)
    assert float(parts.invariance) == pytest.approx(0.0, abs=1e-12)
    assert float(parts.covariance) == pytest.approx(0.0, abs=1e-12)
    assert float(parts.variance) == pytest.approx(2 * (1 - EPS**0.5))


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="N, V"):
        vicreg_loss(torch.randn(N, 1, D))
    with pytest.raises(ValueError, match="at least 2 images"):
        vicreg_loss(torch.randn(1, 2, D))


# --------------------------------------------------------------------------------------------------
# Two gloo ranks = one process on the whole batch
# --------------------------------------------------------------------------------------------------

SPLITS = {"even": (4, 4), "uneven": (5, 3)}


def parity_case(split: tuple[int, int], rank: int, distributed: bool) -> dict[str, Tensor]:
    """Loss and parameter gradients of a Linear expander (DDP on two ranks) on this rank's part of
    the batch, or on the whole batch in a single process."""
    torch.manual_seed(0)
    model = nn.Linear(IN_DIM, D).double()
    inputs = torch.randn(N, 2, IN_DIM, dtype=torch.float64)
    if distributed:
        start = sum(split[:rank])
        inputs = inputs[start : start + split[rank]]
        model = nn.parallel.DistributedDataParallel(model)
    parts = vicreg_loss(model(inputs))
    parts.loss.backward()
    params = model.module if distributed else model
    return {
        "loss": parts.loss.detach(),
        "variance": parts.variance,
        "covariance": parts.covariance,
        **{f"grad.{k}": p.grad.detach().clone() for k, p in params.named_parameters()},
    }


def rank_results_of(rank: int) -> dict[str, Any]:
    """One rank's part of every split (run by :func:`run_on_two_ranks`)."""
    return {name: parity_case(split, rank, True) for name, split in SPLITS.items()}


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return run_on_two_ranks(rank_results_of, tmp_path_factory.mktemp("vicreg_ranks"))


@pytest.mark.parametrize("name", list(SPLITS))
def test_two_ranks_equal_one_process(name: str, rank_results: list[dict[str, Any]]) -> None:
    single = parity_case(SPLITS[name], 0, distributed=False)
    for rank, results in enumerate(rank_results):
        for key, want in single.items():
            torch.testing.assert_close(
                results[name][key], want, atol=1e-5, rtol=1e-6, msg=f"{name}, rank {rank}, {key}"
            )
