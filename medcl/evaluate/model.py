"""A classifier on disk: save a ``model/`` folder; load a folder or a MONAI bundle.

Folder layout (in the spirit of a MONAI bundle)::

    model/weights.pt              {"encoder": state_dict, "head": {...}}
    model/metadata.json           the model's description (ModelDescription.to_dict): the
                                  encoder's architecture, classes, input geometry and intensity
                                  normalisation, modality, preset, training data summary,
                                  metrics with intervals, versions
    model/model_card.md           intended use, data, metrics, limitations
    model/train_embeddings.npy    the out-of-distribution check's bank (medcl.evaluate.ood)

A bundle (written by :func:`medcl.evaluate.bundle.export_bundle`) holds the same network as one
state dict (``models/model.pt``: ``encoder.*``, ``head.*``) and the description as
``configs/medcl_metadata.json`` with a ``bundle_head`` entry. Both are rebuilt by one builder,
:func:`build_classifier`.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medcl.errors import MedclError
from medcl.evaluate.classifier import Classifier, KNNHead
from medcl.evaluate.ood import load_bank, save_bank
from medcl.io import atomic_dir, write_json, write_text
from medcl.models.description import ModelDescription
from medcl.models.encoders import build_encoder

MEDCL_META = "medcl_metadata.json"
"""medcl's own model metadata inside a bundle's ``configs/`` (what :func:`load_bundle` rebuilds
from)."""

BUNDLE_HEAD = "bundle_head"
"""The entry of a bundle's :data:`MEDCL_META` naming its head: ``{"type": "linear",
"in_features"}`` or ``{"type": "knn", "k", "bank_rows"}``."""


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


def is_bundle(path: str | Path) -> bool:
    """Whether ``path`` is a bundle written by :func:`medcl.evaluate.bundle.export_bundle`."""
    p = Path(path)
    return (p / "configs" / MEDCL_META).is_file() and (p / "models" / "model.pt").is_file()


def build_classifier(
    description: ModelDescription, state: dict[str, torch.Tensor], head_entry: Mapping[str, Any]
) -> Classifier:
    """The classifier of ``description`` with the weights of a state dict.

    Args:
        description: Its description (the encoder's spec, the classes).
        state: :meth:`Classifier.state_dict`: ``encoder.*`` and ``head.weight``/``head.bias``
            (linear) or ``head.bank``/``head.labels`` (kNN).
        head_entry: ``{"type": "linear"}`` or ``{"type": "knn", "k": neighbours}`` (other keys
            ignored).

    Raises:
        KeyError, RuntimeError: The state does not fit the description.
    """
    encoder = build_encoder(description.spec)
    n_classes = len(description.classes)
    if head_entry["type"] == "knn":
        k = int(head_entry["k"])
        head: nn.Module = KNNHead(state["head.bank"], state["head.labels"], n_classes, k)
    else:
        head = nn.Linear(int(state["head.weight"].shape[1]), n_classes)
    clf = Classifier(encoder, head, description)
    clf.load_state_dict(state)
    return clf


def save_model(model_dir: str | Path, clf: Classifier, card: str | None = None) -> Path:
    """Write weights, metadata, the OOD bank and the model card as the folder ``model_dir``.

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
    meta = clf.description.to_dict()
    meta.setdefault("versions", versions())
    with atomic_dir(model_dir) as d:
        torch.save({"encoder": enc_state, "head": head_blob}, d / "weights.pt")
        if clf.ood_bank is not None:
            save_bank(d, clf.ood_bank)
        write_json(meta, d / "metadata.json", default=str)
        if card is not None:
            write_text(card, d / "model_card.md")
    return Path(model_dir)


def model_folder(path: str | Path) -> Path:
    """The ``model/`` folder of ``path``: itself, or the ``model/`` of a run folder."""
    d = Path(path)
    if (d / "model").is_dir() and not (d / "weights.pt").exists():
        return d / "model"
    return d


def read_description(model_dir: str | Path) -> ModelDescription:
    """The description in a model folder's ``metadata.json``.

    Raises:
        MedclError: Missing, unreadable or not a model's metadata (one line naming the file).
    """
    path = Path(model_dir) / "metadata.json"
    try:
        return ModelDescription.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MedclError(f"{path}: not a medcl model's metadata ({exc})") from exc


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """Load a ``model/`` folder written by :func:`save_model` (or the run folder holding it), or
    a MONAI bundle written by ``medcl export`` (:func:`load_bundle`).

    Raises:
        MedclError: If the folder is not a medcl model.
    """
    if is_bundle(model_dir):
        return load_bundle(model_dir, device)
    d = model_folder(model_dir)
    if not (d / "weights.pt").is_file() or not (d / "metadata.json").is_file():
        raise MedclError(f"{d}: not a medcl model folder (needs weights.pt and metadata.json)")
    try:
        description = ModelDescription.from_dict(json.loads((d / "metadata.json").read_text()))
        blob = torch.load(d / "weights.pt", map_location="cpu", weights_only=True)
        h: dict[str, Any] = blob["head"]
        state = {f"encoder.{k}": v for k, v in blob["encoder"].items()}
        names = ("bank", "labels") if h["type"] == "knn" else ("weight", "bias")
        state.update({f"head.{n}": h[n] for n in names})
        clf = build_classifier(description, state, h)
    except (KeyError, RuntimeError, ValueError, json.JSONDecodeError) as exc:
        raise MedclError(f"{d}: damaged or incompatible medcl model ({exc})") from exc
    clf.ood_bank = load_bank(d)  # None for a model folder written before the bank existed
    return clf.to(device).eval()


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """Rebuild the :class:`~medcl.evaluate.classifier.Classifier` of a bundle from
    ``models/model.pt`` and ``configs/medcl_metadata.json``.

    Raises:
        MedclError: The bundle is incomplete or its files do not fit together.
    """
    d = Path(path)
    try:
        meta = json.loads((d / "configs" / MEDCL_META).read_text())
        head = meta.pop(BUNDLE_HEAD)
        description = ModelDescription.from_dict(meta)
        state = torch.load(d / "models" / "model.pt", map_location="cpu", weights_only=True)
        clf = build_classifier(description, state, head)
    except (KeyError, RuntimeError, ValueError, OSError, json.JSONDecodeError) as exc:
        raise MedclError(f"{d}: damaged or incompatible medcl bundle ({exc})") from exc
    clf.ood_bank = load_bank(d / "models")
    return clf.to(device).eval()
