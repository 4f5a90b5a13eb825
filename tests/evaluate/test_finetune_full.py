"""Full fine-tuning: best-epoch restore, early stopping, class balance, encoder learning rate.

Each test runs ``finetune(mode=full)`` from scratch on a tiny manifest and watches what the training
saw (validation scores, weights at each validation, training labels, loss weights, optimiser
groups) by wrapping :class:`~medcl.evaluate.finetune.FinetuneModule`'s hooks; the wrappers call the
originals, so the behaviour under test is the package's own.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

import medcl.evaluate.fitting as fitting
from medcl.config import load_config
from medcl.data.dataset import CachedImages
from medcl.data.manifest import Manifest, read_manifest, write_manifest
from medcl.evaluate.finetune import FinetuneModule, finetune
from medcl.train.pretrain import pretrain
from tests.conftest import TINY_OVERRIDES, make_manifest

# CPU in float32 everywhere: on a CUDA machine fine-tuning would validate under bf16 autocast,
# and the recomputed scores below are compared with the reported ones.
CPU = [*TINY_OVERRIDES, "finetune.mode=full", "trainer.accelerator=cpu"]


@dataclass
class Seen:
    """What one full fine-tuning run saw."""

    val_scores: list[float] = field(default_factory=list)
    states: list[dict[str, torch.Tensor]] = field(default_factory=list)  # at each validation
    train_labels: list[int] = field(default_factory=list)
    loss_weights: list[torch.Tensor | None] = field(default_factory=list)
    groups: list[tuple[set[int], float]] = field(default_factory=list)  # (param ids, peak lr)
    encoder_ids: set[int] = field(default_factory=set)
    head_ids: set[int] = field(default_factory=set)
    start: dict[str, torch.Tensor] = field(default_factory=dict)  # parameters before training


def watch(monkeypatch: pytest.MonkeyPatch, scores: list[float] | None = None) -> Seen:
    """Record a run's hooks; ``scores`` replaces the validation balanced accuracies in order."""
    seen = Seen()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # see CPU above
    scripted: Iterator[float] | None = iter(scores) if scores is not None else None
    real_bacc = fitting.balanced_accuracy_score

    def bacc(y: Any, pred: Any) -> float:
        value = float(real_bacc(y, pred)) if scripted is None else next(scripted)
        seen.val_scores.append(value)
        return value

    monkeypatch.setattr(fitting, "balanced_accuracy_score", bacc)

    on_val_end = FinetuneModule.on_validation_epoch_end

    def val_end(self: FinetuneModule) -> None:
        seen.states.append(copy.deepcopy(self.clf.state_dict()))
        on_val_end(self)

    step = FinetuneModule.training_step

    def train_step(self: FinetuneModule, batch: Any, batch_idx: int) -> torch.Tensor:
        seen.train_labels += batch[1].tolist()
        return step(self, batch, batch_idx)

    configure = FinetuneModule.configure_optimizers

    def configure_optimizers(self: FinetuneModule) -> Any:
        seen.encoder_ids = {id(p) for p in self.clf.encoder.parameters()}
        seen.head_ids = {id(p) for p in self.clf.head.parameters()}
        seen.start = {k: p.detach().clone() for k, p in self.clf.named_parameters()}
        out = configure(self)
        opt = out["optimizer"] if isinstance(out, dict) else out
        # "initial_lr" is the group's peak rate, set by the scheduler that scales "lr" per step
        seen.groups = [
            ({id(p) for p in g["params"]}, g.get("initial_lr", g["lr"])) for g in opt.param_groups
        ]
        return out

    cross_entropy = torch.nn.functional.cross_entropy

    def loss(*args: Any, **kwargs: Any) -> torch.Tensor:
        w = kwargs.get("weight")
        seen.loss_weights.append(None if w is None else w.detach().cpu().clone())
        return cross_entropy(*args, **kwargs)

    monkeypatch.setattr(FinetuneModule, "on_validation_epoch_end", val_end)
    monkeypatch.setattr(FinetuneModule, "training_step", train_step)
    monkeypatch.setattr(FinetuneModule, "configure_optimizers", configure_optimizers)
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", loss)
    return seen


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    # exact: a restored state is a copy of the stored tensors, no arithmetic in between
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def val_images(m: Manifest, size: int = 16) -> CachedImages:
    return CachedImages(m.subset((m.df["split"] == "val") & (m.df["label"] != "")), size)


@pytest.fixture(scope="module")
def manifest_path(tmp_path_factory) -> Path:
    return make_manifest(tmp_path_factory.mktemp("full") / "data")


@pytest.fixture(scope="module")
def manifest(manifest_path) -> Manifest:
    return read_manifest(manifest_path)


def test_best_validation_epoch_is_restored(manifest, monkeypatch):
    seen = watch(monkeypatch, scores=[0.3, 0.7, 0.5, 0.4])
    cfg = load_config(None, [*CPU, "finetune.epochs=4", "finetune.patience=8"])
    res = finetune(cfg, manifest)
    assert seen.val_scores == [0.3, 0.7, 0.5, 0.4]  # exact: the scripted values, no arithmetic
    assert res.val_balanced_accuracy == 0.7
    assert res.details["epochs_run"] == 4
    final = res.model.state_dict()
    assert same_state(final, seen.states[1])
    assert not same_state(final, seen.states[-1])  # training moved on after the best epoch


def test_reported_score_is_that_of_the_returned_model(manifest, monkeypatch):
    seen = watch(monkeypatch)
    res = finetune(load_config(None, [*CPU, "finetune.epochs=3"]), manifest)
    assert len(seen.val_scores) == 3
    best = max(seen.val_scores)
    assert res.val_balanced_accuracy == pytest.approx(best, abs=1e-12)
    assert any(
        same_state(res.model.state_dict(), s)
        for s, v in zip(seen.states, seen.val_scores, strict=True)
        if v == best  # exact: both are the same recorded float
    )
    val = val_images(manifest)
    pred = res.model.predict_proba(val.images).argmax(1).numpy()
    recomputed = balanced_accuracy_score(val.labels.numpy(), pred)
    assert recomputed == pytest.approx(res.val_balanced_accuracy, abs=1e-9)


@pytest.mark.parametrize(
    ("scores", "patience", "epochs_run"),
    [
        ([0.5] * 10, 2, 3),  # the first epoch sets the best, then 2 without improvement
        ([0.5] * 10, 1, 2),
        ([0.1, 0.1, 0.2] + [0.2] * 7, 2, 5),  # the improvement at epoch 3 restarts the count
    ],
)
def test_early_stopping_after_patience_epochs_without_improvement(
    manifest, monkeypatch, scores, patience, epochs_run
):
    seen = watch(monkeypatch, scores=scores)
    cfg = load_config(None, [*CPU, "finetune.epochs=10", f"finetune.patience={patience}"])
    res = finetune(cfg, manifest)
    assert len(seen.val_scores) == epochs_run
    assert res.details["epochs_run"] == epochs_run
    assert res.val_balanced_accuracy == max(scores[:epochs_run])  # exact: a scripted value


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory) -> Manifest:
    """21 training patients; labels kept on the 7 of class c0 (21 images) and on one of class c1
    (3 images); c2 has no labelled training row. Val holds one patient of each class."""
    root = tmp_path_factory.mktemp("imbalanced")
    m = read_manifest(make_manifest(root / "data", n_patients=24, labelled_patients=21))
    df = m.df.copy()
    train = df["split"] == "train"
    drop = train & ((df["label"] == "c2") | ((df["label"] == "c1") & (df["patient_key"] != "pk01")))
    df.loc[drop, "label"] = ""
    out = Manifest(df, list(m.classes), dict(m.extra))
    write_manifest(out, root / "imbalanced.csv")
    return out


# w_c = N / (C_present · n_c) by hand: N = 24 labelled images, 2 classes present (21 and 3)
HAND_WEIGHTS = torch.tensor([24 / (2 * 21), 24 / (2 * 3), 0.0])


@pytest.mark.parametrize("balance", ["weights", "sampler", "none"])
def test_balance_modes(imbalanced, monkeypatch, balance):
    seen = watch(monkeypatch)
    cfg = load_config(None, [*CPU, f"finetune.balance={balance}", "finetune.epochs=2"])
    finetune(cfg, imbalanced)
    counts = np.bincount(seen.train_labels, minlength=3)
    assert counts.sum() == 2 * 64  # 2 epochs of max(24 images, 8 batches of 8)
    assert counts[2] == 0  # no labelled row of c2 to draw
    share = counts[0] / counts.sum()
    assert seen.loss_weights
    if balance == "weights":
        for w in seen.loss_weights:
            assert w is not None
            torch.testing.assert_close(w, HAND_WEIGHTS)
    else:
        assert all(w is None for w in seen.loss_weights)
    if balance == "sampler":
        assert 0.35 < share < 0.65  # classes drawn about equally (expected 1/2)
    else:
        assert share > 0.75  # images drawn uniformly: c0 expected 21/24


@pytest.fixture(scope="module")
def pretrained(manifest_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("encoder") / "run"
    cfg = load_config(
        None, [*CPU, "optim.epochs=1", f"data.manifest={manifest_path}", f"out={out}"]
    )
    pretrain(cfg, progress=False)
    return out


@pytest.mark.parametrize("mult", [0.0, 0.1])
def test_encoder_lr_mult(manifest, pretrained, monkeypatch, mult):
    """A pretrained encoder is fine-tuned at ``lr × encoder_lr_mult``, the head at ``lr``."""
    seen = watch(monkeypatch)
    cfg = load_config(
        None, [*CPU, "finetune.lr=0.01", f"finetune.encoder_lr_mult={mult}", "finetune.epochs=1"]
    )
    res = finetune(cfg, manifest, pretrained=pretrained)
    by_ids = {frozenset(ids): lr for ids, lr in seen.groups}
    assert set().union(*by_ids) == seen.encoder_ids | seen.head_ids  # every parameter is trained
    assert by_ids[frozenset(seen.encoder_ids)] == pytest.approx(0.01 * mult, abs=1e-15)
    assert by_ids[frozenset(seen.head_ids)] == pytest.approx(0.01)
    after = dict(res.model.named_parameters())
    moved = {k for k, p in seen.start.items() if not torch.equal(p, after[k].detach())}
    head = {k for k in seen.start if k.startswith("head.")}
    assert head <= moved
    if mult == 0:
        # exact: with lr = 0 AdamW multiplies by 1 - 0·wd and adds 0·update, so the encoder's
        # parameters stay bit-identical (its BatchNorm buffers still move; they are not parameters)
        assert moved == head
    else:
        assert moved - head


def test_encoder_from_scratch_trains_at_the_full_lr(manifest, monkeypatch):
    """Without a pretrained encoder ``encoder_lr_mult`` does not apply: nothing to preserve."""
    seen = watch(monkeypatch)
    cfg = load_config(
        None, [*CPU, "finetune.lr=0.01", "finetune.encoder_lr_mult=0.1", "finetune.epochs=1"]
    )
    finetune(cfg, manifest, pretrained=None)
    by_ids = {frozenset(ids): lr for ids, lr in seen.groups}
    assert by_ids[frozenset(seen.encoder_ids)] == pytest.approx(0.01)
    assert by_ids[frozenset(seen.head_ids)] == pytest.approx(0.01)


class StopError(Exception):
    pass


@pytest.mark.parametrize(
    "overrides",
    [["trainer.accelerator=cpu"], ["trainer.accelerator=auto", "trainer.precision=32-true"]],
)
def test_float32_when_asked_for_on_a_cuda_machine(manifest, monkeypatch, overrides):
    asked: dict[str, Any] = {}

    def trainer(**kwargs: Any) -> None:
        asked.update(kwargs)
        raise StopError  # only the trainer's settings matter here

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(fitting.L, "Trainer", trainer)
    with pytest.raises(StopError):
        finetune(load_config(None, [*CPU, *overrides]), manifest)
    assert str(asked["precision"]) in ("32-true", "32")
