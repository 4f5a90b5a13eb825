"""Display images, Grad-CAM on a medcl Classifier, augmentation views."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medcl.app import images
from medcl.app.augment import augmentation_views, training_preset
from medcl.app.gradcam import GradCamExplainer
from medcl.evaluate.classifier import Classifier, KNNHead
from medcl.models.description import ModelDescription
from medcl.models.encoders import EncoderSpec, build_encoder, encoder_dim


def _classifier(dims: int = 2, size: int = 32, knn: bool = False) -> Classifier:
    torch.manual_seed(0)
    spec = EncoderSpec("resnet10", dims, size, width=0.125)
    enc = build_encoder(spec)
    f = encoder_dim("resnet10", 0.125)
    head: nn.Module = (
        KNNHead(torch.randn(6, f), torch.tensor([0, 1, 2] * 2), 3, 3) if knn else nn.Linear(f, 3)
    )
    description = ModelDescription(spec, ["a", "b", "c"], "ct", (40.0, 400.0))
    return Classifier(enc, head, description).eval()


def _blob(shape: tuple[int, ...]) -> np.ndarray:
    x = np.full((1, *shape), -500.0, dtype=np.float32)  # CT background (HU)
    sl = tuple(slice(s // 4, s // 2) for s in shape)
    x[(0, *sl)] = 100.0
    return x


def _ct_input(x: np.ndarray, size: int, dims: int) -> torch.Tensor:
    """The model input, written out: resize to ``size`` (antialiased when a 2-D image shrinks),
    then the CT window 40/400 to [0, 1]."""
    t = torch.as_tensor(x)[None]
    if tuple(t.shape[2:]) != (size,) * dims:
        mode = "bilinear" if dims == 2 else "trilinear"
        down = dims == 2 and any(s > size for s in t.shape[2:])
        t = F.interpolate(t, size=(size,) * dims, mode=mode, align_corners=False, antialias=down)
    return ((t - (40.0 - 200.0)) / 400.0).clamp(0, 1)


def _minmax(a: torch.Tensor) -> np.ndarray:
    a = a.double()
    return ((a - a.min()) / (a.max() - a.min())).numpy()


def _reference_gradcam(clf: Classifier, x: np.ndarray, class_idx: int) -> np.ndarray:
    """Grad-CAM by hand (Selvaraju et al. 2017) with hooks on ``encoder.layer4``: weights = spatial
    mean of d logit / d activation, map = ReLU(sum_k w_k A_k), upsampled (bi/trilinear) to the
    model input, then to the image, scaled to [0, 1] with the largest response at 1."""
    dims = clf.description.spatial_dims
    saved: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, out: torch.Tensor) -> None:
        saved["a"] = out
        out.register_hook(lambda g: saved.__setitem__("g", g))

    handle = clf.encoder.layer4.register_forward_hook(keep)
    try:
        inp = _ct_input(x, clf.description.image_size, dims)
        clf.zero_grad()
        clf(inp)[0, class_idx].backward()
    finally:
        handle.remove()
    a, g = saved["a"][0].detach(), saved["g"][0]
    w = g.mean(dim=tuple(range(1, g.ndim)))
    cam = torch.relu((w.reshape(-1, *[1] * dims) * a).sum(0))[None, None]
    mode = "bilinear" if dims == 2 else "trilinear"
    cam = F.interpolate(cam, size=tuple(inp.shape[2:]), mode=mode, align_corners=False)
    cam = F.interpolate(cam, size=x.shape[1:], mode=mode, align_corners=False)[0, 0]
    if float(cam.max() - cam.min()) < 1e-12:  # documented: all zeros when nothing is positive
        return np.zeros(x.shape[1:])
    return _minmax(cam)


@pytest.mark.parametrize(
    ("dims", "size", "shape", "class_idx"),
    [(2, 32, (48, 40), 0), (2, 32, (32, 32), 2), (2, 32, (20, 26), 2), (3, 32, (24, 36, 36), 1)],
)
def test_gradcam_is_the_hand_computed_map_up_to_its_direction(
    dims: int, size: int, shape: tuple[int, ...], class_idx: int
) -> None:
    clf = _classifier(dims=dims, size=size)
    ref = _reference_gradcam(copy.deepcopy(clf), _blob(shape), class_idx)
    assert ref.std() > 0.05, "the reference map must not be flat for this check to mean anything"
    cam = GradCamExplainer(clf)
    assert cam.available
    for _ in range(2):  # repeated calls (one explainer per model in the dashboard) stay the same
        heat = cam(_blob(shape), class_idx=class_idx)
        assert heat.shape == shape and heat.dtype == np.float32
        assert heat.min() == pytest.approx(0.0, abs=1e-6)
        assert heat.max() == pytest.approx(1.0, abs=1e-6)
        # same layer, weights, ReLU and upsampling: an increasing affine image of the reference
        r = np.corrcoef(heat.ravel(), ref.ravel())[0, 1]
        assert r > 0.999, r


def test_gradcam_is_all_zeros_when_no_weighted_activation_is_positive() -> None:
    clf = _classifier()
    ref = _reference_gradcam(copy.deepcopy(clf), _blob((48, 40)), 1)
    assert not ref.any(), "for this seeded model, ReLU removes all of class 1's map"
    heat = GradCamExplainer(clf)(_blob((48, 40)), class_idx=1)
    assert heat.shape == (48, 40) and not heat.any()


def test_gradcam_equals_the_hand_computed_map() -> None:
    clf = _classifier()
    ref = _reference_gradcam(copy.deepcopy(clf), _blob((48, 40)), 0)
    heat = GradCamExplainer(clf)(_blob((48, 40)), class_idx=0)
    np.testing.assert_allclose(heat, ref, atol=1e-3)


class _TwoMaps(nn.Module):
    """``layer4`` makes two maps, the image and its complement; features = their spatial means.

    With an identity head, class 0's evidence is the bright region and class 1's the dark one, so
    Grad-CAM of class 0 is the image itself and that of class 1 its complement.
    """

    def __init__(self) -> None:
        super().__init__()
        self.layer4 = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.layer4.weight.copy_(torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1))
            self.layer4.bias.copy_(torch.tensor([0.0, 1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(x).mean(dim=(2, 3))


def _two_maps_classifier() -> Classifier:
    head = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
    spec = EncoderSpec("resnet10", 2, 16)  # the input convention; the network is _TwoMaps
    description = ModelDescription(spec, ["bright", "dark"], "xr", (40.0, 400.0))
    return Classifier(_TwoMaps(), head, description).eval()


def _square() -> np.ndarray:
    x = np.zeros((1, 16, 16), dtype=np.float32)
    x[0, 2:6, 9:13] = 1.0
    return x


def test_gradcam_of_a_constructed_model_is_one_of_its_two_maps() -> None:
    x = _square()
    heat = GradCamExplainer(_two_maps_classifier())(x, class_idx=0)
    inside = x[0] > 0.5
    # a two-level map, constant inside and outside the square (in one order or the other)
    assert np.ptp(heat[inside]) < 1e-6 and np.ptp(heat[~inside]) < 1e-6
    assert abs(float(heat[inside].mean() - heat[~inside].mean())) == pytest.approx(1.0, abs=1e-6)


def test_gradcam_peaks_where_the_class_evidence_is() -> None:
    x = _square()
    cam = GradCamExplainer(_two_maps_classifier())
    inside = x[0] > 0.5
    bright, dark = cam(x, class_idx=0), cam(x, class_idx=1)
    assert bright[inside].min() > 0.99 and bright[~inside].max() < 0.01
    assert dark[~inside].min() > 0.99 and dark[inside].max() < 0.01


def test_gradcam_unavailable_for_knn_head() -> None:
    cam = GradCamExplainer(_classifier(knn=True))
    assert not cam.available and "kNN" in cam.reason
    with pytest.raises(RuntimeError, match="unavailable"):
        cam(_blob((32, 32)), 0)


def test_display_slices_thumbnails_overlay(tmp_path: Path) -> None:
    p = tmp_path / "x.npy"
    np.save(p, _blob((6, 20, 30)))
    img = images.load_display(str(p), "ct", (40.0, 400.0))
    # window 40/400: -500 HU (below -160) is black, 100 HU is (100 + 160) / 400 = 0.65
    ref = np.where(_blob((6, 20, 30))[0] > 0, 0.65, 0.0)
    assert img.shape == (6, 20, 30)
    np.testing.assert_allclose(img, ref, atol=1e-6)
    assert images.n_slices(img) == 6 and images.n_slices(img[0]) == 1
    np.testing.assert_array_equal(images.take_slice(img), img[3])  # the middle slice
    assert np.array_equal(images.take_slice(img, 99), img[5])
    assert np.array_equal(images.take_slice(img, -4), img[0])
    ramp = np.broadcast_to(np.linspace(0, 1, 6)[:, None, None], (6, 20, 30))
    assert (images.thumbnail(ramp, 60) == 153).all()  # the middle slice (0.6), not another
    th = images.thumbnail(img[2], 60)  # a slice through the bright block
    assert th.shape == (40, 60) and th.dtype == np.uint8
    grey = (img[2] * 255 + 0.5).astype(np.uint8)
    assert 0 < grey.mean() < 255
    np.testing.assert_array_equal(th, grey.repeat(2, axis=0).repeat(2, axis=1))  # nearest, x2
    heat = np.linspace(0, 1, 600).reshape(20, 30)
    rgb = images.overlay(img[2], heat, 0.5)
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8
    # documented blend: (1 - alpha * heat) * grey + alpha * heat * jet(heat)
    import matplotlib

    w = 0.5 * heat[..., None]
    blend = (1 - w) * img[2][..., None] + w * matplotlib.colormaps["jet"](heat)[..., :3]
    assert np.abs(rgb.astype(float) - blend * 255).max() <= 1.0
    assert (rgb[0, 0] == grey[0, 0]).all()  # heat 0: the grey image itself
    with pytest.raises(ValueError):
        images.overlay(img[3], np.zeros((3, 3)))


def test_augmentation_views_follow_the_training_preset() -> None:
    description = ModelDescription(EncoderSpec("resnet10", 2, 32), ["a"], "mr", (40.0, 400.0))
    preset = training_preset(description, {"preset": "auto", "options": {}})
    assert preset.name == "mr"
    assert training_preset(description, {"preset": "xr"}).name == "xr"
    imgs = [np.random.default_rng(i).random((1, 40, 40), dtype=np.float32) for i in range(2)]
    views = augmentation_views(imgs, description, {"preset": "auto", "options": {}}, 3, seed=1)
    assert views.shape == (2, 4, 32, 32)
    assert views.min() >= 0 and views.max() <= 1
    for img, row in zip(imgs, views, strict=True):  # index 0: resized as in training, clamped
        small = F.interpolate(
            torch.from_numpy(img)[None], size=(32, 32), mode="bilinear", antialias=True
        )
        np.testing.assert_allclose(row[0], small[0, 0].clamp(0, 1).numpy(), atol=1e-6)
    np.testing.assert_array_equal(views, augmentation_views(imgs, description, None, 3, seed=1))
    assert not np.allclose(views[:, 1], views[:, 0]), "views differ from the original"


def test_scale_for_display_blocks_when_enlarging_and_smooths_when_shrinking() -> None:
    checker = ((np.indices((40, 60)).sum(0) % 2) * 255).astype(np.uint8)
    big = images.scale_for_display(checker[:4, :6], 12)
    np.testing.assert_array_equal(big, checker[:4, :6].repeat(2, axis=0).repeat(2, axis=1))
    small = images.scale_for_display(checker, 15)  # a 4x reduction: averaged, not sampled
    assert small.shape == (10, 15)
    assert np.abs(small.astype(float) - 127.5).max() < 20
    rgb = images.scale_for_display(np.stack([checker] * 3, axis=-1), 30)
    assert rgb.shape == (20, 30, 3)
