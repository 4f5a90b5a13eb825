"""The augmented views a model was trained with, for chosen images.

The views go through the training path exactly (see :mod:`medcl.transforms.views`): the image is
resized to the run's ``image_size``, ``preset.sample_views`` applies the per-sample (torchio)
artifacts, then :class:`~medcl.transforms.MultiViewAugment` applies the batched part; all draws are
seeded, so the same request shows the same views.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from medcl.models.description import ModelDescription
from medcl.transforms import AugmentPreset, build_preset, views_of_images


def training_preset(
    description: ModelDescription, augment_cfg: Mapping[str, Any] | None
) -> AugmentPreset:
    """The augmentation preset of a run: ``augment.preset`` of its config (``auto`` → the model's
    modality preset) with the config's ``augment.options``.

    Raises:
        ConfigError: If the config names an unknown preset or invalid options.
    """
    cfg = dict(augment_cfg or {})
    name = str(cfg.get("preset") or "auto")
    if name == "auto":
        name = description.preset
    return build_preset(name, cfg.get("options") or {}, description.spatial_dims)


def augmentation_views(
    images: Sequence[np.ndarray],
    description: ModelDescription,
    augment_cfg: Mapping[str, Any] | None,
    n_views: int,
    seed: int = 0,
) -> np.ndarray:
    """The normalised original and ``n_views`` views of each image, as the run trained on them.

    Args:
        images: Images in cache units, each ``(1, H, W)`` or ``(1, D, H, W)``.
        description: The model's description (``image_size``, and what :func:`training_preset`
            reads).
        augment_cfg: The run config's ``augment`` section (:func:`training_preset`).
        n_views: Views per image (>= 1).
        seed: Seed of every random draw (image ``r`` uses ``seed`` and ``r``).

    Returns:
        ``(N, n_views + 1, *spatial)`` float32 in [0, 1], each image first resized to the run's
        ``image_size`` as in training; index 0 along axis 1 is the original.

    Raises:
        ConfigError: If the config names an unknown preset or invalid options.
    """
    preset = training_preset(description, augment_cfg)
    image_size = int(description.image_size)
    rows = [v[:, 0].numpy() for v in views_of_images(images, preset, n_views, seed, image_size)]
    if not rows:
        return np.zeros((0, n_views + 1) + (image_size,) * preset.dims, dtype=np.float32)
    return np.stack(rows).astype(np.float32)


def augment_pool(df: pd.DataFrame) -> pd.DataFrame:
    """Rows with a cached array to augment: the training split's, else every such row."""
    have = df[df["cache_path"] != ""]
    train = have[have["split"] == "train"]
    return train if len(train) else have


def default_images(pool: pd.DataFrame, n: int = 3) -> list[str]:
    """Up to ``n`` images to show first: labelled ones of distinct classes, else the first ``n``."""
    chosen = list(pool[pool["labelled"]].drop_duplicates("label")["image_id"])[:n]
    return chosen or list(pool["image_id"][:n])
