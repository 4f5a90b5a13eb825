"""Fine-tuning on a multi-label manifest: every mode gives (N, K) sigmoid probabilities, selects on
the validation macro AUROC (recomputed here finding by finding), stores per-finding thresholds and
the task, and round-trips through a model folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from medcl.config import load_config
from medcl.data.dataset import CachedImages
from medcl.data.manifest import Manifest, read_manifest
from medcl.evaluate.finetune import finetune
from medcl.evaluate.model import load_model, save_model
from medcl.losses.findings import pos_weights
from medcl.models.description import ModelDescription
from tests.conftest import FINDINGS, TINY_OVERRIDES, make_multilabel_manifest


def _rows(m: Manifest, split: str) -> CachedImages:
    return CachedImages(m.subset((m.df["split"] == split) & (m.df["label"] != "")), 16)


def loop_macro_auroc(states: np.ndarray, proba: np.ndarray) -> float:
    """Mean over the findings with a known positive and negative of roc_auc_score on the images
    where the finding is known."""
    scores = []
    for k in range(states.shape[1]):
        known = states[:, k] >= 0
        y = states[known, k]
        if 0 < y.sum() < len(y):
            scores.append(roc_auc_score(y, proba[known, k]))
    return float(np.mean(scores))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Manifest:
    return read_manifest(make_multilabel_manifest(tmp_path_factory.mktemp("ml") / "data"))


def fit(manifest: Manifest, mode: str, *extra: str):
    cfg = load_config(
        None,
        [*TINY_OVERRIDES, f"finetune.mode={mode}", "trainer.accelerator=cpu", *extra],
    )
    return finetune(cfg, manifest)


@pytest.mark.parametrize("mode", ["linear", "knn", "full", "fixmatch", "selftrain"])
def test_modes_on_findings(manifest, tmp_path, monkeypatch, mode):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    extra = ["finetune.selftrain_threshold=0.5"] if mode == "selftrain" else []
    res = fit(manifest, mode, *extra)
    clf = res.model
    assert clf.multilabel and clf.description.task == "multilabel"
    val = _rows(manifest, "val")
    proba = clf.predict_proba(val.images).numpy()
    assert proba.shape == (len(val), len(FINDINGS))
    assert (proba >= 0).all() and (proba <= 1).all()
    # the reported score is the returned model's validation macro AUROC, recomputed here
    assert res.val_macro_auroc == pytest.approx(
        loop_macro_auroc(val.labels.numpy(), proba), abs=1e-6
    )
    assert np.isnan(res.val_balanced_accuracy)
    summary = clf.description.finetune
    assert summary.val_macro_auroc == res.val_macro_auroc
    assert summary.val_balanced_accuracy is None
    # one threshold per finding, Youden's J on its known validation values
    ops = clf.description.finding_thresholds
    assert set(ops["findings"]) == set(FINDINGS) and ops["rule"] == "youden"
    assert clf.description.operating_point is None
    # the model folder keeps the task, the findings and the thresholds
    save_model(tmp_path / "model", clf)
    again = load_model(tmp_path / "model")
    assert again.description.task == "multilabel"
    assert again.description.classes == list(FINDINGS)
    assert again.description.finding_thresholds == ops
    x = torch.rand(5, 1, 16, 16)
    torch.testing.assert_close(again.predict_proba(x), clf.predict_proba(x), atol=1e-5, rtol=0)


def test_linear_probe_folds_one_regression_per_finding(manifest):
    res = fit(manifest, "linear")
    clf = res.model
    train, val = _rows(manifest, "train"), _rows(manifest, "val")
    f_tr = clf.embed(train.images).numpy().astype(np.float64)
    f_va = clf.embed(val.images).numpy().astype(np.float64)
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
    y = train.labels.numpy()
    pw = pos_weights(y).numpy()
    got = clf.predict_proba(val.images).numpy()
    for k in range(len(FINDINGS)):
        known = y[:, k] >= 0
        lr = LogisticRegression(C=res.details["C"], max_iter=2000, class_weight={0: 1, 1: pw[k]})
        lr.fit((f_tr[known] - mu) / sd, y[known, k])
        want = lr.predict_proba((f_va - mu) / sd)[:, 1]
        np.testing.assert_allclose(got[:, k], want, atol=1e-4)


def test_validation_without_a_defined_auroc_is_refused(tmp_path):
    m = read_manifest(make_multilabel_manifest(tmp_path / "data"))
    val = m.df["split"] == "val"
    m.df.loc[val, "label"] = "bright|dark|bar"  # every finding present: no AUROC is defined
    with pytest.raises(Exception, match="macro AUROC"):
        fit(m, "linear")


def test_description_task_round_trip(manifest):
    d = fit(manifest, "knn").model.description
    again = ModelDescription.from_dict(d.to_dict())
    assert again.multilabel and d.to_dict()["task"] == "multilabel"
    assert again.finetune.val_macro_auroc == d.finetune.val_macro_auroc
    d.task = "multiclass"
    assert "task" not in d.to_dict()  # a single-label model's metadata is as before
    assert not ModelDescription.from_dict(d.to_dict()).multilabel


def test_fixmatch_pseudo_labels_per_finding(manifest, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = fit(manifest, "fixmatch", "finetune.fixmatch_threshold=0.7")
    val = _rows(manifest, "val")
    p = res.model.predict_proba(val.images).numpy().astype(np.float64)
    y = val.labels.numpy()
    # coverage and accuracy of the kept model's pseudo-labels on the known validation entries
    sure = right = n = 0
    for i in range(y.shape[0]):
        for k in range(y.shape[1]):
            if y[i, k] < 0:
                continue
            n += 1
            if p[i, k] >= 0.7 or p[i, k] <= 0.3:
                sure += 1
                right += int((p[i, k] >= 0.7) == bool(y[i, k]))
    assert res.details["pseudo_val_coverage"] == pytest.approx(sure / n, abs=1e-9)
    if sure:
        assert res.details["pseudo_val_accuracy"] == pytest.approx(right / sure, abs=1e-9)
    assert 0.0 <= res.details["mask_rate"] <= 1.0


@pytest.mark.parametrize(
    "override,field",
    [
        ("finetune.fixmatch_align=true", "finetune.fixmatch_align"),
        ("finetune.fixmatch_threshold=0.3", "finetune.fixmatch_threshold"),
    ],
)
def test_fixmatch_refusals_for_findings(manifest, override, field):
    with pytest.raises(Exception, match=field):
        fit(manifest, "fixmatch", override)


def test_loss_weights_and_sampler_of_findings():
    from torch.utils.data import RandomSampler

    from medcl.evaluate.fitting import loss_weights, training_sampler

    y = np.array([[1, 0], [0, 0], [0, -1], [0, 1]])
    for balance, want in (("weights", [3.0, 2.0]), ("sampler", [3.0, 2.0]), ("none", None)):
        cfg = load_config(None, [f"finetune.balance={balance}"])
        got = loss_weights(cfg, y, 2)
        if want is None:
            assert got is None
        else:
            torch.testing.assert_close(got, torch.tensor(want))
        sampler = training_sampler(cfg, y, 2, 8, torch.Generator().manual_seed(0))
        assert isinstance(sampler, RandomSampler) and len(list(sampler)) == 8
