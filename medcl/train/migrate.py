"""Checkpoints written before the objective classes: their state-dict keys renamed on load.

Until the objectives became classes (:mod:`medcl.train.objectives`), the pretraining module held
the heads, target networks and queue itself, so a checkpoint's ``state_dict`` had keys such as
``projector.net.0.weight``, ``target_encoder.conv1.weight`` or ``moco.queue``. Today they sit
under the objective (``method.``), and MoCo's queue module is ``moco_loss``. The encoder's keys
(``encoder.``) did not change, and neither did the order of the trainable parameters (encoder,
projector, predictor), so the optimiser state of such a checkpoint applies as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LEGACY_PREFIXES: dict[str, str] = {
    "projector.": "method.projector.",
    "predictor.": "method.predictor.",
    "target_encoder.": "method.target_encoder.",
    "target_projector.": "method.target_projector.",
    "moco.": "method.moco_loss.",
}
"""The old module's key prefixes → where the same tensors live now."""


def is_legacy(state_dict: Mapping[str, Any]) -> bool:
    """Whether ``state_dict`` has the layout of before the objective classes: a key with one of
    :data:`LEGACY_PREFIXES` and none under ``method.``."""
    keys = list(state_dict)
    return not any(k.startswith("method.") for k in keys) and any(
        k.startswith(tuple(LEGACY_PREFIXES)) for k in keys
    )


def migrate_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``state_dict`` with its old keys renamed (:data:`LEGACY_PREFIXES`); a state dict in the
    current layout is returned unchanged (as a new dict, same order)."""
    if not is_legacy(state_dict):
        return dict(state_dict)
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        for old, new in LEGACY_PREFIXES.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out
