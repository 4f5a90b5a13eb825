"""Transforms stage: augmentation presets for CT, MR and X-ray (why each: docs/augmentation.md).

Inputs are float32 channel-first tensors in stored units: CT in Hounsfield units, MR and X-ray
already scaled to about [0, 1]. Every output is in [0, 1].

Public API:

- :data:`PRESETS` — ``("ct", "mr", "xr")``.
- :func:`build_preset` ``(name, overrides=None, dims=2) -> AugmentPreset`` — a named preset with
  validated option overrides (unknown name or bad value -> :class:`~medcl.errors.ConfigError`).
- :class:`AugmentPreset` — ``.name``, ``.dims``, ``.options``; ``.per_sample`` (torchio artifacts on
  one CPU image, for loader workers, or ``None``); ``.batched`` (``nn.Module`` for ``(B, 1, ...)``
  on the training device, independent random parameters per sample, optional ``generator``);
  ``.sample_views(x, V)`` (loader side: ``per_sample`` V times -> ``(V, 1, ...)``);
  ``.normalize(x)`` (evaluation mapping with the preset's CT window).
- :class:`MultiViewAugment` ``(preset, n_views=2)`` — ``(B, 1, ...)`` or ``(B, V, 1, ...)`` ->
  ``(B, V, 1, ...)``, every view augmented independently.
- :func:`original_and_views` ``(x, preset, multi, seed, index)`` — one image's normalised original
  and seeded views through the training path, ``(V + 1, 1, ...)``; :func:`views_of_images`
  ``(images, preset, n_views, seed=0, image_size=None)`` the same for a list of stored images (for
  previews and the app).
- :func:`to_model_intensity` ``(x, modality, window=(40, 400))`` — deterministic mapping to [0, 1]
  for evaluation and inference (CT window; MR/X-ray clamp).
- :func:`preset_for_modality` ``(modality) -> str`` — the default preset name of a DICOM modality
  code (``CT`` -> ``ct``, ``MR``/``MRI`` -> ``mr``, anything else -> ``xr``).
- :func:`preview_grid` ``(images, preset, n_views, out_png, seed=0, tile=128) -> Path`` — PNG grid,
  one row per image: original then views.
- Options dataclasses :class:`CTOptions`, :class:`MROptions`, :class:`XROptions` (all defaults).

Training data flow::

    dataset:  views = preset.sample_views(image, V)                # (V, 1, H, W), CPU workers
    device:   MultiViewAugment(preset, V)(batch.to(dev), generator) # (B, V, 1, H, W) in [0, 1]
    eval:     preset.normalize(image)  or  to_model_intensity(image, modality, window)

Modules: :mod:`.options` (option dataclasses, validation), :mod:`.intensity` (window, gamma,
contrast, bias field), :mod:`.noise`, :mod:`.blur`, :mod:`.spatial` (fused affine/crop/flip),
:mod:`.artifacts` (torchio per-sample path), :mod:`.batched` (device path), :mod:`.presets`,
:mod:`.views`, :mod:`.preview`.
"""

from medcl.transforms.artifacts import PerSampleAugment
from medcl.transforms.batched import BatchAugment
from medcl.transforms.intensity import to_model_intensity
from medcl.transforms.options import CTOptions, MROptions, XROptions, make_options
from medcl.transforms.presets import PRESETS, AugmentPreset, build_preset, preset_for_modality
from medcl.transforms.preview import preview_grid
from medcl.transforms.views import MultiViewAugment, original_and_views, views_of_images

__all__ = [
    "PRESETS",
    "AugmentPreset",
    "BatchAugment",
    "CTOptions",
    "MROptions",
    "MultiViewAugment",
    "PerSampleAugment",
    "XROptions",
    "build_preset",
    "make_options",
    "to_model_intensity",
    "original_and_views",
    "preset_for_modality",
    "preview_grid",
    "views_of_images",
]
