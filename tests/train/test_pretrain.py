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


# the range of each method's SSL term: InfoNCE >= 0 (> 0 once the queue holds keys), BYOL's two
# summed 2 - 2cos terms in [0, 8], SimSiam's averaged -cos in [-1, 1]
SSL_RANGE = {"moco": (1e-6, float("inf")), "byol": (0.0, 8.0), "simsiam": (-1.0, 1.0)}


@pytest.mark.parametrize("method", ["moco", "byol", "simsiam"])
def test_other_methods_train(tiny_manifest, tmp_path, method):
    """A real run: epoch loss = λ1·sup + λ2·ssl of the logged parts, the SSL term in its range,
    MoCo's queue holds one batch of keys per step, EMA targets lag the online networks."""
    cfg = _cfg(
        tiny_manifest,
        tmp_path / method,
        f"method.name={method}",
        "optim.epochs=1",
        "method.lambda_sup=0.5",
        "method.lambda_ssl=2.0",
    )
    r = pretrain(cfg, progress=False)
    m = r.metrics
    assert r.steps > 0
    # every batch has the same size, so epoch means are linear in the parts
    assert m["train/loss_epoch"] == pytest.approx(0.5 * m["train/sup"] + 2.0 * m["train/ssl"])
    low, high = SSL_RANGE[method]
    assert low <= m["train/ssl"] <= high and m["train/sup"] > 0
    ckpt = torch.load(
        tmp_path / method / "checkpoints/last.ckpt", map_location="cpu", weights_only=False
    )
    sd = ckpt["state_dict"]
    if method == "moco":
        pushed = cfg.data.batch_size * r.steps
        assert int(sd["moco.queue_len"]) == min(cfg.method.queue_size, pushed)
        assert int(sd["moco.queue_ptr"]) == pushed % cfg.method.queue_size
    if method in ("moco", "byol"):
        for name in ("encoder.conv1.weight", "projector.net.3.weight"):
            assert not torch.allclose(sd[f"target_{name}"], sd[name]), name
    else:
        assert not any(k.startswith("target_") for k in sd) and "predictor.net.0.weight" in sd


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
