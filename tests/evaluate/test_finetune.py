"""Fine-tuning modes on a tiny manifest: linear probe folding, kNN, full, from scratch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from medcl.config import load_config
from medcl.data.dataset import CachedImages
from medcl.data.manifest import Manifest, read_manifest
from medcl.evaluate.finetune import finetune
from medcl.evaluate.fitting import class_weights
from medcl.evaluate.model import load_model, save_model
from medcl.train.pretrain import pretrain
from tests.conftest import TINY_OVERRIDES, make_manifest

TINY = [*TINY_OVERRIDES, "optim.epochs=1"]


def val_rows(m: Manifest) -> CachedImages:
    """The labelled validation rows, as fine-tuning selects on them."""
    return CachedImages(m.subset((m.df["split"] == "val") & (m.df["label"] != "")), 16)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    manifest = make_manifest(root / "data")
    pretrain(
        load_config(None, [f"data.manifest={manifest}", f"out={root}/run", *TINY]), progress=False
    )
    return manifest, root / "run"


def test_class_weights():
    w = class_weights(np.array([0, 0, 0, 1]), 3)
    assert torch.allclose(w, torch.tensor([4 / 6, 4 / 2, 0.0]))
    # N = 10 images, 3 classes present with 5, 2, 3 images; classes 2 and 4 absent -> 0
    w = class_weights(np.array([0, 0, 0, 0, 0, 1, 1, 3, 3, 3]), 5)
    torch.testing.assert_close(w, torch.tensor([10 / 15, 10 / 6, 0.0, 10 / 9, 0.0]))
    assert w.dtype == torch.float32
    # every present class carries the same total weight N / C_present
    counts = torch.tensor([5.0, 2, 0, 3, 0])
    torch.testing.assert_close(w * counts, torch.tensor([10 / 3, 10 / 3, 0, 10 / 3, 0]))


@pytest.mark.parametrize("mode", ["linear", "knn", "full"])
def test_modes_fit_and_round_trip(pretrained, tmp_path, monkeypatch, mode):
    manifest, run = pretrained
    m = read_manifest(manifest)
    # CPU in float32: on a CUDA machine full fine-tuning would validate under bf16 autocast
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = load_config(None, [*TINY, f"finetune.mode={mode}", "trainer.accelerator=cpu"])
    res = finetune(cfg, m, pretrained=run)
    # the reported validation score is that of the returned model, recomputed independently
    val = val_rows(m)
    pred = res.model.predict_proba(val.images).argmax(1).numpy()
    recomputed = balanced_accuracy_score(val.labels.numpy(), pred)
    assert res.val_balanced_accuracy == pytest.approx(recomputed, abs=1e-9)
    x = torch.rand(5, 1, 16, 16)
    p = res.model.predict_proba(x)
    assert p.shape == (5, 3) and torch.allclose(p.sum(1), torch.ones(5), atol=1e-5)
    save_model(tmp_path / "model", res.model, card="# card\n")
    again = load_model(tmp_path / "model")
    assert torch.allclose(again.predict_proba(x), p, atol=1e-5)
    assert again.description.classes == ["c0", "c1", "c2"]


def probe_reference(
    res, m: Manifest, balanced: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's probabilities on the standardised val features, its classes, and the
    folded model's probabilities on the same images."""
    train = CachedImages(m.subset((m.df["split"] == "train") & (m.df["label"] != "")), 16)
    val = val_rows(m)
    f_tr = res.model.embed(train.images).numpy().astype(np.float64)
    f_va = res.model.embed(val.images).numpy().astype(np.float64)
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
    ref = LogisticRegression(
        C=res.details["C"],
        max_iter=2000,
        class_weight="balanced" if balanced else None,
        random_state=0,
    ).fit((f_tr - mu) / sd, train.labels.numpy())
    expected = ref.predict_proba((f_va - mu) / sd)
    return expected, ref.classes_, res.model.predict_proba(val.images).numpy()


def test_linear_probe_matches_sklearn(pretrained):
    """The folded nn.Linear gives the same probabilities as the fitted scikit-learn model."""
    manifest, run = pretrained
    m = read_manifest(manifest)
    res = finetune(load_config(None, [*TINY, "finetune.mode=linear"]), m, pretrained=run)
    expected, present, got = probe_reference(res, m)
    assert len(present) == 3
    assert np.allclose(got[:, present], expected, atol=1e-4)


@pytest.fixture(scope="module")
def two_of_three(tmp_path_factory) -> Manifest:
    """Three declared classes; the labelled training rows are 3 patients of c0 (9 images) and 1 of
    c1 (3 images): imbalanced, so that without class weights the probe's intercept matters."""
    root = tmp_path_factory.mktemp("binary")
    m = read_manifest(make_manifest(root / "data", labelled_patients=7))
    df = m.df.copy()
    drop = (df["split"] == "train") & ((df["label"] == "c2") | (df["patient_key"] == "pk04"))
    df.loc[drop, "label"] = ""
    return Manifest(df, list(m.classes), dict(m.extra))


@pytest.mark.parametrize("balance", ["weights", "none"])
def test_binary_probe_in_a_three_class_manifest(two_of_three, balance):
    """Two classes in training: sklearn keeps one coefficient row; the fold must still match."""
    cfg = load_config(None, [*TINY, "finetune.mode=linear", f"finetune.balance={balance}"])
    res = finetune(cfg, two_of_three)
    expected, present, got = probe_reference(res, two_of_three, balance != "none")
    assert list(present) == [0, 1]
    np.testing.assert_allclose(got[:, :2], expected, atol=1e-4)
    assert (got[:, 2] < 1e-6).all()  # the class never seen in training gets ~zero probability
    val = val_rows(two_of_three)
    assert set(val.labels.tolist()) == {0, 1, 2}
    recomputed = balanced_accuracy_score(val.labels.numpy(), got.argmax(1))
    assert res.val_balanced_accuracy == pytest.approx(recomputed, abs=1e-9)


@pytest.mark.parametrize("balance", ["weights", "none"])
def test_binary_probe_in_a_two_class_manifest(two_of_three, balance):
    m = two_of_three
    binary = Manifest(m.df[m.df["label"] != "c2"].reset_index(drop=True), ["c0", "c1"], {})
    cfg = load_config(None, [*TINY, "finetune.mode=linear", f"finetune.balance={balance}"])
    res = finetune(cfg, binary)
    expected, present, got = probe_reference(res, binary, balance != "none")
    assert list(present) == [0, 1] and got.shape[1] == 2
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_from_scratch_full(pretrained):
    manifest, _ = pretrained
    res = finetune(load_config(None, [*TINY, "finetune.mode=full"]), read_manifest(manifest))
    assert res.model.description.pretraining is None
    assert res.details["steps"] > 0
