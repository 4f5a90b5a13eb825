"""MoCo: InfoNCE against a momentum key encoder and a FIFO queue of past keys (He et al. 2020,
"Momentum Contrast for Unsupervised Visual Representation Learning", CVPR; MoCo v2, Chen et al.
2020, "Improved Baselines with Momentum Contrastive Learning"), symmetrised over two views.

Queries ``q = g(f(x))`` come from the online networks, keys ``k = g_ξ(f_ξ(x))`` from their EMA
copies (no gradient). For query ``q_i`` with its key ``k_i`` of the other view and the queue
``{k_j}`` (L2-normalised, temperature ``τ``), Eq. 1::

    l(q_i, k_i) = −log( exp(q_i·k_i/τ) / (exp(q_i·k_i/τ) + Σ_j exp(q_i·k_j/τ)) )

    L_ssl = ½ · ( mean_i l(q_i^1, k_i^2) + mean_i l(q_i^2, k_i^1) )

Queue entries of the query's patient are left out of the denominator
(:class:`~medcl.losses.MoCoLoss`). After the loss, the keys of the second view enter the queue
(with their labels and patient ids; multi-label findings are not stored, their slots read −1:
the queue's labels serve only the loss's label positives, which the objective does not use); after
each optimiser step the key networks take one EMA step
(:class:`~medcl.train.objectives.base.MomentumObjective`).

Options (``method.options.moco``, :class:`MoCoOptions`): ``queue_size``, ``ema_base``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from medcl.config import Config
from medcl.config.checks import positive
from medcl.losses import MoCoLoss
from medcl.train.objectives.base import (
    MomentumObjective,
    MomentumOptions,
    ObjectiveOptions,
    ViewBatch,
)


@dataclass
class MoCoOptions(MomentumOptions):
    """MoCo's options.

    Attributes:
        queue_size: Keys ``K`` in the queue (a persistent buffer: a resumed run keeps it).
        ema_base: Starting EMA momentum of the key encoder, scheduled to 1.
    """

    queue_size: int = 4096

    def check(self, where: str) -> None:
        positive(self.queue_size, f"{where}.queue_size")
        super().check(where)


class MoCo(MomentumObjective):
    """Symmetrised InfoNCE of the queries against the EMA keys and a persistent queue.

    Args:
        cfg: The run config (``method.temperature``, ``method.options.moco``).
        encoder: The online encoder, copied as the key encoder.

    Attributes:
        moco_loss: The InfoNCE loss; it holds the queue (checkpointed with the model).
    """

    Options: ClassVar[type[ObjectiveOptions]] = MoCoOptions
    options: MoCoOptions

    def __init__(self, cfg: Config, encoder: nn.Module) -> None:
        super().__init__(cfg, encoder)
        mc = cfg.method
        self.moco_loss = MoCoLoss(
            cfg.model.proj_dim,
            self.options.queue_size,
            mc.temperature,
            group_positives=mc.group_positives,
        )

    def ssl_loss(self, batch: ViewBatch, z: Tensor) -> Tensor:
        """Symmetrised InfoNCE; then enqueues the second view's keys."""
        groups = batch.groups
        labels = batch.labels if batch.labels.ndim == 1 else None  # the queue holds class labels
        k = self.target_projections(batch)
        ssl = 0.5 * (
            self.moco_loss(z[:, 0], k[:, 1], labels, groups)
            + self.moco_loss(z[:, 1], k[:, 0], labels, groups)
        )
        self.moco_loss.enqueue(k[:, 1], labels, groups)
        return ssl
