"""NegativeCosineLoss: BYOL's 2 - 2cos (summed directions), SimSiam's -cos (averaged)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medcl.losses import NegativeCosineLoss


def test_values_on_known_vectors() -> None:
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z = torch.tensor([[3.0, 0.0], [1.0, 0.0]])  # cos = 1 and 0
    assert float(NegativeCosineLoss("byol")(p, z)) == pytest.approx(2 - 2 * 0.5)
    assert float(NegativeCosineLoss("simsiam")(p, z)) == pytest.approx(-0.5)


def test_byol_is_squared_distance_of_normalised_vectors() -> None:
    gen = torch.Generator().manual_seed(0)
    p, z = torch.randn(2, 7, 5, generator=gen).unbind(0)
    expected = (F.normalize(p, dim=1) - F.normalize(z, dim=1)).pow(2).sum(1).mean()
    torch.testing.assert_close(NegativeCosineLoss("byol")(p, z), expected)


def test_symmetrised() -> None:
    gen = torch.Generator().manual_seed(1)
    p1, z2, p2, z1 = torch.randn(4, 6, 8, generator=gen).unbind(0)

    def cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(a, b, dim=1).mean()

    byol = NegativeCosineLoss("byol")(p1, z2, p2, z1)
    torch.testing.assert_close(byol, (2 - 2 * cos(p1, z2)) + (2 - 2 * cos(p2, z1)))
    simsiam = NegativeCosineLoss("simsiam")(p1, z2, p2, z1)
    torch.testing.assert_close(simsiam, -(cos(p1, z2) + cos(p2, z1)) / 2)


def test_stop_gradient_is_the_callers_detach() -> None:
    p = torch.randn(3, 4, requires_grad=True)
    z = torch.randn(3, 4, requires_grad=True)
    NegativeCosineLoss("simsiam")(p, z.detach()).backward()
    assert p.grad is not None and z.grad is None


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        NegativeCosineLoss("moco")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        NegativeCosineLoss()(torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(ValueError):
        NegativeCosineLoss()(torch.randn(2, 3), torch.randn(2, 4))
