"""A deployable classifier: encoder + head + the input convention, saved as a ``model/`` folder.

Folder layout (in the spirit of a MONAI bundle)::

    model/weights.pt     {"encoder": state_dict, "head": {...}}
    model/metadata.json  the encoder's architecture (EncoderSpec.to_meta), classes, input
                         geometry and intensity normalisation, modality, preset, training data
                         summary, metrics with intervals, versions
    model/model_card.md  intended use, data, metrics, limitations

Heads: ``linear`` (logits = W·f + b; a logistic-regression probe is folded into this form, its
feature standardisation included) and ``knn`` (cosine kNN over stored reference embeddings).

Models trained on 3-D patches (``metadata.json`` ``volume.mode == "patches"``) read each volume at
its stored resolution and aggregate over a grid of patches (:mod:`medcl.transforms.patches`,
``volume.patch_size`` and ``volume.overlap``): the embedding is the mean of the patch features,
``f(V) = (1/n) Σ_i g(p_i)``, and the prediction is the head on that mean. For the linear head this
is exactly the mean of the patch logits, ``W·f(V) + b = (1/n) Σ_i (W·g(p_i) + b)``, then a softmax;
we average logits (not probabilities) because the probe and the kNN bank were fit on these mean
embeddings, so prediction applies the head to the same quantity it was trained on, and because a
label belongs to the volume, not to each patch (averaging per-patch probabilities would treat every
patch as an independent, equally confident voter).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medcl.data.volumes import patch_meta
from medcl.errors import MedclError
from medcl.io import atomic_dir, write_json, write_text
from medcl.models.encoders import EncoderSpec, build_encoder
from medcl.models.knn import knn_predict
from medcl.transforms import to_model_intensity
from medcl.transforms.patches import aggregate_patches


class KNNHead(nn.Module):
    """Cosine kNN classifier over a stored bank of embeddings."""

    def __init__(self, bank: torch.Tensor, labels: torch.Tensor, n_classes: int, k: int) -> None:
        super().__init__()
        self.register_buffer("bank", bank.float())
        self.register_buffer("labels", labels.long())
        self.n_classes = n_classes
        self.k = k

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (used as logits) of the kNN vote."""
        p = knn_predict(f, self.bank, self.labels, self.n_classes, self.k)
        return torch.log(p.clamp_min(1e-8))


class Classifier(nn.Module):
    """``encoder`` then ``head``; :meth:`predict_proba` takes images in cache units.

    Args:
        encoder: Feature extractor ``(B, 1, ...) → (B, F)``.
        head: ``nn.Linear(F, C)`` or :class:`KNNHead`.
        meta: The input convention (``preset``, ``window``, ``image_size``, ``spatial_dims``,
            ``classes``, ...).
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, meta: dict[str, Any]) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.meta = meta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of already-normalised images."""
        return self.head(self.encoder(x))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Cache units → [0, 1] with the model's own preset and window."""
        return to_model_intensity(x, self.meta["preset"], tuple(self.meta["window"]))

    @torch.no_grad()
    def predict_proba(
        self, images: torch.Tensor | Sequence[torch.Tensor], batch_size: int = 256
    ) -> torch.Tensor:
        """Class probabilities ``(N, C)`` of images ``(N, 1, ...)`` in cache units (a patch
        model: a sequence of stored volumes ``(1, D, H, W)``; softmax of the head on the mean
        patch feature, see the module docstring)."""
        self.eval()
        if patch_meta(self.meta) is not None:
            feats = self.embed(images, batch_size)
            if not len(feats):
                return torch.zeros(0, len(self.meta["classes"]))
            dev = next(self.parameters()).device
            return F.softmax(self.head(feats.to(dev)).float(), dim=1).cpu()
        dev = next(self.parameters()).device
        out = [
            F.softmax(self(self.normalize(images[s : s + batch_size].to(dev))).float(), dim=1)
            for s in range(0, images.shape[0], batch_size)
        ]
        return torch.cat(out).cpu() if out else torch.zeros(0, len(self.meta["classes"]))

    @torch.no_grad()
    def embed(
        self, images: torch.Tensor | Sequence[torch.Tensor], batch_size: int = 256
    ) -> torch.Tensor:
        """Encoder features ``(N, F)`` of images in cache units (a patch model: the mean feature
        over each volume's grid patches)."""
        self.eval()
        dev = next(self.parameters()).device
        vol = patch_meta(self.meta)
        if vol is not None:
            size, overlap = int(vol["patch_size"]), float(vol["overlap"])
            feats = [
                aggregate_patches(
                    self.encoder, self.normalize(v.to(dev)), size, overlap, min(batch_size, 64)
                )
                for v in images
            ]
            return torch.stack(feats).cpu() if feats else torch.zeros(0, 1)
        out = [
            self.encoder(self.normalize(images[s : s + batch_size].to(dev))).float()
            for s in range(0, images.shape[0], batch_size)
        ]
        return torch.cat(out).cpu() if out else torch.zeros(0, 1)


def versions() -> dict[str, str]:
    """Library versions recorded in model metadata."""
    import monai
    import sklearn

    import medcl

    return {
        "medcl": medcl.__version__,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
    }


def save_model(model_dir: str | Path, clf: Classifier, card: str | None = None) -> Path:
    """Write weights, metadata and the model card as the folder ``model_dir``.

    The folder is written as a temporary sibling that then takes ``model_dir``'s place
    (:func:`medcl.io.atomic_dir`): a failed or killed save leaves the previous model whole.
    """
    head = clf.head
    if isinstance(head, KNNHead):
        head_blob = {
            "type": "knn",
            "bank": head.bank.cpu(),
            "labels": head.labels.cpu(),
            "k": head.k,
        }
    else:
        head_blob = {
            "type": "linear",
            "weight": head.weight.detach().cpu(),
            "bias": head.bias.detach().cpu(),
        }
    enc_state = {k: v.detach().cpu() for k, v in clf.encoder.state_dict().items()}
    meta = dict(clf.meta)
    meta.setdefault("versions", versions())
    with atomic_dir(model_dir) as d:
        torch.save({"encoder": enc_state, "head": head_blob}, d / "weights.pt")
        if getattr(clf, "ood_bank", None) is not None:  # training embeddings (medcl.evaluate.ood)
            from medcl.evaluate.ood import save_bank

            save_bank(d, clf.ood_bank)
        write_json(meta, d / "metadata.json", default=str)
        if card is not None:
            write_text(card, d / "model_card.md")
    return Path(model_dir)


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """Load a ``model/`` folder written by :func:`save_model`, or a MONAI bundle written by
    ``medcl export`` (:func:`medcl.evaluate.bundle.load_bundle`).

    Raises:
        MedclError: If the folder is not a medcl model.
    """
    d = Path(model_dir)
    from medcl.evaluate.bundle import is_bundle, load_bundle  # bundle.py builds on this module

    if is_bundle(d):
        return load_bundle(d, device)
    if (d / "model").is_dir() and not (d / "weights.pt").exists():
        d = d / "model"
    if not (d / "weights.pt").is_file() or not (d / "metadata.json").is_file():
        raise MedclError(f"{d}: not a medcl model folder (needs weights.pt and metadata.json)")
    try:
        meta = json.loads((d / "metadata.json").read_text())
        blob = torch.load(d / "weights.pt", map_location="cpu", weights_only=True)
        spec = EncoderSpec.from_meta(meta)
        meta.update(spec.to_meta())  # a previous-format file is read in today's shape
        enc = build_encoder(spec)
        enc.load_state_dict(blob["encoder"])
        h = blob["head"]
        n_classes = len(meta["classes"])
        if h["type"] == "knn":
            head: nn.Module = KNNHead(h["bank"], h["labels"], n_classes, int(h["k"]))
        else:
            head = nn.Linear(h["weight"].shape[1], n_classes)
            head.load_state_dict({"weight": h["weight"], "bias": h["bias"]})
    except (KeyError, RuntimeError, ValueError, json.JSONDecodeError) as exc:
        raise MedclError(f"{d}: damaged or incompatible medcl model ({exc})") from exc
    from medcl.evaluate.ood import load_bank

    clf = Classifier(enc, head, meta).to(device).eval()
    clf.ood_bank = load_bank(d)  # None for a model folder written before the bank existed
    return clf
