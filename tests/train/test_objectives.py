"""Objectives as small classes: a new one is a subclass plus one registry line, and trains through
the real pretraining path; an unknown ``method.name`` is refused before any work. DINO and VICReg:
their loss (with the SupCon term) against the loop references of ``tests/losses``, DINO's center
and teacher, and one training step of each through the registry."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from medcl.config import load_config
from medcl.errors import ConfigError
from medcl.models.ema import momentum_schedule
from medcl.train.module import PretrainModule
from medcl.train.objectives import (
    OBJECTIVES,
    Objective,
    ViewBatch,
    check_objective_options,
    objective_class,
    register,
)
from medcl.train.pretrain import pretrain
from medcl.transforms import build_preset
from tests.conftest import TINY_OVERRIDES
from tests.losses.test_contrastive import reference_loss
from tests.losses.test_dino import reference_loss as reference_dino
from tests.losses.test_multilabel_supcon import reference_loss as reference_multilabel
from tests.losses.test_vicreg import reference_terms as reference_vicreg_terms


class AlignViews(Objective):
    """Toy objective: pull the two views together, ``L_ssl = mean_i ‖ẑ_i¹ − ẑ_i²‖²`` (ẑ = z/‖z‖).

    Collapses without negatives; enough to show the wiring. Counts its calls.
    """

    calls = 0

    def ssl_loss(self, batch: ViewBatch, z: Tensor) -> Tensor:
        AlignViews.calls += 1
        assert z.shape[:2] == (batch.n_samples, batch.n_views) == (batch.labels.shape[0], 2)
        zn = F.normalize(z, dim=-1)
        return (zn[:, 0] - zn[:, 1]).pow(2).sum(-1).mean()


@pytest.fixture
def align():
    register("align")(AlignViews)  # the one registry line
    AlignViews.calls = 0
    yield AlignViews
    OBJECTIVES.pop("align")


def _cfg(manifest, out, *extra):
    return load_config(None, [f"data.manifest={manifest}", f"out={out}", *TINY_OVERRIDES, *extra])


def test_a_registered_toy_objective_trains_two_steps(tiny_manifest, tmp_path, align):
    """Through `pretrain`: 2 optimiser steps of λ1·SupCon + λ2·toy, logged under the usual names,
    the toy's projector in the checkpoint, the encoder moved from its initial weights."""
    lam = ["method.lambda_sup=0.5", "method.lambda_ssl=2.0"]
    cfg = _cfg(
        tiny_manifest,
        tmp_path / "run",
        "method.name=align",
        "optim.max_steps=2",
        "optim.lr=0.05",
        *lam,
    )
    assert objective_class("align") is AlignViews
    r = pretrain(cfg, progress=False)
    assert r.steps == 2 and align.calls == 2
    m = r.metrics
    assert 0.0 <= m["train/ssl"] <= 4.0 and m["train/sup"] > 0
    assert m["train/loss_epoch"] == pytest.approx(0.5 * m["train/sup"] + 2.0 * m["train/ssl"])
    steps = pd.read_csv(tmp_path / "run/logs/metrics.csv")["train/loss_step"].dropna()
    assert len(steps) == 2
    sd = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=False)["state_dict"]
    assert "method.projector.net.3.weight" in sd
    torch.manual_seed(cfg.trainer.seed)  # pretrain() seeds the same way before building
    initial = PretrainModule(cfg, build_preset("mr"), 2, 3).encoder.state_dict()
    assert not torch.equal(sd["encoder.conv1.weight"], initial["conv1.weight"])


def test_unknown_objective_is_refused_before_training(tiny_manifest, tmp_path):
    """One line naming the field and the choices, raised before the run folder exists."""
    cfg = _cfg(tiny_manifest, tmp_path / "run", "method.name=swav")  # an identifier: loads
    with pytest.raises(ConfigError) as err:
        pretrain(cfg, progress=False)
    message = str(err.value)
    assert message.startswith("method.name:") and "'swav'" in message and "\n" not in message
    assert all(name in message for name in ("simclr", "moco", "byol", "simsiam"))
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="^method.name:"):
        PretrainModule(cfg, build_preset("mr"), 2, 3)
    with pytest.raises(ConfigError, match="^method.name: an objective name"):  # not a name at all
        load_config(None, ["method.name=swav v2"])


def test_a_taken_name_cannot_be_registered_again():
    with pytest.raises(ValueError, match="already registered"):
        register("simclr")(AlignViews)
    with pytest.raises(ValueError, match="not an identifier"):
        register("align-v2")
    assert OBJECTIVES["simclr"].__name__ == "SimCLR"


# --------------------------------------------------------------------------------------------------
# DINO and VICReg through the registry
# --------------------------------------------------------------------------------------------------

B, V, SIZE, TAU = 8, 2, 16, 0.2
# patient 0 has two images with different labels (a same-patient pair that is not a positive)
LABELS = torch.tensor([0, 1, -1, 0, 2, -1, 1, 0])
GROUPS = torch.tensor([0, 1, 2, 3, 0, 5, 6, 7])
NEW_METHODS = ["dino", "vicreg"]


class PassThroughViews(torch.nn.Module):
    """Stands in for the augmentation: returns the given ``(B, V, 1, H, W)`` views unchanged."""

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return x


def make_module(method: str, *overrides: str) -> PretrainModule:
    cfg = load_config(
        None,
        [
            *TINY_OVERRIDES,
            f"method.name={method}",
            f"method.temperature={TAU}",
            "method.options.dino.out_dim=12",
            *overrides,
        ],
    )
    torch.manual_seed(0)
    module = PretrainModule(cfg, build_preset("mr", {}, dims=2), spatial_dims=2, n_classes=3)
    module = module.double()
    module.augment = PassThroughViews()
    # the teacher starts as a copy: move the student so that the two differ
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn_like(p))
    return module


def cosine_logits(z: Tensor, prototypes: Tensor) -> Tensor:
    """``(M, K)`` cosines of each row of ``z`` with each prototype, one pair at a time."""
    rows = [
        torch.stack([F.cosine_similarity(zi, w, dim=0, eps=0.0) for w in prototypes]) for zi in z
    ]
    return torch.stack(rows)


def reference_ssl(module: PretrainModule, views: Tensor, z: Tensor) -> Tensor:
    """The SSL term from the loop references of ``tests/losses`` on the module's networks."""
    obj, o = module.method, module.method.options
    if module.cfg.method.name == "vicreg":
        inv, var, cov = reference_vicreg_terms(z)
        return o.sim_weight * inv + o.var_weight * var + o.cov_weight * cov
    student = cosine_logits(z.flatten(0, 1), obj.prototypes.layer.weight).view(B, V, -1)
    with torch.no_grad():
        t = obj.target_projector(obj.target_encoder(views.flatten(0, 1)))
        teacher = cosine_logits(t, obj.target_prototypes.layer.weight).view(B, V, -1)
    # before any optimiser step τ_t is the warm-up's starting value
    return reference_dino(
        student, teacher, obj.center.clone(), o.student_temp, o.warmup_teacher_temp
    )


@pytest.mark.parametrize("lambdas", [(0.7, 1.3), (0.0, 2.0)], ids=["both", "ssl_only"])
@pytest.mark.parametrize("method", NEW_METHODS)
def test_new_objective_is_weighted_sum_of_supcon_and_its_loss(method, lambdas):
    """Loss value and parameter gradients equal λ1·SupCon(labelled) + λ2·SSL, both from loop
    references; SupCon is logged exactly when λ1 > 0. DINO's center then holds the EMA of the
    teacher outputs' mean."""
    lam_sup, lam_ssl = lambdas
    module = make_module(method, f"method.lambda_sup={lam_sup}", f"method.lambda_ssl={lam_ssl}")
    views = torch.rand(B, V, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1)).double()
    z = module.method.projector(module.encoder(views.flatten(0, 1))).view(B, V, -1)
    sup = reference_loss("sscl", z, LABELS, GROUPS, temperature=TAU)["sup"]
    ssl = reference_ssl(module, views, z)
    expected = lam_sup * sup + lam_ssl * ssl
    params = [p for p in module.parameters() if p.requires_grad]
    expected_grads = torch.autograd.grad(expected, params, allow_unused=True)
    if method == "dino":
        with torch.no_grad():
            t = module.method.teacher_logits(
                ViewBatch(views.flatten(0, 1), z.flatten(0, 1), LABELS, GROUPS, B, V)
            )
        m = module.method.options.center_momentum
        want_center = m * module.method.center + (1 - m) * t.flatten(0, 1).mean(0)

    loss, logs = module.objective(views, LABELS, GROUPS)
    close = dict(atol=1e-8, rtol=1e-7)
    torch.testing.assert_close(loss, expected.detach(), **close)
    torch.testing.assert_close(logs["ssl"], ssl.detach(), **close)
    assert ("sup" in logs) == (lam_sup > 0)
    if lam_sup > 0:
        torch.testing.assert_close(logs["sup"], sup.detach(), **close)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    for got, want in zip(grads, expected_grads, strict=True):
        if want is None:
            assert got is None or not got.abs().any()
        else:
            torch.testing.assert_close(got, want, atol=1e-8, rtol=1e-6)
    if method == "dino":
        torch.testing.assert_close(module.method.center, want_center)
        assert not any(p.requires_grad for p in module.method.target_prototypes.parameters())
    # guard: both terms matter at these inputs, so a wrong weight would show
    assert float(sup.detach()) > 0.1 and abs(float(ssl.detach())) > 0.01


def test_dino_teacher_follows_the_student_and_warms_its_temperature():
    """After an optimiser step the teacher's prototypes take the EMA step and τ_t moves along
    its warm-up (linear from warmup_teacher_temp to teacher_temp)."""
    module = make_module(
        "dino", "method.options.dino.teacher_temp_warmup=0.5", "method.options.dino.ema_base=0.9"
    )
    obj = module.method
    before = obj.target_prototypes.layer.weight.detach().clone()
    student = obj.prototypes.layer.weight.detach().clone()
    assert obj.current_teacher_temp() == pytest.approx(0.04)
    obj.on_optimizer_step(module.encoder, 5, 20)
    m = momentum_schedule(5, 20, base=0.9)
    torch.testing.assert_close(obj.target_prototypes.layer.weight, m * before + (1 - m) * student)
    assert obj.current_teacher_temp() == pytest.approx(0.04 + 0.03 * 5 / 10)
    state = obj.state_dict()
    assert {"center", "steps_done", "total_steps"} <= set(state)


@pytest.mark.parametrize("method", NEW_METHODS)
def test_new_objective_trains_through_the_registry(method, tiny_manifest, tmp_path):
    """``method.name`` picks it; one optimiser step of λ1·SupCon + λ2·SSL runs, SupCon logged."""
    assert objective_class(method) is OBJECTIVES[method]
    cfg = _cfg(
        tiny_manifest,
        tmp_path / "run",
        f"method.name={method}",
        "method.options.dino.out_dim=16",
        "optim.max_steps=1",
        "method.lambda_sup=0.5",
    )
    r = pretrain(cfg, progress=False)
    m = r.metrics
    assert r.steps == 1 and m["train/sup"] > 0 and math.isfinite(m["train/ssl"])
    assert m["train/loss_epoch"] == pytest.approx(0.5 * m["train/sup"] + m["train/ssl"])
    sd = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=False)["state_dict"]
    if method == "dino":
        assert sd["method.center"].abs().sum() > 0 and int(sd["method.steps_done"]) == 1
        assert "method.target_prototypes.layer.weight" in sd


# --------------------------------------------------------------------------------------------------
# Options: declared and checked by each objective, read from method.options.<name>
# --------------------------------------------------------------------------------------------------

# the defaults of the flat method.* keys these options replaced
EXPECTED_DEFAULTS = {
    "simclr": {},
    "simsiam": {},
    "moco": {"ema_base": 0.99, "queue_size": 4096},
    "byol": {"ema_base": 0.99},
    "dino": {
        "ema_base": 0.99,
        "out_dim": 4096,
        "student_temp": 0.1,
        "teacher_temp": 0.07,
        "warmup_teacher_temp": 0.04,
        "teacher_temp_warmup": 0.3,
        "center_momentum": 0.9,
    },
    "vicreg": {"sim_weight": 25.0, "var_weight": 25.0, "cov_weight": 1.0},
}


def test_every_objective_declares_its_options_with_the_former_defaults():
    assert set(EXPECTED_DEFAULTS) == set(OBJECTIVES)
    got = check_objective_options(load_config(None), OBJECTIVES)
    assert {name: dataclasses.asdict(o) for name, o in got.items()} == EXPECTED_DEFAULTS


@pytest.mark.parametrize("method", ["moco", "byol", "dino", "vicreg"])
def test_an_objective_reads_its_own_options_only(method):
    """Given options of several objectives, the one built reads those under its own name."""
    others = {"moco": {"ema_base": 0.5, "queue_size": 8}, "byol": {"ema_base": 0.6}}
    others |= {"dino": {"out_dim": 6, "ema_base": 0.7}, "vicreg": {"cov_weight": 2.0}}
    module = make_module(method, f"method.options={others}")
    assert dataclasses.asdict(module.method.options) == EXPECTED_DEFAULTS[method] | others[method]
    if method == "moco":
        assert module.method.moco_loss.queue_size == 8
    if method == "dino":
        assert module.method.center.shape == (6,)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dino.out_dim=1", "dino.out_dim: must be ≥ 2, got 1"),
        ("dino.student_temp=0", "dino.student_temp: must be in (0, 10], got 0.0"),
        # hotter than the student
        (
            "dino.teacher_temp=0.2",
            "dino.teacher_temp: must be in (0, student_temp = 0.1] (the teacher sharpens), got 0.2",
        ),
        ("dino.warmup_teacher_temp=-0.1", "dino.warmup_teacher_temp: must be in (0, student_temp"),
        ("dino.teacher_temp_warmup=1.5", "dino.teacher_temp_warmup: must be in [0, 1], got 1.5"),
        ("dino.center_momentum=1", "dino.center_momentum: must be in [0, 1), got 1.0"),
        ("dino.ema_base=1.5", "dino.ema_base: must be in [0, 1], got 1.5"),
        ("moco.queue_size=0", "moco.queue_size: must be positive, got 0"),
        ("byol.ema_base=-1", "byol.ema_base: must be in [0, 1], got -1.0"),
        ("vicreg.cov_weight=-1", "vicreg.cov_weight: must be ≥ 0, got -1.0"),
        ("dino.out_dim=big", "dino.out_dim: expected int, got 'big'"),
        (
            "dino.out_dimm=8",
            "unknown config key 'method.options.dino.out_dimm' (did you mean 'out_dim'?); "
            "valid keys: ema_base, out_dim, student_temp",
        ),
        ("simclr.queue_size=8", "unknown config key 'method.options.simclr.queue_size'"),
        ("swav.prototypes=8", "swav: options of 'swav', which is no pretraining objective"),
    ],
)
def test_bad_options_are_refused_when_the_objective_is_resolved(override, message):
    """Loading accepts them (no torch there); resolving refuses them in one line naming the
    option, for the run's own objective and for any other whose options are given; so does
    building the objective."""
    cfg = load_config(None, [f"method.options.{override}"])
    with pytest.raises(ConfigError) as err:
        check_objective_options(cfg, ["simclr"])
    expected = message if message.startswith("unknown") else f"method.options.{message}"
    assert str(err.value).startswith(expected)
    assert "\n" not in str(err.value)
    name = override.split(".")[0]
    if name in OBJECTIVES:
        with pytest.raises(ConfigError, match="method.options"):
            make_module(name, f"method.options.{override}")


def test_all_zero_vicreg_weights_are_refused():
    zeros = [f"method.options.vicreg.{k}_weight=0" for k in ("sim", "var", "cov")]
    with pytest.raises(
        ConfigError, match="^method.options.vicreg.sim_weight: the three VICReg weights"
    ):
        check_objective_options(load_config(None, zeros), ["vicreg"])


def test_bad_options_refused_by_pretrain_before_any_work(tiny_manifest, tmp_path):
    cfg = _cfg(tiny_manifest, tmp_path / "run", "method.options.simclr.bogus=1")
    with pytest.raises(ConfigError, match="^unknown config key 'method.options.simclr.bogus'"):
        pretrain(cfg, progress=False)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------------
# Multi-label findings: (B, K) labels in {1, 0, -1}
# --------------------------------------------------------------------------------------------------

# LABELS as one-hot findings; an unlabelled image has every finding unknown
ONE_HOT = torch.stack(
    [F.one_hot(c.clamp_min(0), 3) if c >= 0 else torch.full((3,), -1) for c in LABELS]
)
# overlaps 1/3, empty sets, partly and wholly unknown rows (as tests/losses/test_multilabel_supcon)
MULTI = torch.tensor(
    [
        [1, 0, 1, 0],
        [1, 1, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
        [1, -1, 1, -1],
        [-1, -1, -1, -1],
        [-1, 1, -1, 0],
        [0, 1, 1, 1],
    ]
)


def _views() -> Tensor:
    return torch.rand(B, V, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1)).double()


def _step(module: PretrainModule, labels: Tensor) -> tuple[Tensor, dict[str, Tensor], list]:
    loss, logs = module.objective(_views(), labels, GROUPS)
    params = [p for p in module.parameters() if p.requires_grad]
    return loss, logs, list(torch.autograd.grad(loss, params, allow_unused=True))


@pytest.mark.parametrize("method", ["simclr", "moco", "dino"])
def test_one_hot_findings_give_the_single_label_objective(method):
    """Through the objective (SimCLR's one-matrix path, and the SupCon term of MoCo and DINO), a
    one-hot (B, K) batch gives the loss, logged parts and gradients of the (B,) class batch."""
    overrides = ("method.lambda_sup=0.7", "method.options.moco.queue_size=16")
    single = _step(make_module(method, *overrides), LABELS)
    multi = _step(make_module(method, *overrides), ONE_HOT)
    close = dict(atol=1e-9, rtol=1e-8)
    torch.testing.assert_close(multi[0], single[0], **close)
    assert multi[1].keys() == single[1].keys() and "sup" in single[1]
    for name in single[1]:
        torch.testing.assert_close(multi[1][name], single[1][name], **close)
    for got, want in zip(multi[2], single[2], strict=True):
        if want is None:
            assert got is None or not got.abs().any()
        else:
            torch.testing.assert_close(got, want, **close)
    assert float(single[1]["sup"]) > 0.1  # the term matters at these inputs


@pytest.mark.parametrize("method", ["simclr", "vicreg"])
def test_multilabel_objective_is_weighted_sum_of_the_loop_references(method):
    """λ1 · multi-label SupCon + λ2 · SSL, both from loop references (the Jaccard-weighted loop of
    tests/losses and NT-Xent's or VICReg's), values and gradients."""
    lam_sup, lam_ssl = 0.7, 1.3
    module = make_module(method, f"method.lambda_sup={lam_sup}", f"method.lambda_ssl={lam_ssl}")
    views = _views()
    z = module.method.projector(module.encoder(views.flatten(0, 1))).view(B, V, -1)
    sup = reference_multilabel(z, MULTI, GROUPS, TAU)
    if method == "simclr":
        ssl = reference_loss("ntxent", z, None, GROUPS, temperature=TAU)["loss"]
    else:
        ssl = reference_ssl(module, views, z)
    expected = lam_sup * sup + lam_ssl * ssl
    params = [p for p in module.parameters() if p.requires_grad]
    expected_grads = torch.autograd.grad(expected, params, allow_unused=True)
    loss, logs, grads = _step(module, MULTI)
    close = dict(atol=1e-8, rtol=1e-7)
    torch.testing.assert_close(loss, expected.detach(), **close)
    torch.testing.assert_close(logs["sup"], sup.detach(), **close)
    torch.testing.assert_close(logs["ssl"], ssl.detach(), **close)
    for got, want in zip(grads, expected_grads, strict=True):
        if want is None:
            assert got is None or not got.abs().any()
        else:
            torch.testing.assert_close(got, want, atol=1e-8, rtol=1e-6)
    # guard: the weighted positives matter here (the one-hot reading of these rows differs)
    one_hot_reading = reference_loss("sscl", z, MULTI.argmax(1), GROUPS, temperature=TAU)["sup"]
    assert abs(float((sup - one_hot_reading).detach())) > 1e-3


def test_moco_queue_stores_no_findings():
    """MoCo trains on (B, K) labels; its queue's labels (used only for label positives, which the
    objective does not ask for) stay -1."""
    module = make_module("moco", "method.options.moco.queue_size=16")
    loss, logs = module.objective(_views(), MULTI, GROUPS)
    queue = module.method.moco_loss
    assert math.isfinite(float(loss)) and float(logs["sup"]) > 0
    assert int(queue.queue_len) == B and (queue.queue_labels == -1).all()
