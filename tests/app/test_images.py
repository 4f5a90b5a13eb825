"""Display images, Grad-CAM on a medcl Classifier, augmentation views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medcl.app import images
from medcl.app.augment import augmentation_views, training_preset
from medcl.app.gradcam import GradCamExplainer
from medcl.evaluate.model import Classifier, KNNHead
from medcl.models.encoders import build_encoder, encoder_dim


def _classifier(dims: int = 2, size: int = 32, knn: bool = False) -> Classifier:
    torch.manual_seed(0)
    enc = build_encoder("resnet10", dims, 1, "auto", size, 0.125)
    f = encoder_dim("resnet10", 0.125)
    head: nn.Module = (
        KNNHead(torch.randn(6, f), torch.tensor([0, 1, 2] * 2), 3, 3) if knn else nn.Linear(f, 3)
    )
    meta = {
        "classes": ["a", "b", "c"],
        "preset": "ct",
        "window": [40.0, 400.0],
        "image_size": size,
        "spatial_dims": dims,
    }
    return Classifier(enc, head, meta).eval()


def _blob(shape: tuple[int, ...]) -> np.ndarray:
    x = np.full((1, *shape), -500.0, dtype=np.float32)  # CT background (HU)
    sl = tuple(slice(s // 4, s // 2) for s in shape)
    x[(0, *sl)] = 100.0
    return x


def test_gradcam_on_classifier_2d_at_image_size() -> None:
    cam = GradCamExplainer(_classifier())
    assert cam.available
    heat = cam(_blob((48, 40)), class_idx=1)
    assert heat.shape == (48, 40) and heat.dtype == np.float32
    assert 0.0 <= heat.min() and heat.max() <= 1.0
    # repeated calls do not stack hooks or change the result
    np.testing.assert_allclose(cam(_blob((48, 40)), class_idx=1), heat, atol=1e-6)


def test_gradcam_3d() -> None:
    cam = GradCamExplainer(_classifier(dims=3, size=16))
    heat = cam(_blob((12, 20, 20)), class_idx=0)
    assert heat.shape == (12, 20, 20)


def test_gradcam_unavailable_for_knn_head() -> None:
    cam = GradCamExplainer(_classifier(knn=True))
    assert not cam.available and "kNN" in cam.reason
    with pytest.raises(RuntimeError, match="unavailable"):
        cam(_blob((32, 32)), 0)


def test_display_slices_thumbnails_overlay(tmp_path: Path) -> None:
    p = tmp_path / "x.npy"
    np.save(p, _blob((6, 20, 30)))
    img = images.load_display(str(p), "ct", (40.0, 400.0))
    assert img.shape == (6, 20, 30) and img.min() >= 0 and img.max() <= 1
    assert images.n_slices(img) == 6 and images.n_slices(img[0]) == 1
    assert images.take_slice(img).shape == (20, 30)
    assert np.array_equal(images.take_slice(img, 99), img[5])
    th = images.thumbnail(img, 60)
    assert th.shape == (40, 60) and th.dtype == np.uint8
    rgb = images.overlay(img[3], np.linspace(0, 1, 600).reshape(20, 30), 0.5)
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8
    with pytest.raises(ValueError):
        images.overlay(img[3], np.zeros((3, 3)))


def test_augmentation_views_follow_the_training_preset() -> None:
    meta = {"preset": "mr", "spatial_dims": 2, "image_size": 32}
    preset = training_preset(meta, {"preset": "auto", "options": {}})
    assert preset.name == "mr"
    assert training_preset(meta, {"preset": "xr"}).name == "xr"
    imgs = [np.random.default_rng(i).random((1, 40, 40), dtype=np.float32) for i in range(2)]
    views = augmentation_views(imgs, preset, 3, 32, seed=1)
    assert views.shape == (2, 4, 32, 32)
    assert views.min() >= 0 and views.max() <= 1
    np.testing.assert_array_equal(views, augmentation_views(imgs, preset, 3, 32, seed=1))
    assert not np.allclose(views[:, 1], views[:, 0]), "views differ from the original"
