"""VICReg: variance-invariance-covariance regularisation of the embeddings of two views (Bardes,
Ponce & LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR).

The expander is the projection head ``g`` (``model.proj_hidden`` → ``model.proj_dim``; the paper
uses a wider 3-layer expander, 8192-8192-8192, a config choice here), its outputs ``z = g(f(x))``
the embeddings ``Z, Z'`` of Eq. 6::

    L_ssl = λ·s(Z, Z') + μ·[v(Z) + v(Z')] + ν·[c(Z) + c(Z')]

with the invariance MSE ``s``, the variance hinge ``v`` (γ = 1, ε = 1e-4) and the covariance
penalty ``c`` (:func:`~medcl.losses.vicreg_loss`); ``λ, μ, ν`` are ``method.vicreg_sim_weight``,
``vicreg_var_weight``, ``vicreg_cov_weight`` (25, 25, 1). Under DDP the variance and covariance are
those of the global batch (the embeddings are gathered with gradient). No target network, no
negatives; the SupCon term (λ1) reads the same ``z``.
"""

from __future__ import annotations

from torch import Tensor, nn

from medcl.config import Config
from medcl.losses import vicreg_loss
from medcl.train.objectives.base import Objective, ViewBatch


class VICReg(Objective):
    """Invariance + variance + covariance terms of the expander outputs.

    Args:
        cfg: The run config (``method.vicreg_*``).
        encoder: The online encoder.
    """

    def __init__(self, cfg: Config, encoder: nn.Module) -> None:
        super().__init__(cfg, encoder)
        mc = cfg.method
        self.sim_weight = float(mc.vicreg_sim_weight)
        self.var_weight = float(mc.vicreg_var_weight)
        self.cov_weight = float(mc.vicreg_cov_weight)

    def ssl_loss(self, batch: ViewBatch, z: Tensor) -> Tensor:
        """``λ·s + μ·v + ν·c`` of the projections ``z`` (see the module docstring)."""
        return vicreg_loss(
            z, sim_weight=self.sim_weight, var_weight=self.var_weight, cov_weight=self.cov_weight
        ).loss
