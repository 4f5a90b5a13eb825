"""Self-supervised and semi-supervised losses, one concept per module.

- :class:`SSCLLoss`: the contrastive parts, SupCon (``L_out``) over the labelled anchors and
  NT-Xent (SimCLR) over all anchors, each computed only when asked, from one similarity matrix,
  returned unweighted as :class:`SSCLParts`: features ``(N, V, D)``, labels ``(N,)`` with ``-1``
  for unlabelled, patient ids ``(N,)``; same-patient images are never negatives, and with
  ``group_positives`` they are positives.
- :class:`MultiLabelSupConLoss`: SupCon for multi-label findings (present / absent / unknown),
  positives weighted by the Jaccard overlap of their findings; one-hot findings give SupCon.
- :class:`MoCoLoss` with a persistent FIFO key queue (its key encoder's EMA is in
  :mod:`medcl.models.ema`).
- :class:`NegativeCosineLoss` for BYOL and SimSiam.
- :func:`dino_loss`, :func:`dino_center_update`, :func:`teacher_temperature` for DINO.
- :func:`vicreg_loss` (:class:`VICRegParts`) for VICReg, over the global batch.
- :func:`gather_with_grad` / :func:`gather_no_grad`: cross-rank gathering (no-ops on one process).
"""

from medcl.losses.byol import NegativeCosineLoss
from medcl.losses.dino import dino_center_update, dino_loss, teacher_temperature
from medcl.losses.distributed import gather_no_grad, gather_with_grad
from medcl.losses.fixmatch import FixMatchLoss
from medcl.losses.moco import MoCoLoss
from medcl.losses.multilabel_supcon import MultiLabelSupConLoss
from medcl.losses.sscl import SSCLLoss, SSCLParts
from medcl.losses.vicreg import VICRegParts, vicreg_loss

__all__ = [
    "FixMatchLoss",
    "MoCoLoss",
    "MultiLabelSupConLoss",
    "NegativeCosineLoss",
    "SSCLLoss",
    "SSCLParts",
    "VICRegParts",
    "dino_center_update",
    "dino_loss",
    "gather_no_grad",
    "gather_with_grad",
    "teacher_temperature",
    "vicreg_loss",
]
