"""PretrainModule against references computed here: how the objective composes λ1·SupCon + λ2·SSL
for every method, SimSiam's stop-gradient, MoCo's symmetric loss and enqueue, the EMA step (with
gradient accumulation, with a fake trainer and in a real tiny fit), and the optimiser's groups.

The augmentation is replaced by a pass-through module, so the views are the tensors given here;
the projections are recomputed with the module's own networks on the same inputs, and the loss
terms from the formulas (loop references of ``tests/losses``, explicit cross-entropy, cosines).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from medcl.config import load_config
from medcl.models.ema import momentum_schedule
from medcl.train.module import PretrainModule
from medcl.transforms import build_preset
from tests.conftest import TINY_OVERRIDES
from tests.losses.test_contrastive import reference_loss

B, V, SIZE = 8, 2, 16
# patient 0 has two images with different labels (a same-patient pair that is not a positive)
LABELS = torch.tensor([0, 1, -1, 0, 2, -1, 1, 0])
GROUPS = torch.tensor([0, 1, 2, 3, 0, 5, 6, 7])
METHODS = ["simclr", "moco", "byol", "simsiam"]
TEMPERATURE = 0.2


class PassThroughViews(nn.Module):
    """Stands in for the augmentation: returns the given ``(B, V, 1, H, W)`` views unchanged."""

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return x


def make_module(method: str, *overrides: str, double: bool = True) -> PretrainModule:
    cfg = load_config(
        None,
        [*TINY_OVERRIDES, f"method.name={method}", f"method.temperature={TEMPERATURE}", *overrides],
    )
    torch.manual_seed(0)
    module = PretrainModule(cfg, build_preset("mr", {}, dims=2), spatial_dims=2, n_classes=3)
    if double:
        module = module.double()
    # the target (EMA) networks start as copies: move the online ones so that the two differ
    with torch.no_grad():
        for p in [*module.encoder.parameters(), *module.method.projector.parameters()]:
            p.add_(0.3 * torch.randn_like(p))
    return module


def make_views(seed: int = 1) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(B, V, 1, SIZE, SIZE, generator=gen, dtype=torch.float64)


def online_projections(module: PretrainModule, views: Tensor) -> Tensor:
    """``(B, V, D)`` projections of all views, encoded as one batch (as BatchNorm sees them)."""
    return module.method.projector(module.encoder(views.flatten(0, 1))).view(B, V, -1)


@torch.no_grad()
def target_projections(module: PretrainModule, views: Tensor) -> Tensor:
    flat = views.flatten(0, 1)
    return module.method.target_projector(module.method.target_encoder(flat)).view(B, V, -1)


def mean_cos(a: Tensor, b: Tensor) -> Tensor:
    return (F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(1).mean()


def info_nce(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """Plain MoCo: cross-entropy of the own key against own key + queue (no same-patient keys)."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long))


def reference_terms(
    method: str, module: PretrainModule, views: Tensor, queue: Tensor | None
) -> tuple[Tensor, Tensor]:
    """``(sup, ssl)``: SupCon over the labelled anchors and the method's SSL term."""
    z = online_projections(module, views)
    parts = reference_loss("sscl", z, LABELS, GROUPS, temperature=TEMPERATURE)
    sup = parts["sup"]
    if method == "simclr":
        return sup, parts["ssl"]
    if method == "moco":
        k = target_projections(module, views)
        ssl = 0.5 * (
            info_nce(z[:, 0], k[:, 1], queue, TEMPERATURE)
            + info_nce(z[:, 1], k[:, 0], queue, TEMPERATURE)
        )
        return sup, ssl
    p = module.method.predictor(z.flatten(0, 1)).view(B, V, -1)
    if method == "byol":
        t = target_projections(module, views)
        return sup, (2 - 2 * mean_cos(p[:, 0], t[:, 1])) + (2 - 2 * mean_cos(p[:, 1], t[:, 0]))
    t = z.detach()
    return sup, -(mean_cos(p[:, 0], t[:, 1]) + mean_cos(p[:, 1], t[:, 0])) / 2


def fill_queue(module: PretrainModule, count: int = 20) -> Tensor:
    """Enqueue random keys without labels or patients; return them normalised (oldest first)."""
    gen = torch.Generator().manual_seed(7)
    queue = module.method.moco_loss
    queue.enqueue(torch.randn(count, queue.queue.shape[1], generator=gen).double())
    return queue.queued()[0].clone()


def trainable_grads(module: PretrainModule, value: Tensor) -> list[Tensor]:
    params = [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad(value, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


# --------------------------------------------------------------------------------------------------
# Objective composition
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lambdas", [(0.7, 1.3), (0.0, 2.0)], ids=["both", "ssl_only"])
@pytest.mark.parametrize("method", METHODS)
def test_objective_is_weighted_sum_of_supcon_and_ssl(method, lambdas):
    """Loss value and parameter gradients equal λ1·SupCon(labelled) + λ2·SSL from references."""
    lam_sup, lam_ssl = lambdas
    module = make_module(method, f"method.lambda_sup={lam_sup}", f"method.lambda_ssl={lam_ssl}")
    module.augment = PassThroughViews()
    queue = fill_queue(module) if method == "moco" else None
    views = make_views()

    sup, ssl = reference_terms(method, module, views, queue)
    expected = lam_sup * sup + lam_ssl * ssl
    expected_grads = trainable_grads(module, expected)

    loss, logs = module.objective(views, LABELS, GROUPS)
    # tolerances: NegativeCosineLoss computes in float32 even for float64 inputs
    close = dict(atol=1e-6, rtol=1e-6, check_dtype=False)
    torch.testing.assert_close(loss, expected.detach(), **close)
    torch.testing.assert_close(logs["ssl"], ssl.detach(), **close)
    if lam_sup > 0:
        torch.testing.assert_close(logs["sup"], sup.detach(), **close)
    for got, want in zip(trainable_grads(module, loss), expected_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-7, rtol=1e-5)
    # guard: both terms matter at these inputs, so a wrong weight would show
    assert float(sup.detach()) > 0.1 and abs(float(ssl.detach())) > 0.01


# --------------------------------------------------------------------------------------------------
# SimSiam stop-gradient
# --------------------------------------------------------------------------------------------------


def test_simsiam_target_branch_carries_no_gradient():
    """dL/dz flows only through the predictor: equal to the reference with z.detach() targets."""
    module = make_module("simsiam", "method.lambda_sup=0", "method.lambda_ssl=1")
    module.augment = PassThroughViews()
    captured = {}

    def keep_output(_mod, _inp, out):
        out.retain_grad()
        captured["z"] = out

    handle = module.method.projector.register_forward_hook(keep_output)
    loss, _ = module.objective(make_views(), LABELS, GROUPS)
    loss.backward()
    handle.remove()
    z_flat = captured["z"]

    def simsiam(z_leaf: Tensor, stop_gradient: bool) -> Tensor:
        z = z_leaf.view(B, V, -1)
        p = module.method.predictor(z_leaf).view(B, V, -1)
        t = z.detach() if stop_gradient else z
        return -(mean_cos(p[:, 0], t[:, 1]) + mean_cos(p[:, 1], t[:, 0])) / 2

    grads = {}
    for stop in (True, False):
        z_leaf = z_flat.detach().clone().requires_grad_(True)
        (grads[stop],) = torch.autograd.grad(simsiam(z_leaf, stop), z_leaf)
    torch.testing.assert_close(z_flat.grad, grads[True], atol=1e-7, rtol=1e-5)  # float32 cosines
    # guard: without the stop-gradient the gradient is clearly different
    assert (grads[False] - grads[True]).abs().max() > 1e-3 * grads[True].abs().max()


# --------------------------------------------------------------------------------------------------
# MoCo
# --------------------------------------------------------------------------------------------------


def test_moco_loss_is_symmetric_over_views():
    """SSL = 0.5·(InfoNCE(q0, k1) + InfoNCE(q1, k0)): swapping the views leaves it unchanged."""
    module = make_module("moco", "method.lambda_sup=0", "method.lambda_ssl=1")
    module.augment = PassThroughViews()
    fill_queue(module)
    state = {k: v.clone() for k, v in module.method.moco_loss.state_dict().items()}
    views = make_views()
    loss, _ = module.objective(views, LABELS, GROUPS)
    module.method.moco_loss.load_state_dict(state)
    swapped, _ = module.objective(views.flip(1), LABELS, GROUPS)
    torch.testing.assert_close(loss, swapped, atol=1e-10, rtol=1e-10)
    # guard: one direction alone is not symmetric at these inputs
    queue = state["queue"][: int(state["queue_len"])]
    z, k = online_projections(module, views), target_projections(module, views)
    one_way = info_nce(z[:, 0], k[:, 1], queue, TEMPERATURE)
    other_way = info_nce(z[:, 1], k[:, 0], queue, TEMPERATURE)
    assert abs(float((one_way - other_way).detach())) > 1e-3


def test_moco_enqueues_second_view_keys_of_the_key_encoder():
    """After a step the queue ends with normalised key-encoder keys of view 1 and their ids."""
    module = make_module("moco")
    module.augment = PassThroughViews()
    before = fill_queue(module, count=20)
    views = make_views()
    keys = F.normalize(target_projections(module, views)[:, 1], dim=1)
    module.objective(views, LABELS, GROUPS)
    queued, queued_labels, queued_groups = module.method.moco_loss.queued()
    assert queued.shape[0] == 20 + B
    torch.testing.assert_close(queued[:20], before)  # older entries untouched
    torch.testing.assert_close(queued[20:], keys, atol=1e-10, rtol=1e-10)
    assert queued_labels[20:].tolist() == LABELS.tolist()
    assert queued_groups[20:].tolist() == GROUPS.tolist()
    # guard: the other view's keys and the online projections differ from what was stored
    with torch.no_grad():
        z = F.normalize(online_projections(module, views)[:, 1], dim=1)
    other = F.normalize(target_projections(module, views)[:, 0], dim=1)
    assert (other - keys).abs().max() > 1e-3 and (z - keys).abs().max() > 1e-3


# --------------------------------------------------------------------------------------------------
# EMA of the target networks
# --------------------------------------------------------------------------------------------------


def attach_fake_trainer(module: PretrainModule, global_step: int, total_steps: int) -> None:
    module.trainer = SimpleNamespace(
        global_step=global_step, global_rank=0, estimated_stepping_batches=total_steps
    )
    module.on_fit_start()


def paired_params(module: PretrainModule) -> list[tuple[str, Tensor, Tensor]]:
    """``(name, target, online)`` for every EMA-tracked parameter, paired by name."""
    method = module.method
    out = []
    pairs = [("encoder", module.encoder, method.target_encoder)]
    pairs.append(("projector", method.projector, method.target_projector))
    for prefix, online, target in pairs:
        online_params = dict(online.named_parameters())
        for name, p in target.named_parameters():
            out.append((f"target_{prefix}.{name}", p, online_params[name]))
    return out


def assert_ema_step(before: dict[str, Tensor], module: PretrainModule, m: float) -> None:
    for name, target, online in paired_params(module):
        expected = m * before[name] + (1 - m) * online.detach()
        torch.testing.assert_close(target, expected, atol=1e-12, rtol=1e-10, msg=name)


@pytest.mark.parametrize("method", ["moco", "byol"])
def test_ema_moves_target_by_the_scheduled_momentum(method):
    """target' = m·target + (1 − m)·online with m = momentum_schedule(step, total, ema_base)."""
    module = make_module(method, f"method.options.{method}.ema_base=0.9")
    attach_fake_trainer(module, global_step=3, total_steps=10)
    before = {name: t.detach().clone() for name, t, _ in paired_params(module)}
    online_before = {name: o.detach().clone() for name, _, o in paired_params(module)}
    module.on_train_batch_end(None, None, 0)
    m = momentum_schedule(3, 10, base=0.9)
    assert 0.9 < m < 1.0 and not math.isclose(m, momentum_schedule(4, 10, base=0.9))
    assert_ema_step(before, module, m)
    for name, _, online in paired_params(module):
        assert torch.equal(online, online_before[name]), name  # the online side is read only


@pytest.mark.parametrize("method", ["moco", "byol"])
def test_ema_steps_only_on_optimiser_steps_under_accumulation(method):
    """accumulate_grad_batches=2: batch_idx 0, 2 leave the target; 1, 3 take one EMA step."""
    module = make_module(
        method, "trainer.accumulate_grad_batches=2", f"method.options.{method}.ema_base=0.9"
    )
    for batch_idx, step in [(0, 0), (1, 1), (2, 1), (3, 2)]:
        attach_fake_trainer(module, global_step=step, total_steps=10)
        before = {name: t.detach().clone() for name, t, _ in paired_params(module)}
        module.on_train_batch_end(None, None, batch_idx)
        if batch_idx % 2 == 0:
            for name, target, _ in paired_params(module):
                assert torch.equal(target, before[name]), (batch_idx, name)
        else:
            assert_ema_step(before, module, momentum_schedule(step, 10, base=0.9))


class EMARecorder(PretrainModule):
    """Records, per training batch, whether the optimiser stepped and the EMA state around it."""

    def on_train_batch_start(self, batch, batch_idx):
        self._start = (
            int(self.trainer.global_step),
            {name: t.detach().clone() for name, t, _ in paired_params(self)},
        )

    def on_train_batch_end(self, outputs, batch, batch_idx):
        step_before, target_before = self._start
        online = {name: o.detach().clone() for name, _, o in paired_params(self)}
        super().on_train_batch_end(outputs, batch, batch_idx)
        target_after = {name: t.detach().clone() for name, t, _ in paired_params(self)}
        record = (step_before, int(self.trainer.global_step), target_before, online, target_after)
        self.records.append(record)


def fit_and_check_ema(n_batches: int) -> None:
    """A real Lightning fit (2 epochs, accumulation 2): EMA exactly on the optimiser steps."""
    cfg = load_config(
        None,
        [*TINY_OVERRIDES, "method.name=byol", "trainer.accumulate_grad_batches=2", "optim.lr=0.05"],
    )
    torch.manual_seed(0)
    module = EMARecorder(cfg, build_preset("mr", {}, dims=2), spatial_dims=2, n_classes=3)
    module.records = []
    n = n_batches * B
    gen = torch.Generator().manual_seed(3)
    data = TensorDataset(
        torch.rand(n, 1, SIZE, SIZE, generator=gen),
        torch.randint(-1, 3, (n,), generator=gen),
        torch.arange(n),
        torch.arange(n),
    )
    trainer = L.Trainer(
        max_epochs=2,
        accumulate_grad_batches=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, DataLoader(data, batch_size=B))
    total = module.total_steps
    assert total == 2 * math.ceil(n_batches / 2) == trainer.global_step
    for step_before, step_after, before, online, after in module.records:
        if step_after == step_before:  # accumulating: no optimiser step, no EMA step
            for name in before:
                assert torch.equal(after[name], before[name]), (step_after, name)
            continue
        m = momentum_schedule(step_after, total, base=module.method.options.ema_base)
        for name in before:
            expected = m * before[name] + (1 - m) * online[name]
            torch.testing.assert_close(after[name], expected, msg=f"step {step_after}, {name}")


NO_VAL_WARNING = "ignore:You defined a `validation_step` but have no `val_dataloader`"


@pytest.mark.filterwarnings(NO_VAL_WARNING)
def test_ema_follows_optimiser_steps_in_a_real_fit():
    """4 batches per epoch, accumulation 2: every optimiser step takes one EMA step."""
    fit_and_check_ema(n_batches=4)


@pytest.mark.filterwarnings(NO_VAL_WARNING)
def test_ema_follows_the_optimiser_step_of_a_partial_last_window():
    """3 batches per epoch, accumulation 2: the epoch's last batch is an optimiser step too."""
    fit_and_check_ema(n_batches=3)


# --------------------------------------------------------------------------------------------------
# Optimiser
# --------------------------------------------------------------------------------------------------

NORMS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)
WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def expected_groups(module: nn.Module) -> tuple[set[int], set[int]]:
    """``(decay, no_decay)`` parameter ids by layer type: conv/linear weights decay; biases and
    normalisation weights do not. Frozen parameters are in neither."""
    decay, no_decay = set(), set()
    for mod_name, mod in module.named_modules():
        for name, p in mod.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if name == "bias" or isinstance(mod, NORMS):
                no_decay.add(id(p))
            elif name == "weight" and isinstance(mod, WEIGHTED):
                decay.add(id(p))
            else:
                pytest.fail(f"unexpected parameter {mod_name}.{name} in {type(mod).__name__}")
    return decay, no_decay


@pytest.mark.parametrize("method", METHODS)
def test_optimiser_weight_decay_groups(method):
    """Biases and norm weights in the weight-decay-0 group, conv/linear weights in the decay
    group, every trainable parameter exactly once, no target (EMA) parameter."""
    module = make_module(method, "optim.weight_decay=0.05", double=False)
    attach_fake_trainer(module, global_step=0, total_steps=20)
    opt = module.configure_optimizers()["optimizer"]
    by_decay = {}
    for group in opt.param_groups:
        by_decay.setdefault(group["weight_decay"], []).extend(group["params"])
    assert set(by_decay) == {0.05, 0.0}
    decay_ids = [id(p) for p in by_decay[0.05]]
    no_decay_ids = [id(p) for p in by_decay[0.0]]
    want_decay, want_no_decay = expected_groups(module)
    assert set(decay_ids) == want_decay and set(no_decay_ids) == want_no_decay
    all_ids = decay_ids + no_decay_ids
    assert len(all_ids) == len(set(all_ids))  # each parameter once
    trainable = {id(p) for p in module.parameters() if p.requires_grad}
    assert set(all_ids) == trainable
    if method in ("moco", "byol"):
        method = module.method
        targets = [*method.target_encoder.parameters(), *method.target_projector.parameters()]
        assert targets and not {id(p) for p in targets} & set(all_ids)
        assert not any(p.requires_grad for p in targets)


def test_lr_schedule_counts_optimiser_steps_with_warmup():
    """The scheduler steps per optimiser step: linear warm-up over round(fraction·K) steps to the
    peak, then a non-increasing cosine to a small fraction of the peak at K."""
    module = make_module("simclr", "optim.lr=0.01", "optim.warmup_fraction=0.1", double=False)
    attach_fake_trainer(module, global_step=0, total_steps=40)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(41):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()  # no gradients: a no-op that keeps the scheduler's order check quiet
        sched.step()
    warm = 4  # round(0.1 * 40)
    expected_warmup = [0.01 * (k + 1) / warm for k in range(warm)]
    torch.testing.assert_close(torch.tensor(lrs[:warm]), torch.tensor(expected_warmup))
    assert lrs[warm] == pytest.approx(0.01)
    after = lrs[warm:]
    assert all(b <= a + 1e-12 for a, b in zip(after, after[1:], strict=False))
    assert 0 <= lrs[40] <= 0.02 * 0.01
    mid = warm + (40 - warm) // 2
    assert lrs[mid] == pytest.approx(0.5 * 0.01, rel=0.03)  # half-way down the cosine
