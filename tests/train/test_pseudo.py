"""SSCL with pseudo-labels in PretrainModule against references computed here: the loss of a step
(λ1·SupCon over true ∪ pseudo labels + λ2·SSL + w_h·the head's class-weighted cross-entropy, with
the head's predictions, the threshold, the ramp, the per-class cap and the patient pooling
recomputed by explicit loops), the ramp schedule, true labels kept, the option off changing
nothing, the head's detached input, and a short real run logging the new figures."""

from __future__ import annotations

import math
from types import SimpleNamespace

import lightning as L
import pandas as pd
import pytest
import torch
from torch import Tensor

from medcl.config import load_config
from medcl.train.module import PretrainModule
from medcl.train.pretrain import pretrain
from medcl.train.pseudo import pseudo_share
from medcl.transforms import build_preset
from tests.conftest import TINY_OVERRIDES
from tests.losses.test_contrastive import reference_loss
from tests.losses.test_pseudo import reference_pseudo_labels
from tests.train.test_pretrain_module import (
    TEMPERATURE,
    B,
    PassThroughViews,
    V,
    make_module,
    make_views,
    trainable_grads,
)

# two unlabelled images of patient 1, two of patient 5 (pooling has something to average)
LABELS = torch.tensor([0, -1, -1, 1, -1, 2, -1, -1])
GROUPS = torch.tensor([0, 1, 1, 2, 3, 4, 5, 5])
TRAIN_LABELS = torch.tensor([0] * 5 + [1] * 3 + [2] * 2 + [-1] * 10)  # n_c = 5, 3, 2
TOTAL = 100  # optimiser steps of the stand-in run
PSEUDO = ["method.pseudo.enabled=true", "method.pseudo.start=0.2", "method.pseudo.ramp=0.3"]


def attach_fake_trainer(module: PretrainModule, global_step: int, total_steps: int) -> None:
    """A stand-in trainer at ``global_step`` of ``total_steps``, without data."""
    module.trainer = SimpleNamespace(
        global_step=global_step,
        global_rank=0,
        estimated_stepping_batches=total_steps,
        datamodule=None,
    )
    module.on_fit_start()


def pseudo_module(*overrides: str, step: int = 80) -> PretrainModule:
    module = make_module("simclr", "method.lambda_sup=0.7", *PSEUDO, *overrides)
    module.augment = PassThroughViews()
    assert module.pseudo is not None
    with torch.no_grad():  # a head sure enough that some images pass the threshold, some not
        gen = torch.Generator().manual_seed(3)
        head = module.pseudo.head
        head.weight.copy_(0.6 * torch.randn(head.weight.shape, generator=gen, dtype=torch.float64))
        head.bias.zero_()
    module.pseudo.set_class_counts(TRAIN_LABELS)
    attach_fake_trainer(module, step, TOTAL)
    return module


def reference_ramp(step: int, start: float, ramp: float) -> float:
    if step < start * TOTAL:
        return 0.0
    return 1.0 if ramp == 0 else min(1.0, (step - start * TOTAL) / (ramp * TOTAL))


def reference_step(module: PretrainModule, views: Tensor, step: int) -> dict[str, Tensor]:
    """The loss of a step and its parts, recomputed from the definitions."""
    mc = module.cfg.method
    p = mc.pseudo
    flat = views.flatten(0, 1)
    feats = module.encoder(flat)  # one batch, as BatchNorm sees it in the module
    z = module.method.projector(feats).view(B, V, -1)
    logits = module.pseudo.head(feats.detach())
    # prediction of image b: softmax averaged over its views, then over its patient's images
    probs = torch.stack(
        [sum(torch.softmax(logits[b * V + v], 0) for v in range(V)) / V for b in range(B)]
    ).detach()
    if p.pool_patients:
        probs = torch.stack(
            [probs[[k for k in range(B) if GROUPS[k] == GROUPS[b]]].mean(0) for b in range(B)]
        )
    share = reference_ramp(step, p.start, p.ramp)
    counts = [5, 3, 2] if p.balance else None
    sup_labels = reference_pseudo_labels(probs, LABELS, p.threshold, share, counts)
    parts = reference_loss(
        "sscl",
        z,
        torch.tensor(sup_labels),
        GROUPS,
        temperature=TEMPERATURE,
        group_positives=mc.group_positives,
    )
    # class-weighted cross-entropy over the labelled views, w_c = N / (C · n_c)
    weights = {c: 10 / (3 * n) for c, n in enumerate([5, 3, 2])}
    num = den = 0.0
    for i in range(B * V):
        y = int(LABELS[i // V])
        if y >= 0:
            num = num - weights[y] * torch.log_softmax(logits[i], 0)[y]
            den = den + weights[y]
    ce = num / den
    lam_sup = mc.lambda_sup * module.sup_ramp()
    unlabelled = int((LABELS < 0).sum())
    kept = sum(a != b for a, b in zip(LABELS.tolist(), sup_labels, strict=True))
    labelled = [b for b in range(B) if LABELS[b] >= 0]
    hits = sum(int(probs[b].argmax()) == int(LABELS[b]) for b in labelled)
    return {
        "loss": lam_sup * parts["sup"] + mc.lambda_ssl * parts["ssl"] + p.head_weight * ce,
        "sup": parts["sup"],
        "ssl": parts["ssl"],
        "ce": ce,
        "rate": torch.tensor(kept / unlabelled),
        "acc": torch.tensor(hits / len(labelled)),
        "kept": torch.tensor(kept),
        "confident": torch.tensor(
            sum(1 for b in range(B) if LABELS[b] < 0 and probs[b].max() >= p.threshold)
        ),
    }


CASES = {
    "balanced": ([], 80),
    "ramp_half": ([], 35),
    "before_start": ([], 19),
    "unbalanced": (["method.pseudo.balance=false"], 80),
    "pooled": (
        [
            "method.group_positives=true",
            "method.pseudo.pool_patients=true",
            "method.pseudo.balance=false",
        ],
        80,
    ),
    "threshold_head_weight": (
        [
            "method.pseudo.threshold=0.85",
            "method.pseudo.balance=false",
            "method.pseudo.head_weight=0.3",
        ],
        60,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_step_with_pseudo_labels_matches_the_loop_reference(case: str) -> None:
    overrides, step = CASES[case]
    module = pseudo_module("method.pseudo.threshold=0.8", *overrides, step=step)
    views = make_views()
    ref = reference_step(module, views, step)
    expected_grads = trainable_grads(module, ref["loss"])
    loss, logs = module.objective(views, LABELS, GROUPS)
    close = dict(atol=1e-8, rtol=1e-8, check_dtype=False)
    torch.testing.assert_close(loss, ref["loss"].detach(), **close)
    for key, name in (("sup", "sup"), ("ssl", "ssl"), ("ce", "pseudo_head_ce")):
        torch.testing.assert_close(logs[name], ref[key].detach(), **close)
    torch.testing.assert_close(logs["pseudo_rate"], ref["rate"], **close)
    torch.testing.assert_close(logs["pseudo_head_acc"], ref["acc"], **close)
    for got, want in zip(trainable_grads(module, loss), expected_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-8, rtol=1e-6)
    # guards: the cases do what they are named for
    kept, confident = int(ref["kept"]), int(ref["confident"])
    if case == "before_start":
        assert kept == 0 < confident
    elif case in ("ramp_half", "balanced"):
        assert 0 < kept < confident
    elif case == "threshold_head_weight":
        assert 0 < kept == confident < int((LABELS < 0).sum())
    else:
        assert kept > 0


def test_the_head_never_overrides_a_true_label() -> None:
    """A head sure that every image is class 2: the labelled images keep their labels, the
    unlabelled ones become class 2."""
    module = pseudo_module("method.pseudo.balance=false", step=90)
    with torch.no_grad():
        module.pseudo.head.weight.zero_()
        module.pseudo.head.bias.copy_(torch.tensor([0.0, 0.0, 50.0]))
    feats = module.encoder(make_views().flatten(0, 1))
    step = module.pseudo(feats, LABELS, GROUPS, V, 1.0)
    labelled = LABELS >= 0
    assert torch.equal(step.labels[labelled], LABELS[labelled])
    assert (step.labels[~labelled] == 2).all()
    assert float(step.logs["pseudo_rate"]) == 1.0 and float(step.logs["pseudo_head_acc"]) == 1 / 3


@pytest.mark.parametrize(
    ("start", "ramp", "expected"),
    [
        (0.2, 0.3, {0: 0.0, 19: 0.0, 20: 0.0, 35: 0.5, 41: 0.7, 50: 1.0, 99: 1.0}),
        (0.2, 0.0, {19: 0.0, 20: 1.0, 60: 1.0}),
        (0.0, 0.5, {0: 0.0, 10: 0.2, 50: 1.0}),
        (0.0, 0.0, {0: 1.0, 99: 1.0}),
    ],
)
def test_the_ramp_allows_no_pseudo_label_before_start_then_grows_linearly(start, ramp, expected):
    for step, share in expected.items():
        assert pseudo_share(step, TOTAL, start, ramp) == pytest.approx(share, abs=1e-12)
    module = pseudo_module(f"method.pseudo.start={start}", f"method.pseudo.ramp={ramp}")
    for step, share in expected.items():
        attach_fake_trainer(module, step, TOTAL)
        assert module.pseudo_ramp() == pytest.approx(share, abs=1e-12)
        assert module.pseudo_ramp() == pytest.approx(reference_ramp(step, start, ramp))


def built(*overrides: str) -> tuple[PretrainModule, Tensor]:
    """A double-precision module as built from its config at seed 0, stepping at step 5, and the
    global random state after it was built."""
    cfg = load_config(
        None,
        [*TINY_OVERRIDES, f"method.temperature={TEMPERATURE}", "method.lambda_sup=0.7", *overrides],
    )
    torch.manual_seed(0)
    module = PretrainModule(cfg, build_preset("mr", {}, dims=2), spatial_dims=2, n_classes=3)
    rng_after = torch.get_rng_state()
    module = module.double()
    module.augment = PassThroughViews()
    attach_fake_trainer(module, 5, TOTAL)
    return module, rng_after


def test_the_option_off_changes_nothing() -> None:
    """Off (the default, whatever its other settings): no head, the same weights and the same
    loss bit for bit. On but before its start: the same SupCon and SSL terms bit for bit, and the
    same global random state after the module is built (the head shifts no initialisation and no
    later draw, such as the loaders' seeds)."""
    default, rng_default = built()
    off, _ = built("method.pseudo.threshold=0.1", "method.pseudo.start=0")
    on, rng_on = built(*PSEUDO, "method.pseudo.threshold=0.34")
    assert torch.equal(rng_default, rng_on)
    assert default.pseudo is None and off.pseudo is None
    state = default.state_dict()
    assert state.keys() == off.state_dict().keys()
    assert set(on.state_dict()) - set(state) == {"pseudo.head.weight", "pseudo.head.bias"}
    assert all(torch.equal(t, off.state_dict()[k]) for k, t in state.items())
    assert all(torch.equal(t, on.state_dict()[k]) for k, t in state.items())
    views = make_views()
    loss_default, logs_default = default.objective(views, LABELS, GROUPS)
    loss_off, logs_off = off.objective(views, LABELS, GROUPS)
    _, logs_on = on.objective(views, LABELS, GROUPS)
    assert torch.equal(loss_default, loss_off)
    assert set(logs_default) == {"sup", "ssl"}
    assert float(logs_on["pseudo_rate"]) == 0.0 and float(logs_on["pseudo_confident"]) == 1.0
    for k in ("sup", "ssl"):
        assert torch.equal(logs_default[k], logs_off[k]) and torch.equal(
            logs_default[k], logs_on[k]
        )


@pytest.mark.parametrize("detach", [True, False])
def test_the_head_trains_the_encoder_only_when_not_detached(detach: bool) -> None:
    module = pseudo_module(f"method.pseudo.detach={str(detach).lower()}")
    feats = module.encoder(make_views().flatten(0, 1))
    step = module.pseudo(feats, LABELS, GROUPS, V, 1.0)
    params = list(module.encoder.parameters())
    grads = torch.autograd.grad(step.head_loss, params, allow_unused=True, retain_graph=True)
    moved = any(g is not None and bool(g.abs().sum() > 0) for g in grads)
    assert moved is not detach
    (head_grad,) = torch.autograd.grad(step.head_loss, [module.pseudo.head.weight])
    assert float(head_grad.abs().sum()) > 0


class _Counts(L.Callback):
    """Records the class counts the head was given."""

    counts: list[int] = []

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _Counts.counts = pl_module.pseudo.class_counts.tolist()


def test_a_short_pretraining_logs_the_pseudo_labels_figures(tiny_manifest, tmp_path) -> None:
    """Every step logs the pseudo-label rate and the head's accuracy on the labelled images; each
    monitored epoch the head's balanced accuracy on the validation images; no pseudo-label before
    the start; the head's class weights count the labelled training images."""
    cfg = load_config(
        None,
        [
            *TINY_OVERRIDES,
            f"data.manifest={tiny_manifest}",
            f"out={tmp_path / 'run'}",
            "optim.epochs=4",
            "method.pseudo.enabled=true",
            "method.pseudo.threshold=0.34",
            "method.pseudo.start=0.5",
            "method.pseudo.ramp=0",
        ],
    )
    run = pretrain(cfg, progress=False, callbacks=[_Counts()])
    log = pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv")
    steps = log.dropna(subset=["train/pseudo_rate"])
    assert len(steps) == run.steps > 0
    assert steps["train/pseudo_head_acc"].between(0, 1).all()
    assert steps["train/pseudo_confident"].between(0, 1).all()
    start = math.ceil(0.5 * run.steps)
    assert (steps.loc[steps["step"] < start, "train/pseudo_rate"] == 0).all()
    assert (steps.loc[steps["step"] >= start, "train/pseudo_rate"] > 0).any()
    val = log["val/pseudo_head_bacc"].dropna()
    assert len(val) == 4 and val.between(0, 1).all()
    assert "val/pseudo_head_bacc" in run.metrics and "val/knn_bacc" in run.metrics
    assert _Counts.counts == [6, 3, 3]  # 4 labelled training patients × 3 images, classes 0,1,2,0
