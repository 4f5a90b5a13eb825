"""Saving and loading a pretrained encoder with what is needed to use it again.

``encoder.pt`` holds ``{"state_dict", "meta"}``. ``meta`` records the architecture as an
:class:`~medcl.models.encoders.EncoderSpec` (:meth:`~medcl.models.encoders.EncoderSpec.to_meta`:
``architecture``, ``spatial_dims``, ``image_size``) and the input convention and provenance
(modality, preset, CT window, method, ...), so that fine-tuning and inference rebuild exactly the
same network and intensity mapping. Files written in the previous, flat format still load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medcl.errors import MedclError
from medcl.io import atomic_path
from medcl.models.encoders import EncoderSpec, build_encoder

_FLAT_SPEC_KEYS = ("encoder", "stem", "width", "pool", "in_channels")
"""Keys of the previous format's flat architecture entries (not kept once read)."""


def save_encoder(
    path: str | Path, encoder: nn.Module, spec: EncoderSpec, meta: dict[str, Any]
) -> Path:
    """Write ``encoder``'s weights, its ``spec`` and ``meta`` (e.g. modality, preset, window,
    method), atomically.

    Args:
        path: The ``encoder.pt`` to write.
        encoder: The network (built from ``spec``).
        spec: Its architecture.
        meta: Input convention and provenance; the spec's entries are added to it.

    Returns:
        ``path``.
    """
    p = Path(path)
    state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    with atomic_path(p) as tmp:
        torch.save({"state_dict": state, "meta": {**meta, **spec.to_meta()}}, tmp)
    return p


def load_encoder(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the encoder saved by :func:`save_encoder` (or by the previous format).

    Args:
        path: ``encoder.pt`` or the run folder that holds it.

    Returns:
        ``(encoder, meta)``; ``meta`` in this format whatever the file's
        (``EncoderSpec.from_meta(meta)`` is the encoder's spec, also ``encoder.spec``).

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
        meta = blob["meta"]
        spec = EncoderSpec.from_meta(meta)
        enc = build_encoder(spec)
        enc.load_state_dict(blob["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise MedclError(f"{p}: not a medcl encoder file ({exc})") from exc
    kept = {k: v for k, v in meta.items() if k not in _FLAT_SPEC_KEYS}
    return enc, {**kept, **spec.to_meta()}
