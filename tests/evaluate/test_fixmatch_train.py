"""fit_fixmatch on a tiny cached manifest: epochs and early stopping, restored best-val weights,
the schedule over the cap, the batches of each step, the unlabelled term, seeds, the views and
their options, and the training step's loss against an independent computation."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score
from torch import nn

import medcl.evaluate.finetune as finetune_module
import medcl.evaluate.fitting as fitting
from medcl.config import Config, derive, load_config
from medcl.data.dataset import CachedImages, manifest_geometry
from medcl.data.manifest import Manifest, read_manifest
from medcl.errors import ConfigError
from medcl.evaluate.classifier import Classifier
from medcl.evaluate.finetune import base_description, finetune
from medcl.evaluate.fixmatch import (
    FixMatchModule,
    _step_indices,
    fit_fixmatch,
    fixmatch_presets,
)
from medcl.models.encoders import EncoderSpec, build_encoder
from medcl.optim.schedule import warmup_cosine
from medcl.transforms import make_options
from medcl.transforms.options import MROptions
from tests.conftest import TINY_OVERRIDES, make_manifest

EPOCH = 8  # steps per epoch: max(12 labelled images, 8 batches of 8) // 8


@dataclass
class Tiny:
    cfg: Config
    lab: CachedImages
    unl: CachedImages
    val: CachedImages
    clf: Classifier  # untrained template; every run trains a deep copy
    manifest: Manifest


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """``fit_fixmatch`` is called directly (``finetune()`` would set ``trainer.threads``): one
    thread, as the config asks, also when this file runs alone on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Tiny:
    m = read_manifest(make_manifest(tmp_path_factory.mktemp("fixmatch") / "data"))
    cfg = load_config(None, [*TINY_OVERRIDES, "trainer.accelerator=cpu"])
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


@dataclass
class Run:
    score: float
    details: dict[str, Any]
    clf: Classifier
    checks: list[tuple[float, dict[str, torch.Tensor]]]  # every validation: (score, weights)
    lrs: list[tuple[int, float]]  # (step, head lr) at every validation
    batches: list[tuple[int, torch.Tensor, torch.Tensor]]  # (step, labelled, unlabelled images)


def _fit(
    tiny: Tiny,
    seed: int = 0,
    unl: CachedImages | None = None,
    epochs: int = 3,
    patience: int = 10,
    scores: list[float] | None = None,
    **fixmatch: Any,
) -> Run:
    """One run from the template's initial weights, watching its hooks; ``scores`` replaces the
    validation balanced accuracies in order; ``fixmatch`` sets ``finetune.fixmatch_<name>``."""
    over = {f"finetune.fixmatch_{k}": v for k, v in fixmatch.items()}
    cfg = derive(
        tiny.cfg,
        **{"trainer.seed": seed, "finetune.epochs": epochs, "finetune.patience": patience},
        **over,
    )
    clf = copy.deepcopy(tiny.clf)
    run = Run(0.0, {}, clf, [], [], [])
    scripted: Iterator[float] | None = None if scores is None else iter(scores)
    real_bacc = fitting.balanced_accuracy_score
    val_end = FixMatchModule.on_validation_epoch_end
    step = FixMatchModule.training_step

    def bacc(y: Any, pred: Any) -> float:
        return float(real_bacc(y, pred)) if scripted is None else next(scripted)

    def spy_val(self: FixMatchModule) -> None:
        pred = torch.cat(self._probs).argmax(1).numpy()
        score = float(bacc(torch.cat(self._labels).numpy(), pred))
        run.checks.append((score, copy.deepcopy(self.clf.state_dict())))
        run.lrs.append((int(self.global_step), self.optimizers().param_groups[1]["lr"]))
        with pytest.MonkeyPatch.context() as mp:  # the module sees the same score
            mp.setattr(fitting, "balanced_accuracy_score", lambda *_: score)
            val_end(self)

    def spy_step(self: FixMatchModule, batch: Any, batch_idx: int) -> torch.Tensor:
        run.batches.append((int(self.global_step), batch[0].clone(), batch[2].clone()))
        return step(self, batch, batch_idx)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FixMatchModule, "on_validation_epoch_end", spy_val)
        mp.setattr(FixMatchModule, "training_step", spy_step)
        run.score, run.details = fit_fixmatch(
            clf, tiny.lab, tiny.unl if unl is None else unl, tiny.val, cfg, 3, pretrained=False
        )
    return run


@pytest.fixture(scope="module")
def run_a(tiny: Tiny) -> Run:
    """Every unlabelled image pseudo-labelled (τ = 0), λ_u = 1, 3 epochs without early stop."""
    return _fit(tiny, threshold=0.0, lambda_u=1.0)


def _params(clf: Classifier) -> torch.Tensor:
    return torch.cat(
        [p.detach().flatten() for p in clf.state_dict().values() if p.is_floating_point()]
    )


def test_returns_val_bacc_of_the_restored_best_weights(tiny: Tiny, run_a: Run) -> None:
    d = run_a.details
    assert (d["steps"], d["epochs_run"]) == (3 * EPOCH, 3)
    assert (d["mu"], d["threshold"], d["lambda_u"]) == (3, 0.0, 1.0)
    assert d["mask_rate"] == pytest.approx(1.0)  # τ = 0 keeps every pseudo-label
    # one validation after every epoch
    assert [s for s, _ in run_a.lrs] == [EPOCH, 2 * EPOCH, 3 * EPOCH]
    # independent recomputation on the weights that were loaded back
    pred = run_a.clf.predict_proba(tiny.val.images).argmax(1).numpy()
    assert run_a.score == pytest.approx(balanced_accuracy_score(tiny.val.labels.numpy(), pred))
    # they are the weights of the first best validation, not the last step's
    scores = [s for s, _ in run_a.checks]
    best = scores.index(max(scores))
    assert run_a.score == pytest.approx(max(scores))
    assert d["best_step"] == (best + 1) * EPOCH
    for k, v in run_a.checks[best][1].items():
        torch.testing.assert_close(run_a.clf.state_dict()[k], v)
    assert not torch.allclose(_params(run_a.clf), _params(tiny.clf))  # it trained


@pytest.mark.parametrize(
    ("scores", "patience", "epochs_run", "best"),
    [
        ([0.5, 0.6, 0.6, 0.55, 0.9], 2, 4, 1),  # best at epoch 2, then 2 without improvement
        ([0.5, 0.5, 0.5, 0.5, 0.5], 1, 2, 0),
        ([0.1, 0.1, 0.2, 0.2, 0.2], 2, 5, 2),  # the improvement at epoch 3 restarts the count
    ],
)
def test_early_stopping_on_validation(
    tiny: Tiny, scores: list[float], patience: int, epochs_run: int, best: int
) -> None:
    run = _fit(tiny, epochs=5, patience=patience, scores=scores)
    assert [s for s, _ in run.checks] == scores[:epochs_run]
    assert run.details["epochs_run"] == epochs_run
    assert run.details["steps"] == epochs_run * EPOCH
    assert run.details["best_step"] == (best + 1) * EPOCH
    assert run.score == scores[best]  # exact: a scripted value
    for k, v in run.checks[best][1].items():
        assert torch.equal(run.clf.state_dict()[k], v)


def test_schedule_spans_the_cap_and_batches_continue_across_epochs(tiny: Tiny) -> None:
    """An early stop cuts the schedule of all ``epochs × steps`` steps part-way; step ``t`` trains
    on the ``t``-th batch drawn for the whole cap."""
    run = _fit(tiny, epochs=5, patience=1, scores=[0.5] * 5)
    assert run.details["steps"] == 2 * EPOCH
    ft = tiny.cfg.finetune
    cap = 5 * EPOCH
    warm = max(1, math.floor(cap * ft.warmup_fraction))
    for step, lr in run.lrs:
        assert lr == pytest.approx(ft.lr * warmup_cosine(step, cap, warm), rel=1e-6)
    lab_idx, unl_idx = _step_indices(
        tiny.lab, tiny.unl, cap, ft.batch_size, 3 * ft.batch_size, ft.balance, 3, 0
    )
    assert [t for t, _, _ in run.batches] == list(range(2 * EPOCH))
    for t, x_lab, x_unl in run.batches:
        assert torch.equal(x_lab, tiny.lab.images[lab_idx[t]])
        assert torch.equal(x_unl, tiny.unl.images[unl_idx[t]])


def test_unlabelled_images_change_training(tiny: Tiny, run_a: Run) -> None:
    with_u = _params(run_a.clf)
    without = _params(_fit(tiny, threshold=0.0, lambda_u=0.0).clf)
    assert not torch.allclose(with_u, without)
    # a threshold that no pseudo-label reaches is the same as λ_u = 0
    none_kept = _fit(tiny, threshold=1.0, lambda_u=1.0)
    assert none_kept.details["mask_rate"] == 0.0
    torch.testing.assert_close(_params(none_kept.clf), without)


def test_deterministic_for_a_seed(tiny: Tiny, run_a: Run) -> None:
    again = _fit(tiny, threshold=0.0, lambda_u=1.0)
    torch.testing.assert_close(_params(again.clf), _params(run_a.clf))
    assert again.score == run_a.score and again.details == run_a.details
    # the seed drives batches and augmentations (same initial weights)
    short = [_params(_fit(tiny, seed=s, epochs=1, threshold=0.0).clf) for s in (0, 1)]
    assert not torch.allclose(short[0], short[1])


def test_empty_unlabelled_pool(tiny: Tiny) -> None:
    empty = _rows(tiny, tiny.unl, 0)
    assert len(empty) == 0
    run = _fit(tiny, unl=empty, epochs=2)
    assert 0.0 <= run.score <= 1.0 and run.details["mask_rate"] == 0.0
    assert run.details["steps"] == 2 * EPOCH and len(run.checks) == 2


def test_patient_pooling_and_alignment_train(tiny: Tiny, run_a: Run) -> None:
    """Each option changes training (the step itself is checked against a reference below)."""
    pooled = _fit(tiny, threshold=0.0, patients=3)
    aligned = _fit(tiny, threshold=0.0, align=True)
    for run in (pooled, aligned):
        assert run.details["steps"] == 3 * EPOCH
        assert not torch.allclose(_params(run.clf), _params(run_a.clf))
    # pooled runs hold 3 images of one patient (the tiny patients have 3 images each)
    groups = tiny.unl.groups.tolist()
    for x_unl in (b[2] for b in pooled.batches):
        assert x_unl.shape[0] == 24
        for run_start in range(0, 24, 3):
            run_images = x_unl[run_start : run_start + 3]
            rows = [
                next(i for i in range(len(tiny.unl)) if torch.equal(tiny.unl.images[i], x))
                for x in run_images
            ]
            assert len({groups[r] for r in rows}) == 1 and len(set(rows)) == 3


def test_step_indices(tiny: Tiny) -> None:
    lab, unl = _step_indices(tiny.lab, tiny.unl, 5, 4, 12, "weights", 3, 0)
    assert lab.shape == (5, 4) and unl.shape == (5, 12)
    assert int(lab.max()) < len(tiny.lab)
    pool = len(tiny.unl)  # 15
    flat = unl.flatten()
    for s in range(0, 60 - pool + 1, pool):  # successive permutations of the unlabelled pool
        assert sorted(flat[s : s + pool].tolist()) == list(range(pool))
    # ``sampler``: labelled images drawn with class-balancing weights
    y = torch.tensor([0] * 10 + [1] * 2)
    skewed = _rows(tiny, tiny.lab, 12)
    skewed.labels = y
    bal, _ = _step_indices(skewed, _rows(tiny, tiny.unl, 0), 500, 8, 0, "sampler", 3, 0)
    share = (y[bal.flatten()] == 1).float().mean()
    assert 0.45 < float(share) < 0.55


def test_step_indices_by_patient(tiny: Tiny) -> None:
    """``patients = 2``: runs of 2 distinct images of one patient, every patient once before any
    twice; the labelled draw is the one without pooling."""
    lab1, _ = _step_indices(tiny.lab, tiny.unl, 6, 4, 10, "weights", 3, 0)
    lab, unl = _step_indices(tiny.lab, tiny.unl, 6, 4, 10, "weights", 3, 0, patients=2)
    assert torch.equal(lab, lab1) and unl.shape == (6, 10)
    groups = tiny.unl.groups[unl.flatten()].reshape(-1, 2)
    images = unl.flatten().reshape(-1, 2)
    assert bool((groups[:, 0] == groups[:, 1]).all())
    assert bool((images[:, 0] != images[:, 1]).all())
    n_patients = len(set(tiny.unl.groups.tolist()))  # 5
    patients = groups[:, 0].tolist()
    for s in range(0, len(patients) - n_patients + 1, n_patients):
        assert sorted(patients[s : s + n_patients]) == sorted(set(tiny.unl.groups.tolist()))


def test_weak_views_are_milder_than_strong(tiny: Tiny) -> None:
    module = FixMatchModule(copy.deepcopy(tiny.clf), tiny.cfg, None, False)
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


def test_view_options_merge_in_order() -> None:
    """strong = preset ← augment.options ← fixmatch_strong; weak = geometry of strong ←
    fixmatch_weak."""
    weak, strong = fixmatch_presets(
        "mr",
        {"rotate_deg": 20, "p_blur": 0.4, "p_noise": 0.3},
        2,
        strong={"p_blur": 0.0, "scale_range": [0.95, 1.05]},
        weak={"flip_lr": True, "translate_frac": 0.02, "p_noise": 0.1},
    )
    default = MROptions()
    s, w = strong.options, weak.options
    assert (s.rotate_deg, s.p_blur, s.p_noise, s.scale_range) == (20, 0.0, 0.3, (0.95, 1.05))
    assert s.p_gamma == default.p_gamma and not s.flip_lr
    assert (w.rotate_deg, w.scale_range, w.flip_lr, w.translate_frac) == (
        20,
        (0.95, 1.05),
        True,
        0.02,
    )
    assert w.p_noise == 0.1  # set by fixmatch_weak after the geometry-only derivation
    assert w.p_gamma == w.p_blur == w.p_bias == 0.0  # derived: geometry only


@pytest.mark.parametrize(
    ("field", "options", "needle"),
    [
        ("fixmatch_strong", "{rotate_degrees: 5}", "rotate_degrees"),
        ("fixmatch_weak", "{p_blur: 2}", "p_blur"),
    ],
)
def test_bad_view_options_are_refused_before_any_image_is_read(
    tiny: Tiny, monkeypatch: pytest.MonkeyPatch, field: str, options: str, needle: str
) -> None:
    def no_images(*_: Any) -> Any:
        raise AssertionError("images were read before the options were checked")

    monkeypatch.setattr(finetune_module, "_datasets", no_images)
    cfg = load_config(None, [*TINY_OVERRIDES, f"finetune.{field}={options}"])
    for mode in ("fixmatch", "full"):  # checked whatever the mode once they are set
        with pytest.raises(ConfigError, match=rf"^finetune\.{field}: .*{needle}") as err:
            finetune(derive(cfg, **{"finetune.mode": mode}), tiny.manifest)
        assert "\n" not in str(err.value)


def test_patients_must_divide_the_unlabelled_batch() -> None:
    with pytest.raises(ConfigError, match=r"finetune\.fixmatch_patients: must divide"):
        load_config(None, [*TINY_OVERRIDES, "finetune.fixmatch_patients=5"])  # μB = 24


# ---- the training step against an independent computation ------------------------------------


def _linear(n_in: int, n_out: int, g: torch.Generator) -> nn.Linear:
    """``nn.Linear`` with standard normal weights from ``g`` and no bias."""
    layer = nn.Linear(n_in, n_out)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(n_out, n_in, generator=g))
        layer.bias.zero_()
    return layer


class _Pooled(nn.Module):
    """A deterministic encoder without batch statistics: 4×4 average pooling, centred and
    scaled so that predictions vary between images, then linear."""

    out_dim = 5

    def __init__(self, g: torch.Generator) -> None:
        super().__init__()
        self.fc = _linear(16, self.out_dim, g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc((F.adaptive_avg_pool2d(x, 4).flatten(1) - 0.3) * 5)


def _weak_probs(clf: nn.Module, x: torch.Tensor) -> list[list[float]]:
    with torch.no_grad():
        return torch.softmax(clf(x), 1).tolist()


def _log_softmax(row: list[float]) -> list[float]:
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def _reference_step_loss(
    f: nn.Module,
    lab_w: torch.Tensor,
    y: list[int],
    unl_w: torch.Tensor,
    unl_s: torch.Tensor,
    groups: list[int] | None,
    prior: list[float] | None,
    lam: float,
) -> tuple[Callable[[float], tuple[float, float]], list[float]]:
    """``CE(f(weak lab), y) + λ · mean_u 1(max q_u ≥ τ) CE(f(strong u), argmax q_u)``, one image
    at a time in Python floats; ``q_u`` aligned to ``prior`` (first step: ``p̃`` = this batch's
    mean) and then averaged over ``groups``. Returns ``τ → (loss, share kept)`` and the
    confidences ``max q_u``."""

    def logits(x: torch.Tensor) -> list[list[float]]:
        with torch.no_grad():
            return [f(img[None])[0].tolist() for img in x]

    lab, weak, strong = logits(lab_w), logits(unl_w), logits(unl_s)
    sup = sum(-_log_softmax(row)[c] for row, c in zip(lab, y, strict=True)) / len(y)
    q = [[math.exp(v) for v in _log_softmax(row)] for row in weak]
    n_c = len(q[0])
    if prior is not None:
        marginal = [sum(row[c] for row in q) / len(q) for c in range(n_c)]
        q = [[row[c] * prior[c] / marginal[c] for c in range(n_c)] for row in q]
        q = [[v / sum(row) for v in row] for row in q]
    if groups is not None:
        q = [
            [
                sum(q[j][c] for j in range(len(q)) if groups[j] == groups[i])
                / sum(1 for j in range(len(q)) if groups[j] == groups[i])
                for c in range(n_c)
            ]
            for i in range(len(q))
        ]

    def at(tau: float) -> tuple[float, float]:
        total, kept = 0.0, 0
        for qu, su in zip(q, strong, strict=True):
            if max(qu) >= tau:
                kept += 1
                total += -_log_softmax(su)[qu.index(max(qu))]
        return sup + lam * total / len(q), kept / len(q)

    return at, [max(qu) for qu in q]


@pytest.mark.parametrize("nograd", [False, True])
@pytest.mark.parametrize(("align", "patients"), [(False, 1), (True, 1), (False, 3), (True, 3)])
def test_training_step_loss_against_a_reference(
    tiny: Tiny, align: bool, patients: int, nograd: bool
) -> None:
    """The step's loss on a fixed batch equals the hand computation: labelled part from the
    labelled weak views, pseudo-labels from the unlabelled weak views, cross-entropy on the
    strong ones (swapping any two parts changes the value)."""
    lam = 0.7
    over = {
        "finetune.fixmatch_lambda_u": lam,
        "finetune.fixmatch_align": align,
        "finetune.fixmatch_patients": patients,
        "finetune.fixmatch_weak_nograd": nograd,
    }
    g = torch.Generator().manual_seed(7)
    clf = Classifier(_Pooled(g), _linear(5, 3, g), tiny.clf.description)
    prior = torch.tensor([0.5, 0.3, 0.2])
    x_lab, y = tiny.lab.images[:6], tiny.lab.labels[:6]
    x_unl, groups = tiny.unl.images[:9], tiny.unl.groups[:9]  # 3 patients × 3 images
    probe = FixMatchModule(clf, derive(tiny.cfg, **over), None, False, class_prior=prior)
    views = probe.views(x_lab, x_unl, probe.step_generator(torch.device("cpu")))
    reference, confidences = _reference_step_loss(
        clf,
        views[0],
        y.tolist(),
        views[1],
        views[2],
        groups.tolist() if patients > 1 else None,
        prior.tolist() if align else None,
        lam,
    )
    # midway between two distinct middle confidences: some kept, some masked, none at the edge
    levels = sorted(set(confidences))
    low, high = levels[len(levels) // 2 - 1], levels[len(levels) // 2]
    assert high - low > 1e-4
    tau = (low + high) / 2
    ref, kept = reference(tau)
    assert 0 < kept < 1, "the batch must have both masked and kept pseudo-labels"
    assert len({max(range(3), key=row.__getitem__) for row in _weak_probs(clf, views[1])}) > 1
    cfg = derive(tiny.cfg, **over, **{"finetune.fixmatch_threshold": tau})
    module = FixMatchModule(clf, cfg, None, False, class_prior=prior)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")  # no trainer here
        loss = module.training_step((x_lab, y, x_unl, groups), 0)
    assert float(loss) == pytest.approx(ref, rel=2e-5)  # float32 forward vs Python floats
    assert float(module.mask_rates[-1]) == pytest.approx(kept)
    loss.backward()
    assert clf.head.weight.grad is not None and bool(clf.head.weight.grad.abs().sum() > 0)


def test_confidence_on_validation_matches_an_explicit_loop() -> None:
    """FixMatch's pseudo-label coverage and accuracy on labelled validation images at τ, against
    a loop over the images one by one."""

    from torch.utils.data import DataLoader, TensorDataset

    from medcl.evaluate.fixmatch import confident_on

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 3)

        def normalize(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * x

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(x)

    gen = torch.Generator().manual_seed(0)
    net = Net()
    with torch.no_grad():
        net.head.weight.copy_(3 * torch.randn(3, 4, generator=gen))
    x = torch.randn(50, 4, generator=gen)
    y = torch.randint(0, 3, (50,), generator=gen)
    dummy = torch.zeros(50)
    loader = DataLoader(TensorDataset(x, y, dummy, dummy), batch_size=16)
    for tau in (0.5, 0.9, 1.01):
        sure = right = 0
        for i in range(50):
            p = torch.softmax(net.head(2 * x[i]), 0)
            if float(p.max()) >= tau:
                sure += 1
                right += int(int(p.argmax()) == int(y[i]))
        coverage, accuracy = confident_on(net, loader, tau)
        assert coverage == pytest.approx(sure / 50)
        if sure:
            assert 0 < sure < 50 or tau == 0.5
            assert accuracy == pytest.approx(right / sure)
        else:
            assert math.isnan(accuracy)
