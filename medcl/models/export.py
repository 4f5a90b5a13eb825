"""Saving and loading a pretrained encoder with what is needed to use it again.

``encoder.pt`` holds ``{"state_dict", "meta"}``. ``meta`` is the encoder's
:class:`~medcl.models.description.EncoderDescription`: the architecture as an
:class:`~medcl.models.encoders.EncoderSpec` (``architecture``, ``spatial_dims``, ``image_size``)
and the input convention and provenance (modality, preset, CT window, method, ...), so that
fine-tuning and inference rebuild exactly the same network and intensity mapping. Files written in
the previous, flat format still load.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medcl.errors import MedclError
from medcl.io import atomic_path
from medcl.models.description import EncoderDescription
from medcl.models.encoders import build_encoder


def save_encoder(path: str | Path, encoder: nn.Module, description: EncoderDescription) -> Path:
    """Write ``encoder``'s weights and its description, atomically.

    Args:
        path: The ``encoder.pt`` to write.
        encoder: The network (built from ``description.spec``).
        description: Its architecture, input convention and provenance.

    Returns:
        ``path``.
    """
    p = Path(path)
    state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    with atomic_path(p) as tmp:
        torch.save({"state_dict": state, "meta": description.to_meta()}, tmp)
    return p


def load_encoder(path: str | Path) -> tuple[nn.Module, EncoderDescription]:
    """Rebuild the encoder saved by :func:`save_encoder` (or by the previous format).

    Args:
        path: ``encoder.pt`` or the run folder that holds it.

    Returns:
        ``(encoder, description)``; ``description.spec`` is also ``encoder.spec``.

    Raises:
        MedclError: If the file is missing or not a medcl encoder (one line naming the problem).
    """
    p = Path(path)
    if p.is_dir():
        p = p / "encoder.pt"
    if not p.is_file():
        raise MedclError(f"{p}: encoder weights not found (is this a `medcl pretrain` run folder?)")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
        description = EncoderDescription.from_meta(blob["meta"])
        enc = build_encoder(description.spec)
        enc.load_state_dict(blob["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise MedclError(f"{p}: not a medcl encoder file ({exc})") from exc
    return enc, description
