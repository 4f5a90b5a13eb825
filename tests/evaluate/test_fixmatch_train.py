"""fit_fixmatch on a tiny cached manifest: restored best-val weights, the unlabelled term, seeds,
weak vs strong views."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from medcl.config import Config, derive, load_config
from medcl.data.dataset import CachedImages, manifest_geometry
from medcl.data.manifest import Manifest, read_manifest
from medcl.evaluate.classifier import Classifier
from medcl.evaluate.finetune import base_description
from medcl.evaluate.fixmatch import (
    FixMatchModule,
    _step_indices,
    fit_fixmatch,
    fixmatch_presets,
)
from medcl.models.encoders import EncoderSpec, build_encoder
from medcl.transforms import make_options
from tests.conftest import TINY_OVERRIDES, make_manifest

STEPS = 20


@dataclass
class Tiny:
    cfg: Config
    lab: CachedImages
    unl: CachedImages
    val: CachedImages
    clf: Classifier  # untrained template; every run trains a deep copy
    manifest: Manifest


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Tiny:
    m = read_manifest(make_manifest(tmp_path_factory.mktemp("fixmatch") / "data"))
    cfg = load_config(None, TINY_OVERRIDES)
    dims, modality = manifest_geometry(m)
    size = cfg.data.image_size
    train, labelled = m.df["split"] == "train", m.df["label"] != ""
    lab = CachedImages(m.subset(train & labelled), size, dims)
    unl = CachedImages(m.subset(train & ~labelled), size, dims)
    val = CachedImages(m.subset(m.df["split"] == "val"), size, dims)
    torch.manual_seed(0)
    spec = EncoderSpec.from_config(cfg, dims)
    enc = build_encoder(spec)
    clf = Classifier(enc, nn.Linear(enc.out_dim, 3), base_description(cfg, m, spec, modality))
    return Tiny(cfg, lab, unl, val, clf, m)


def _rows(tiny: Tiny, ds: CachedImages, n: int) -> CachedImages:
    """The first ``n`` rows of ``ds`` as a set of their own (read from the same cache)."""
    rows = tiny.manifest.subset(tiny.manifest.df["image_id"].isin(ds.image_ids[:n]))
    return CachedImages(rows, tiny.cfg.data.image_size, ds.dims)


def _fit(
    tiny: Tiny, seed: int = 0, unl: CachedImages | None = None, steps: int = STEPS, **kw: Any
) -> tuple[float, dict[str, Any], Classifier, list[tuple[float, dict[str, torch.Tensor]]]]:
    """One run from the template's initial weights; also returns every validation's
    ``(score, weights)``."""
    cfg = derive(tiny.cfg, **{"trainer.seed": seed})
    clf = copy.deepcopy(tiny.clf)
    checks: list[tuple[float, dict[str, torch.Tensor]]] = []
    original = FixMatchModule.on_validation_epoch_end

    def spy(self: FixMatchModule) -> None:
        probs = torch.cat(self._probs).argmax(1).numpy()
        score = balanced_accuracy_score(torch.cat(self._labels).numpy(), probs)
        checks.append((float(score), copy.deepcopy(self.clf.state_dict())))
        original(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FixMatchModule, "on_validation_epoch_end", spy)
        score, details = fit_fixmatch(
            clf,
            tiny.lab,
            tiny.unl if unl is None else unl,
            tiny.val,
            cfg,
            3,
            steps,
            pretrained=False,
            **kw,
        )
    return score, details, clf, checks


@pytest.fixture(scope="module")
def run_a(tiny: Tiny):
    """Every unlabelled image pseudo-labelled (τ = 0), λ_u = 1."""
    return _fit(tiny, threshold=0.0, lambda_u=1.0)


def _params(clf: Classifier) -> torch.Tensor:
    return torch.cat(
        [p.detach().flatten() for p in clf.state_dict().values() if p.is_floating_point()]
    )


def test_returns_val_bacc_of_the_restored_best_weights(tiny: Tiny, run_a) -> None:
    score, details, clf, checks = run_a
    assert details["steps"] == STEPS
    assert (details["mu"], details["threshold"], details["lambda_u"]) == (3, 0.0, 1.0)
    assert details["mask_rate"] == pytest.approx(1.0)  # τ = 0 keeps every pseudo-label
    assert len(checks) == 10  # every max(1, 20 // 10) = 2 steps
    # independent recomputation on the weights that were loaded back
    pred = clf.predict_proba(tiny.val.images).argmax(1).numpy()
    assert score == pytest.approx(balanced_accuracy_score(tiny.val.labels.numpy(), pred))
    # they are the weights of the first best validation, not the last step's
    scores = [s for s, _ in checks]
    best = scores.index(max(scores))
    assert score == pytest.approx(max(scores))
    for k, v in checks[best][1].items():
        torch.testing.assert_close(clf.state_dict()[k], v)
    assert not torch.allclose(_params(clf), _params(tiny.clf))  # it trained


def test_unlabelled_images_change_training(tiny: Tiny, run_a) -> None:
    with_u = _params(run_a[2])
    without = _params(_fit(tiny, threshold=0.0, lambda_u=0.0)[2])
    assert not torch.allclose(with_u, without)
    # a threshold that no pseudo-label reaches is the same as λ_u = 0
    none_kept = _fit(tiny, threshold=1.0, lambda_u=1.0)
    assert none_kept[1]["mask_rate"] == 0.0
    torch.testing.assert_close(_params(none_kept[2]), without)


def test_deterministic_for_a_seed(tiny: Tiny, run_a) -> None:
    score, details, clf, _ = _fit(tiny, threshold=0.0, lambda_u=1.0)
    torch.testing.assert_close(_params(clf), _params(run_a[2]))
    assert score == run_a[0] and details == run_a[1]
    # the seed drives batches and augmentations (same initial weights)
    short = [_params(_fit(tiny, seed=s, steps=2, threshold=0.0)[2]) for s in (0, 1)]
    assert not torch.allclose(short[0], short[1])


def test_empty_unlabelled_pool_and_a_final_validation(tiny: Tiny) -> None:
    empty = _rows(tiny, tiny.unl, 0)
    assert len(empty) == 0
    score, details, _, checks = _fit(tiny, unl=empty, steps=21)
    assert 0.0 <= score <= 1.0 and details["steps"] == 21 and details["mask_rate"] == 0.0
    # 21 is not a multiple of max(1, 21 // 10) = 2: steps 2, 4, ..., 20, then after step 21
    assert len(checks) == 11


def test_weak_views_are_milder_than_strong(tiny: Tiny) -> None:
    module = FixMatchModule(copy.deepcopy(tiny.clf), tiny.cfg, None, STEPS, 0.95, 1.0, False)
    x_lab, x_unl = tiny.lab.images, tiny.unl.images
    g = torch.Generator().manual_seed(0)
    lab_w, unl_w, unl_s = module.views(x_lab, x_unl, g)
    assert lab_w.shape == x_lab.shape and unl_w.shape == unl_s.shape == x_unl.shape
    ref = tiny.clf.normalize(x_unl)
    weak_gap = (unl_w - ref).abs().mean()
    strong_gap = (unl_s - ref).abs().mean()
    assert 0 < weak_gap < strong_gap
    assert (lab_w - tiny.clf.normalize(x_lab)).abs().mean() < strong_gap


@pytest.mark.parametrize("preset", ["ct", "mr", "xr"])
def test_weak_view_is_geometry_only(preset: str) -> None:
    """Without the affine the weak view is exactly the evaluation mapping; the strong one is not."""
    weak, strong = fixmatch_presets(preset, {"p_affine": 0.0, "flip_lr": False}, dims=2)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 1, 16, 16, generator=g)
    if preset == "ct":
        x = x * 1000 - 300  # Hounsfield units
    torch.testing.assert_close(weak.batched(x, generator=g), weak.normalize(x))
    assert not torch.allclose(strong.batched(x, generator=g), strong.normalize(x))
    assert weak.options.p_affine == 0.0 and strong.options.p_noise > 0
    weak_default, _ = fixmatch_presets(preset, None, dims=2)
    assert weak_default.options.p_affine == make_options(preset).p_affine  # affine kept


def test_step_indices(tiny: Tiny) -> None:
    lab, unl = _step_indices(
        tiny.lab, 10, steps=5, batch=4, n_unl_batch=12, balance="weights", n_classes=3, seed=0
    )
    assert lab.shape == (5, 4) and unl.shape == (5, 12)
    assert int(lab.max()) < len(tiny.lab)
    flat = unl.flatten()
    for s in range(0, 60, 10):  # successive permutations of the unlabelled pool
        assert sorted(flat[s : s + 10].tolist()) == list(range(10))
    # ``sampler``: labelled images drawn with class-balancing weights
    y = torch.tensor([0] * 10 + [1] * 2)
    skewed = _rows(tiny, tiny.lab, 12)
    skewed.labels = y
    bal, _ = _step_indices(skewed, 0, 500, 8, 0, "sampler", 3, 0)
    share = (y[bal.flatten()] == 1).float().mean()
    assert 0.45 < float(share) < 0.55
