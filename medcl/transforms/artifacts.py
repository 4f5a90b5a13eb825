"""Per-sample acquisition artifacts (torchio): k-space motion, ghosting, spikes; anisotropy.

These transforms work in k-space or resample through SimpleITK, one image at a time, so they run in
data-loader workers on one CPU tensor ``(1, H, W)`` or ``(1, D, H, W)`` in the stored units (HU for
CT, [0, 1] for MR). torchio expects 4-D ``(C, X, Y, Z)`` tensors: a 2-D image gets a singleton
*first* spatial axis (ghosting and anisotropy then use the in-plane axes 1 and 2), and loses it
again on return. The singleton goes first, not last, because torchio's motion simulation composes
k-space segments along the last axis: with a singleton there, a 2-D "motion" would be one plain
rigid move with no ghosting or blur.

Randomness comes from torch's global generator, which :class:`torch.utils.data.DataLoader` seeds
per worker; pass ``seed`` to :meth:`PerSampleAugment.__call__` for a reproducible draw that leaves
the global generator untouched.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from medcl.transforms.options import AugmentOptions

_KINDS = ("motion", "ghosting", "spike", "anisotropy")


class PerSampleAugment:
    """torchio artifact pipeline for one image (picklable, for data-loader workers).

    Args:
        options: Modality options; the ``p_motion``, ``p_ghosting``, ``p_spike`` and
            ``p_anisotropy`` fields (those the modality has) select the transforms, and each
            enabled transform fires independently with its probability.
        dims: 2 for ``(1, H, W)`` inputs, 3 for ``(1, D, H, W)``.

    Attributes:
        transforms: Names of the enabled transforms, in application order.
    """

    def __init__(self, options: AugmentOptions, dims: int) -> None:
        self.dims = dims
        self._options: Any = options
        o: Any = options
        self.transforms: tuple[str, ...] = tuple(k for k in _KINDS if getattr(o, f"p_{k}", 0) > 0)
        # each transform is built with p=1 (a p of its own would gate it a second time, firing with
        # p²); whether it fires is drawn in _apply, so that the (costly) torchio subject machinery
        # only runs for the few images that get an artifact
        self._probs = tuple(float(getattr(o, f"p_{name}")) for name in self.transforms)
        # torchio (which imports SimpleITK) is imported, and the transforms built, when the first
        # image gets an artifact: building a preset (e.g. for its intensity window) needs neither
        self._steps: tuple[Any, ...] | None = None

    def _torchio_steps(self) -> tuple[Any, ...]:
        """The torchio transforms of :attr:`transforms`, in order (built once)."""
        if self._steps is not None:
            return self._steps
        import torchio as tio  # heavy import, deferred until an artifact is applied

        o = self._options
        axes = (1, 2) if self.dims == 2 else (0, 1, 2)  # 2-D: after the singleton first axis
        build = {
            "motion": lambda: tio.RandomMotion(
                degrees=o.motion_deg,
                translation=o.motion_translate_px,
                num_transforms=2,
                p=1.0,
            ),
            "ghosting": lambda: tio.RandomGhosting(
                num_ghosts=o.ghost_count_range,
                axes=axes,
                intensity=o.ghost_intensity_range,
                p=1.0,
            ),
            "spike": lambda: tio.RandomSpike(
                num_spikes=(1, 1),  # an int n would draw 0..n spikes
                intensity=o.spike_intensity_range,
                p=1.0,
            ),
            "anisotropy": lambda: tio.RandomAnisotropy(
                axes=axes, downsampling=o.anisotropy_factor_range, p=1.0
            ),
        }
        self._steps = tuple(build[name]() for name in self.transforms)
        return self._steps

    def __bool__(self) -> bool:
        """Whether any transform is enabled."""
        return bool(self.transforms)

    def __call__(self, x: Tensor, seed: int | None = None) -> Tensor:
        """Apply the enabled artifacts to one image.

        Args:
            x: ``(1, H, W)`` (dims=2) or ``(1, D, H, W)`` (dims=3) float tensor on the CPU.
            seed: Optional seed for a reproducible draw; the global generator state is restored.

        Returns:
            A float32 tensor of the same shape.

        Raises:
            ValueError: ``x`` does not have ``dims + 1`` dimensions.
        """
        if x.ndim != self.dims + 1:
            raise ValueError(
                f"per-sample augment expects a {self.dims + 1}-D (1, ...) tensor, "
                f"got {tuple(x.shape)}"
            )
        x = x.detach().to("cpu", torch.float32)
        if not self.transforms:
            return x.clone()
        if seed is None:
            return self._apply(x)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._apply(x)

    def _apply(self, x: Tensor) -> Tensor:
        fire = torch.rand(len(self._probs)).tolist()
        picked = [u < p for p, u in zip(self._probs, fire, strict=True)]
        if not any(picked):
            return x.clone()
        import torchio as tio

        chosen = [t for t, on in zip(self._torchio_steps(), picked, strict=True) if on]
        # torchio resamples with 0 outside the image: shift so that 0 is the image minimum
        # (air in HU, background in MR) instead of, say, water in HU.
        offset = x.min()
        t = (x - offset).unsqueeze(1) if self.dims == 2 else x - offset
        out = tio.Compose(chosen)(t.contiguous())
        out = torch.as_tensor(out, dtype=torch.float32) + offset
        return out.squeeze(1) if self.dims == 2 else out

    def __repr__(self) -> str:
        return f"PerSampleAugment(dims={self.dims}, transforms={list(self.transforms)})"
