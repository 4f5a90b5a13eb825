"""VICReg: variance-invariance-covariance regularisation of the embeddings of two views (Bardes,
Ponce & LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR).

The expander is the projection head ``g`` (``model.proj_hidden`` → ``model.proj_dim``; the paper
uses a wider 3-layer expander, 8192-8192-8192, a config choice here), its outputs ``z = g(f(x))``
the embeddings ``Z, Z'`` of Eq. 6::

    L_ssl = λ·s(Z, Z') + μ·[v(Z) + v(Z')] + ν·[c(Z) + c(Z')]

with the invariance MSE ``s``, the variance hinge ``v`` (γ = 1, ε = 1e-4) and the covariance
penalty ``c`` (:func:`~medcl.losses.vicreg_loss`); ``λ, μ, ν`` are the options ``sim_weight``,
``var_weight``, ``cov_weight`` of ``method.options.vicreg`` (:class:`VICRegOptions`; 25, 25, 1).
Under DDP the variance and covariance are those of the global batch (the embeddings are gathered
with gradient). No target network, no negatives; the SupCon term (λ1) reads the same ``z``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from medcl.config.checks import at_least
from medcl.errors import ConfigError
from medcl.losses import vicreg_loss
from medcl.train.objectives.base import Objective, ObjectiveOptions, ViewBatch


@dataclass
class VICRegOptions(ObjectiveOptions):
    """VICReg's loss weights (the paper's 25, 25, 1); at least one must be positive.

    Attributes:
        sim_weight: ``λ``, weight of the invariance (MSE) term.
        var_weight: ``μ``, weight of the variance hinge.
        cov_weight: ``ν``, weight of the covariance penalty.
    """

    sim_weight: float = 25.0
    var_weight: float = 25.0
    cov_weight: float = 1.0

    def check(self, where: str) -> None:
        names = ("sim_weight", "var_weight", "cov_weight")
        for k in names:
            at_least(getattr(self, k), 0, f"{where}.{k}")
        if not any(getattr(self, k) > 0 for k in names):
            raise ConfigError(f"{where}.sim_weight: the three VICReg weights are all 0")


class VICReg(Objective):
    """Invariance + variance + covariance terms of the expander outputs.

    Args:
        cfg: The run config (``method.options.vicreg``).
        encoder: The online encoder.
    """

    Options: ClassVar[type[ObjectiveOptions]] = VICRegOptions
    options: VICRegOptions

    def ssl_loss(self, batch: ViewBatch, z: Tensor) -> Tensor:
        """``λ·s + μ·v + ν·c`` of the projections ``z`` (see the module docstring)."""
        o = self.options
        return vicreg_loss(
            z, sim_weight=o.sim_weight, var_weight=o.var_weight, cov_weight=o.cov_weight
        ).loss
