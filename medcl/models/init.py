"""Start an encoder from weights on disk (``model.init``).

A user may hold a ResNet checkpoint from elsewhere; nothing is downloaded, the file is read and
mapped onto medcl's encoder (:func:`medcl.models.encoders.build_encoder`, a MONAI ResNet). Layouts
read:

- **torchvision / timm ResNet** state dicts (``conv1``, ``bn1``, ``layer1`` … ``layer4``, ``fc``);
  ``.pth``/``.pt`` (``torch.load`` with ``weights_only``) or ``.safetensors``;
- **MedicalNet** 3-D ResNets (the same names under ``module.``, often inside ``state_dict``);
- a **MONAI bundle**'s ``models/model.pt`` (a MONAI ResNet, or medcl's own export with the
  encoder under ``encoder.``), the bundle folder itself;
- a **medcl** pretraining run (``encoder.pt``), model folder (``weights.pt``) or run folder
  holding ``model/``.

Mapping. Nested mappings are flattened to dotted names; the backbone is found as the shortest
prefix ``P`` with both ``P + "conv1.weight"`` and ``P + "layer1.0.conv1.weight"`` (so ``module.``,
``state_dict.``, ``encoder.`` … are stripped, and a target network stored beside an online one is
not taken). MONAI's ResNet uses torchvision's module names, so below the prefix names map as they
are; tensors outside the prefix and the head (``fc``, MedicalNet's ``conv_seg``) are ignored and
counted. Two adaptations keep the network's function:

- a first convolution with ``C`` input channels becomes one channel by summing its weights over
  them, ``W'[o, 0] = Σ_c W[o, c]`` (timm's ``adapt_input_conv`` for one channel): a grey image
  ``x`` then gives exactly what the source network gives for ``x`` repeated ``C`` times;
- torchvision's 1×1 shortcut convolutions have no bias and MONAI's have one: the missing bias is
  set to 0, the same function.

Checks. A shape that differs after this is refused with the key's name, both shapes and a hint
(``model.stem``: a 7×7 ``conv1`` needs ``model.stem=standard``, which ``auto`` only picks from
128 px; ``model.encoder`` / ``model.width``; 2-D against 3-D). Encoder tensors the file does not
supply (missing) and backbone tensors the encoder has no place for (unexpected) are reported in
one log line with counts and a few names; missing ones keep their random start. Known limits:
MedicalNet's ``layer3``/``layer4`` are dilated instead of strided, so its weights load (same
shapes) into a network that strides, which fine-tuning then adapts; its shortcut-A networks
(resnet18/34) have no shortcut convolutions (reported missing).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from medcl.errors import ConfigError

if TYPE_CHECKING:
    from medcl.config import Config

log = logging.getLogger(__name__)

FOLDER_FILES = ("encoder.pt", "weights.pt", "model/weights.pt", "models/model.pt")
"""What a ``model.init`` folder is read from, first found: a pretraining run, a model folder, a
run folder with ``model/``, a MONAI bundle."""

HEADS = ("fc.", "conv_seg.")
"""Heads below the backbone prefix that are not part of the encoder (classifier, MedicalNet's
segmentation head)."""

_ANCHOR = "layer1.0.conv1.weight"
_SHOWN = 3


def init_file(path: str | Path) -> Path:
    """The weights file ``model.init`` names: the file itself, or in a folder the first of
    :data:`FOLDER_FILES`.

    Raises:
        ConfigError: Nothing there (one line naming the path).
    """
    p = Path(path).expanduser()
    if p.is_dir():
        for name in FOLDER_FILES:
            if (p / name).is_file():
                return p / name
        raise ConfigError(
            f"model.init: {p} is a folder without weights (looked for {', '.join(FOLDER_FILES)})"
        )
    if not p.is_file():
        raise ConfigError(f"model.init: {p}: no such file or folder")
    return p


def check_init(cfg: Config) -> None:
    """Refuse a ``model.init`` that names no weights, before any work (nothing is loaded).

    Raises:
        ConfigError: See :func:`init_file`.
    """
    if cfg.model.init:
        init_file(cfg.model.init)


def flatten(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of nested mappings, under dotted names (other values dropped)."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix.rstrip(".")] = obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    return out


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, flattened (:func:`flatten`).

    Raises:
        ConfigError: The file is not a tensor file ``torch.load(weights_only=True)`` or
            safetensors reads (a pickled module is refused, not executed).
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a property of the file
        raise ConfigError(
            f"model.init: {path}: not a weights file torch or safetensors can read safely "
            f"({type(exc).__name__}; a pickled whole model is not read: save its state_dict)"
        ) from None
    return flatten(blob)


def backbone_prefix(names: Mapping[str, Any] | list[str], path: Path) -> str:
    """The shortest prefix ``P`` under which ``P + "conv1.weight"`` and
    ``P + "layer1.0.conv1.weight"`` both exist.

    Raises:
        ConfigError: No ResNet backbone in the file.
    """
    keys = set(names)
    found = [
        k[: -len(_ANCHOR)]
        for k in keys
        if k.endswith(_ANCHOR) and k[: -len(_ANCHOR)] + "conv1.weight" in keys
    ]
    if not found:
        raise ConfigError(
            f"model.init: {path}: no ResNet backbone found (no conv1.weight beside "
            "layer1.0.conv1.weight under any prefix)"
        )
    return min(found, key=lambda p: (len(p), p))


@dataclass
class InitReport:
    """What :func:`load_init` did.

    Attributes:
        file: The weights file read.
        prefix: The backbone's prefix in the file (``""``, ``"module."`` …).
        loaded: Encoder tensors taken from the file (the zero shortcut biases included).
        total: Tensors of the encoder.
        missing: Encoder tensors the file does not supply (they keep their random start).
        unexpected: Backbone tensors of the file the encoder has no place for.
        ignored: Tensors outside the backbone prefix or in a head.
        notes: Adaptations made (channels summed, biases set to 0).
    """

    file: Path
    prefix: str
    loaded: int
    total: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The one-line summary that goes to the log."""
        where = f"under {self.prefix!r}" if self.prefix else "at the top level"
        notes = "".join(f"; {n}" for n in self.notes)
        text = (
            f"model.init {self.file}: {self.loaded} of {self.total} encoder tensors loaded "
            f"(backbone {where}{notes}); missing {_few(self.missing)}; unexpected "
            f"{_few(self.unexpected)}; ignored {_few(self.ignored)}"
        )
        if self.missing and all(".downsample." in k for k in self.missing):
            text += (
                " (the file has no shortcut convolutions, as a shortcut-A network: they keep "
                "their random start)"
            )
        return text


def _few(names: list[str]) -> str:
    """``"0"``, or the count and the first few names."""
    if not names:
        return "0"
    shown = ", ".join(names[:_SHOWN])
    more = f", +{len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return f"{len(names)} ({shown}{more})"


def _hint(key: str, have: torch.Size, want: torch.Size) -> str:
    """Which setting a shape mismatch of ``key`` most likely comes from."""
    if len(have) != len(want):
        return (
            f"the file's network is {len(have) - 2}-D, this encoder {len(want) - 2}-D "
            "(from the manifest's images)"
        )
    if key == "conv1.weight" and have[2:] != want[2:]:
        k = have[-1]
        stem = {7: "standard", 3: "small"}.get(int(k))
        if stem is not None:
            return (
                f"the file's first convolution is {k}×{k}: set model.stem={stem} "
                "(model.stem=auto picks the 3×3 small stem below 128 px)"
            )
        return f"the file's first convolution is {k}×{k}; medcl's stems are 7×7 and 3×3"
    return (
        "check model.encoder (resnet10/18/34 use basic blocks, resnet50 bottlenecks) and "
        "model.width (1 for a standard ResNet)"
    )


def load_init(encoder: nn.Module, path: str | Path) -> InitReport:
    """Load the weights of ``path`` into ``encoder`` (rules: module docstring); log one line.

    Args:
        encoder: An encoder of :func:`medcl.models.encoders.build_encoder`.
        path: ``model.init``: a weights file or a folder (:func:`init_file`).

    Returns:
        The report (also logged: a warning when tensors are missing or unexpected, else info).

    Raises:
        ConfigError: No such file, unreadable, no ResNet backbone, or a shape mismatch (naming the
            key, both shapes and the setting to change).
    """
    file = init_file(path)
    tensors = read_tensors(file)
    prefix = backbone_prefix(tensors, file)
    source = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    ignored = sorted(k for k in tensors if not k.startswith(prefix))
    ignored += sorted(prefix + k for k in source if k.startswith(HEADS))
    source = {k: v for k, v in source.items() if not k.startswith(HEADS)}
    target = encoder.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    notes: list[str] = []
    unexpected = sorted(k for k in source if k not in target)
    for key, want in target.items():  # the encoder's order: a stem mismatch is named first
        if key not in source:
            continue
        value = have = source[key]
        if key == "conv1.weight" and value.ndim == want.ndim and value.shape[1] != want.shape[1]:
            if want.shape[1] == 1:
                notes.append(f"conv1 summed over its {value.shape[1]} input channels")
                value = value.sum(dim=1, keepdim=True)
        if value.shape != want.shape:
            raise ConfigError(
                f"model.init {file}: {prefix}{key} has shape {tuple(have.shape)} in the file, "
                f"{tuple(want.shape)} in model.encoder; {_hint(key, have.shape, want.shape)}"
            )
        mapped[key] = value.to(want.dtype)
    biases = [
        k
        for k in target
        if k not in mapped and k.endswith("downsample.0.bias") and k[:-4] + "weight" in mapped
    ]
    for k in biases:
        mapped[k] = torch.zeros_like(target[k])
    if biases:
        notes.append(f"{len(biases)} shortcut convolution biases set to 0 (none in the file)")
    missing = [k for k in target if k not in mapped]
    encoder.load_state_dict({**target, **mapped})
    report = InitReport(file, prefix, len(mapped), len(target), missing, unexpected, ignored, notes)
    (log.warning if missing or unexpected else log.info)(report.line())
    return report
