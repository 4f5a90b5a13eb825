"""Objectives as small classes: a new one is a subclass plus one registry line, and trains through
the real pretraining path; an unknown ``method.name`` is refused before any work."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from medcl.config import load_config
from medcl.errors import ConfigError
from medcl.train.module import PretrainModule
from medcl.train.objectives import OBJECTIVES, Objective, ViewBatch, objective_class, register
from medcl.train.pretrain import pretrain
from medcl.transforms import build_preset
from tests.conftest import TINY_OVERRIDES


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
