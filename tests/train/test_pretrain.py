"""End-to-end pretraining on a tiny manifest: artifacts, methods, exact resume, refusals."""

from __future__ import annotations

import json

import pytest
import torch

from medcl.config import load_config
from medcl.errors import ConfigError, MedclError
from medcl.models.export import load_encoder
from medcl.train.pretrain import pretrain
from tests.conftest import TINY_OVERRIDES

TINY = [*TINY_OVERRIDES, "optim.epochs=2"]


def _cfg(manifest, out, *extra):
    return load_config(None, [f"data.manifest={manifest}", f"out={out}", *TINY, *extra])


def test_simclr_sscl_run_folder(tiny_manifest, tmp_path):
    r = pretrain(_cfg(tiny_manifest, tmp_path / "run"), progress=False)
    out = tmp_path / "run"
    for name in (
        "config.yaml",
        "encoder.pt",
        "run.json",
        "checkpoints/last.ckpt",
        "logs/metrics.csv",
    ):
        assert (out / name).exists(), name
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete" and info["steps"] == r.steps > 0
    assert "val/knn_bacc" in r.metrics
    enc, meta = load_encoder(out)
    assert meta["preset"] == "mr" and meta["image_size"] == 16
    assert enc(torch.rand(2, 1, 16, 16)).shape == (2, enc.out_dim)
    # a second call finds the run complete and does nothing
    again = pretrain(_cfg(tiny_manifest, out), progress=False)
    assert not again.resumed and again.steps == r.steps


@pytest.mark.parametrize("method", ["moco", "byol", "simsiam"])
def test_other_methods_train(tiny_manifest, tmp_path, method):
    cfg = _cfg(tiny_manifest, tmp_path / method, f"method.name={method}", "optim.epochs=1")
    r = pretrain(cfg, progress=False)
    assert r.steps > 0 and torch.isfinite(torch.tensor(r.metrics["train/loss_epoch"]))


def test_moco_queue_is_in_checkpoint(tiny_manifest, tmp_path):
    pretrain(
        _cfg(tiny_manifest, tmp_path / "m", "method.name=moco", "optim.epochs=1"), progress=False
    )
    ckpt = torch.load(tmp_path / "m/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    sd = ckpt["state_dict"]
    assert "moco.queue" in sd and int(sd["moco.queue_len"]) > 0


def test_killed_run_resumes_exactly(tiny_manifest, tmp_path):
    straight = pretrain(_cfg(tiny_manifest, tmp_path / "a", "optim.epochs=3"), progress=False)
    with pytest.raises(MedclError, match="interrupted"):
        pretrain(
            _cfg(tiny_manifest, tmp_path / "b", "optim.epochs=3"), progress=False, _stop_at_epoch=2
        )
    assert (tmp_path / "b/checkpoints/last.ckpt").exists()
    assert not (tmp_path / "b/encoder.pt").exists()
    resumed = pretrain(_cfg(tiny_manifest, tmp_path / "b", "optim.epochs=3"), progress=False)
    assert resumed.resumed and resumed.steps == straight.steps
    a, _ = load_encoder(tmp_path / "a")
    b, _ = load_encoder(tmp_path / "b")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_changed_config_refused_on_resume(tiny_manifest, tmp_path):
    with pytest.raises(MedclError):
        pretrain(_cfg(tiny_manifest, tmp_path / "c"), progress=False, _stop_at_epoch=1)
    with pytest.raises(ConfigError, match="different config"):
        pretrain(_cfg(tiny_manifest, tmp_path / "c", "optim.lr=0.01"), progress=False)


def test_bad_inputs_refused_before_work(tmp_path, tiny_manifest):
    with pytest.raises(ConfigError, match="data.manifest"):
        pretrain(load_config(None, [f"out={tmp_path}/x"]), progress=False)
    with pytest.raises(ConfigError, match="bogus"):
        pretrain(_cfg(tiny_manifest, tmp_path / "d", "augment.options={bogus: 1}"), progress=False)
    assert not (tmp_path / "d").exists()
