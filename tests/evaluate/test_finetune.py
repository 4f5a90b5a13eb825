"""Fine-tuning modes on a tiny manifest: linear probe folding, kNN, full, from scratch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from medcl.config import load_config
from medcl.data.manifest import read_manifest
from medcl.evaluate.finetune import class_weights, finetune
from medcl.evaluate.model import load_model, save_model
from medcl.train.pretrain import pretrain
from tests.conftest import TINY_OVERRIDES

TINY = [*TINY_OVERRIDES, "optim.epochs=1"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from tests.conftest import make_manifest

    root = tmp_path_factory.mktemp("ft")
    manifest = make_manifest(root / "data")
    pretrain(
        load_config(None, [f"data.manifest={manifest}", f"out={root}/run", *TINY]), progress=False
    )
    return manifest, root / "run"


def test_class_weights():
    w = class_weights(np.array([0, 0, 0, 1]), 3)
    assert torch.allclose(w, torch.tensor([4 / 6, 4 / 2, 0.0]))


@pytest.mark.parametrize("mode", ["linear", "knn", "full"])
def test_modes_fit_and_round_trip(pretrained, tmp_path, mode):
    manifest, run = pretrained
    m = read_manifest(manifest)
    cfg = load_config(None, [*TINY, f"finetune.mode={mode}"])
    res = finetune(cfg, m, pretrained=run)
    assert 0.0 <= res.val_balanced_accuracy <= 1.0
    x = torch.rand(5, 1, 16, 16)
    p = res.model.predict_proba(x)
    assert p.shape == (5, 3) and torch.allclose(p.sum(1), torch.ones(5), atol=1e-5)
    save_model(tmp_path / "model", res.model, card="# card\n")
    again = load_model(tmp_path / "model")
    assert torch.allclose(again.predict_proba(x), p, atol=1e-5)
    assert again.meta["classes"] == ["c0", "c1", "c2"]


def test_linear_probe_matches_sklearn(pretrained):
    """The folded nn.Linear gives the same probabilities as the fitted scikit-learn model."""
    manifest, run = pretrained
    m = read_manifest(manifest)
    res = finetune(load_config(None, [*TINY, "finetune.mode=linear"]), m, pretrained=run)
    from medcl.train.data import CachedImages

    train = CachedImages(m.subset((m.df["split"] == "train") & (m.df["label"] != "")), 16)
    val = CachedImages(m.subset(m.df["split"] == "val"), 16)
    f_tr = res.model.embed(train.images).numpy().astype(np.float64)
    f_va = res.model.embed(val.images).numpy().astype(np.float64)
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
    ref = LogisticRegression(
        C=res.details["C"], max_iter=2000, class_weight="balanced", random_state=0
    ).fit((f_tr - mu) / sd, train.labels.numpy())
    expected = ref.predict_proba((f_va - mu) / sd)
    got = res.model.predict_proba(val.images).numpy()
    present = ref.classes_
    assert np.allclose(got[:, present], expected, atol=1e-4)


def test_from_scratch_full(pretrained):
    manifest, _ = pretrained
    res = finetune(load_config(None, [*TINY, "finetune.mode=full"]), read_manifest(manifest))
    assert res.model.meta["pretraining"] is None
    assert res.details["steps"] > 0
