"""Saving and loading a pretrained encoder with what is needed to use it again.

``encoder.pt`` holds ``{"state_dict", "meta"}`` where ``meta`` records the architecture (name,
width,
stem, spatial dims, image size) and the input convention (modality, preset, CT window) so that
fine-tuning and inference rebuild exactly the same network and intensity mapping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medcl.errors import MedclError
from medcl.models.encoders import build_encoder


def save_encoder(path: str | Path, encoder: nn.Module, meta: dict[str, Any]) -> Path:
    """Write ``encoder``'s weights and ``meta`` (keys: encoder, width, stem, spatial_dims,
    image_size, and optionally modality, preset, window, method)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    tmp = p.with_name(p.name + ".tmp")
    torch.save({"state_dict": state, "meta": dict(meta)}, tmp)
    tmp.replace(p)
    return p


def encoder_from_meta(arch: dict[str, Any], spatial_dims: int, image_size: int) -> nn.Module:
    """Rebuild an (untrained) encoder from recorded architecture fields
    (``encoder``, ``stem``, and optionally ``width`` and ``pool``)."""
    return build_encoder(
        arch["encoder"],
        spatial_dims,
        1,
        arch["stem"],
        image_size,
        arch.get("width", 1.0),
        arch.get("pool", "avg"),
    )


def load_encoder(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the encoder saved by :func:`save_encoder`.

    Raises:
        MedclError: If the file is missing or not a medcl encoder.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "encoder.pt"
    if not p.is_file():
        raise MedclError(f"{p}: encoder weights not found (is this a `medcl pretrain` run folder?)")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
        meta = blob["meta"]
        enc = encoder_from_meta(meta, meta["spatial_dims"], meta["image_size"])
        enc.load_state_dict(blob["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise MedclError(f"{p}: not a medcl encoder file ({exc})") from exc
    return enc, meta
