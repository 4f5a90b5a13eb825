"""A deployable classifier: encoder, head, its description and its training-embedding bank.

Heads: ``linear`` (logits = W·f + b; a logistic-regression probe is folded into this form, its
feature standardisation included) and ``knn`` (cosine kNN over stored reference embeddings,
:class:`KNNHead`).

A single-label model's probabilities are the softmax of its ``C`` logits; a multi-label model's
(``description.task == "multilabel"``) are one sigmoid per finding, ``p_k = σ(z_k)``, an ``(N, K)``
array whose rows need not sum to one (:meth:`Classifier.probabilities`).

Models trained on 3-D patches (``description.volume`` set) read each volume at its stored
resolution and aggregate over a grid of patches (:mod:`medcl.transforms.patches`,
``volume.patch_size`` and ``volume.overlap``): the embedding is the mean of the patch features,
``f(V) = (1/n) Σ_i g(p_i)``, and the prediction is the head on that mean. For the linear head this
is exactly the mean of the patch logits, ``W·f(V) + b = (1/n) Σ_i (W·g(p_i) + b)``, then a softmax;
we average logits (not probabilities) because the probe and the kNN bank were fit on these mean
embeddings, so prediction applies the head to the same quantity it was trained on, and because a
label belongs to the volume, not to each patch (averaging per-patch probabilities would treat every
patch as an independent, equally confident voter).

Saving and loading (a ``model/`` folder or a bundle) is :mod:`medcl.evaluate.model`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medcl.data.dataset import CachedImages
from medcl.data.manifest import Manifest
from medcl.data.volumes import StoredVolumes, model_images
from medcl.models.description import ModelDescription
from medcl.models.knn import knn_findings, knn_predict
from medcl.transforms import to_model_intensity
from medcl.transforms.patches import aggregate_patches


def decision_thresholds(description: ModelDescription) -> np.ndarray:
    """The thresholds of a multi-label model's calls, ``(K,)``: each finding's own, chosen on
    validation when it was fitted (``description.finding_thresholds``), 0.5 where it has none.
    A finding is called present when ``p_k ≥ t_k``."""
    own = (description.finding_thresholds or {}).get("findings", {})
    return np.array(
        [float(own.get(c, {}).get("threshold", 0.5)) for c in description.classes],
        dtype=np.float64,
    )


class KNNHead(nn.Module):
    """Cosine kNN classifier over a stored bank of embeddings.

    ``labels`` of shape ``(M,)`` are class indices (the vote of :func:`knn_predict`); of shape
    ``(M, K)``, finding states (the per-finding vote of :func:`knn_findings`).
    """

    def __init__(self, bank: torch.Tensor, labels: torch.Tensor, n_classes: int, k: int) -> None:
        super().__init__()
        self.register_buffer("bank", bank.float())
        self.register_buffer("labels", labels.long())
        self.n_classes = n_classes
        self.k = k

    @property
    def multilabel(self) -> bool:
        """Whether the bank holds finding states (a per-finding vote)."""
        return self.labels.ndim == 2

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """Logits of the kNN vote: log-probabilities (softmax gives the vote back) or, for
        findings, the log-odds ``log(p / (1 − p))`` (a sigmoid gives the vote back)."""
        if self.multilabel:
            p = knn_findings(f, self.bank, self.labels, self.k)
            return torch.logit(p.clamp(1e-6, 1 - 1e-6))
        p = knn_predict(f, self.bank, self.labels, self.n_classes, self.k)
        return torch.log(p.clamp_min(1e-8))


class Classifier(nn.Module):
    """``encoder`` then ``head``; :meth:`predict_proba` takes images in cache units.

    Args:
        encoder: Feature extractor ``(B, 1, ...) → (B, F)``.
        head: ``nn.Linear(F, C)`` or :class:`KNNHead`.
        description: What the model is: the input convention (preset, window, image size,
            dimensions, patch geometry), classes, head, provenance.
        ood_bank: L2-normalised training embeddings ``(n, F)`` of the out-of-distribution check
            (:mod:`medcl.evaluate.ood`), or ``None`` (a model saved before it existed). Not a
            weight: saved beside them as ``train_embeddings.npy``.
    """

    encoder: nn.Module
    head: nn.Module
    description: ModelDescription
    ood_bank: np.ndarray | None

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Module,
        description: ModelDescription,
        ood_bank: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head
        self.description = description
        self.ood_bank = ood_bank

    @property
    def multilabel(self) -> bool:
        """Whether the model predicts findings (one sigmoid each) rather than one class."""
        return self.description.multilabel

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` probabilities of logits: the softmax over classes, or for a multi-label
        model one sigmoid per finding."""
        return torch.sigmoid(logits) if self.multilabel else F.softmax(logits, dim=1)

    @property
    def patches(self) -> bool:
        """Whether the model reads stored volumes through a grid of 3-D patches."""
        return self.description.volume is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of already-normalised images."""
        return self.head(self.encoder(x))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Cache units → [0, 1] with the model's own preset and window."""
        return to_model_intensity(x, self.description.preset, self.description.window)

    def images(self, manifest: Manifest) -> CachedImages | StoredVolumes:
        """The rows of ``manifest`` as this model reads them (a patch model: stored volumes)."""
        d = self.description
        return model_images(manifest, d.image_size, d.spatial_dims, self.patches)

    @torch.no_grad()
    def predict_proba(
        self, images: torch.Tensor | Sequence[torch.Tensor], batch_size: int = 256
    ) -> torch.Tensor:
        """Class probabilities ``(N, C)`` of images ``(N, 1, ...)`` in cache units (a patch
        model: a sequence of stored volumes ``(1, D, H, W)``; softmax of the head on the mean
        patch feature, see the module docstring); a multi-label model's ``(N, K)`` per-finding
        sigmoids (:meth:`probabilities`)."""
        self.eval()
        n_classes = len(self.description.classes)
        if self.patches:
            feats = self.embed(images, batch_size)
            if not len(feats):
                return torch.zeros(0, n_classes)
            dev = next(self.parameters()).device
            return self.probabilities(self.head(feats.to(dev)).float()).cpu()
        dev = next(self.parameters()).device
        out = [
            self.probabilities(self(self.normalize(images[s : s + batch_size].to(dev))).float())
            for s in range(0, images.shape[0], batch_size)
        ]
        return torch.cat(out).cpu() if out else torch.zeros(0, n_classes)

    @torch.no_grad()
    def embed(
        self, images: torch.Tensor | Sequence[torch.Tensor], batch_size: int = 256
    ) -> torch.Tensor:
        """Encoder features ``(N, F)`` of images in cache units (a patch model: the mean feature
        over each volume's grid patches)."""
        self.eval()
        dev = next(self.parameters()).device
        vol = self.description.volume
        if vol is not None:
            feats = [
                aggregate_patches(
                    self.encoder,
                    self.normalize(v.to(dev)),
                    vol.patch_size,
                    vol.overlap,
                    min(batch_size, 64),
                )
                for v in images
            ]
            return torch.stack(feats).cpu() if feats else torch.zeros(0, 1)
        out = [
            self.encoder(self.normalize(images[s : s + batch_size].to(dev))).float()
            for s in range(0, images.shape[0], batch_size)
        ]
        return torch.cat(out).cpu() if out else torch.zeros(0, 1)
