"""End-to-end pretraining on a tiny manifest: artifacts, methods, exact resume, refusals."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml

from medcl.cli.main import main
from medcl.config import derive, load_config
from medcl.errors import ConfigError, MedclError
from medcl.models.export import load_encoder
from medcl.train.pretrain import pretrain
from tests.conftest import TINY_OVERRIDES
from tests.train._stop import SimulatedKillError, StopAtEpoch

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
    enc, description = load_encoder(out)
    assert description.preset == "mr" and description.spec.image_size == 16
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
        queue_size = cfg.method.options["moco"]["queue_size"]
        assert int(sd["method.moco_loss.queue_len"]) == min(queue_size, pushed)
        assert int(sd["method.moco_loss.queue_ptr"]) == pushed % queue_size
    if method in ("moco", "byol"):
        for online in ("encoder.conv1.weight", "method.projector.net.3.weight"):
            target = "method.target_" + online.removeprefix("method.")
            assert not torch.allclose(sd[target], sd[online]), online
    else:
        assert not any(k.startswith("method.target_") for k in sd)
        assert "method.predictor.net.0.weight" in sd


def test_moco_queue_is_in_checkpoint(tiny_manifest, tmp_path):
    pretrain(
        _cfg(tiny_manifest, tmp_path / "m", "method.name=moco", "optim.epochs=1"), progress=False
    )
    ckpt = torch.load(tmp_path / "m/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    sd = ckpt["state_dict"]
    assert "method.moco_loss.queue" in sd and int(sd["method.moco_loss.queue_len"]) > 0


def test_killed_run_resumes_exactly(tiny_manifest, tmp_path):
    straight = pretrain(_cfg(tiny_manifest, tmp_path / "a", "optim.epochs=3"), progress=False)
    with pytest.raises(SimulatedKillError):
        pretrain(
            _cfg(tiny_manifest, tmp_path / "b", "optim.epochs=3"),
            progress=False,
            callbacks=[StopAtEpoch(2)],
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
    with pytest.raises(SimulatedKillError):
        pretrain(_cfg(tiny_manifest, tmp_path / "c"), progress=False, callbacks=[StopAtEpoch(1)])
    with pytest.raises(ConfigError, match="different config"):
        pretrain(_cfg(tiny_manifest, tmp_path / "c", "optim.lr=0.01"), progress=False)


def test_a_run_folder_saved_with_the_old_flat_keys_is_found_complete(tiny_manifest, tmp_path):
    """A finished MoCo run whose config.yaml holds the keys of before method.options (as the
    previous version wrote them) is the same run under today's config; it is not trained again.
    The old ema_base was also BYOL's and DINO's, which a MoCo run does not depend on. A changed
    option of its objective is refused."""
    moco = ["method.name=moco", "method.options.moco.ema_base=0.9", "optim.epochs=1"]
    cfg = _cfg(tiny_manifest, tmp_path / "m", *moco)
    first = pretrain(cfg, progress=False)
    saved = tmp_path / "m/config.yaml"
    old = yaml.safe_load(saved.read_text())
    assert old["method"].pop("options") == {"moco": {"queue_size": 32, "ema_base": 0.9}}
    old["method"].update(
        queue_size=32,
        ema_base=0.9,
        dino_out_dim=4096,
        dino_student_temp=0.1,
        dino_teacher_temp=0.07,
        dino_warmup_teacher_temp=0.04,
        dino_teacher_temp_warmup=0.3,
        dino_center_momentum=0.9,
        vicreg_sim_weight=25.0,
        vicreg_var_weight=25.0,
        vicreg_cov_weight=1.0,
    )
    saved.write_text(yaml.safe_dump(old, sort_keys=False))
    last = tmp_path / "m/checkpoints/last.ckpt"
    stamp = last.stat().st_mtime_ns
    again = pretrain(cfg, progress=False)
    assert again.steps == first.steps and last.stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="different config"):
        pretrain(derive(cfg, **{"method.options.moco.ema_base": 0.95}), progress=False)


def test_bad_inputs_refused_before_work(tmp_path, tiny_manifest):
    with pytest.raises(ConfigError, match="data.manifest"):
        pretrain(load_config(None, [f"out={tmp_path}/x"]), progress=False)
    with pytest.raises(ConfigError, match="bogus"):
        pretrain(_cfg(tiny_manifest, tmp_path / "d", "augment.options={bogus: 1}"), progress=False)
    assert not (tmp_path / "d").exists()


def _encoders_equal(a_dir, b_dir) -> bool:
    a, _ = load_encoder(a_dir)
    b, _ = load_encoder(b_dir)
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(pa, pb) for pa, pb in pairs)


def test_warm_start_from_a_prefix_continues_that_run_exactly(tiny_manifest, tmp_path):
    """A run started from another's epoch-2 checkpoint with the same config ends bit-identical
    (same threads, same deterministic CPU kernels: as for resuming); with λ1 switched on after the
    shared prefix, it is a different run of the same length."""
    from medcl.train.pretrain import prefix_checkpoint

    cfg = ["optim.epochs=4", "method.lambda_sup=1.0", "method.lambda_sup_start=0.5"]
    simclr = _cfg(tiny_manifest, tmp_path / "simclr", *cfg, "method.lambda_sup=0.0")
    a = pretrain(simclr, progress=False, save_prefix=2)
    prefix = prefix_checkpoint(tmp_path / "simclr", 2)
    assert prefix.is_file()
    same = _cfg(tiny_manifest, tmp_path / "same", *cfg, "method.lambda_sup=0.0")
    b = pretrain(same, progress=False, warm_start=prefix)
    assert b.steps == a.steps
    assert _encoders_equal(tmp_path / "simclr", tmp_path / "same")
    # and it really started there: its log has no step of the shared first two epochs
    logged = pd.read_csv(tmp_path / "same/logs/metrics.csv")
    assert (
        logged["epoch"].min() == 2
        and pd.read_csv(tmp_path / "simclr/logs/metrics.csv")["epoch"].min() == 0
    )
    sscl = pretrain(_cfg(tiny_manifest, tmp_path / "sscl", *cfg), progress=False, warm_start=prefix)
    assert sscl.steps == a.steps
    assert not _encoders_equal(tmp_path / "simclr", tmp_path / "sscl")
    assert json.loads((tmp_path / "sscl/run.json").read_text())["warm_start"] == str(prefix)
    with pytest.raises(MedclError, match="not found"):
        pretrain(_cfg(tiny_manifest, tmp_path / "x", *cfg), progress=False, warm_start="nope.ckpt")


def test_sup_ramp_starts_on_an_epoch_boundary_then_ramps():
    from medcl.train.module import PretrainModule
    from medcl.transforms import build_preset

    cfg = load_config(
        None,
        [*TINY, "optim.epochs=10", "method.lambda_sup_start=0.3", "method.lambda_sup_warmup=0.2"],
    )
    module = PretrainModule(cfg, build_preset("mr"), 2, 3)
    module.total_steps = 50  # 5 steps per epoch: λ1 is 0 for epochs 0-2 (steps 0-14)

    class _T:  # the only trainer field the ramp reads
        global_step = 0

    factors = {}
    for step in (0, 14, 15, 20, 25, 40):
        _T.global_step = step
        module._trainer = _T  # noqa: SLF001 - a stand-in trainer
        factors[step] = module.sup_ramp()
    assert factors[0] == factors[14] == 0.0
    # then linear over w·T = 10 steps
    assert factors[15] == pytest.approx(0.0) and factors[20] == pytest.approx(0.5)
    assert factors[25] == pytest.approx(1.0) and factors[40] == 1.0


def test_monitor_frequency_changes_what_is_reported_not_what_is_learned(tiny_manifest, tmp_path):
    """``trainer.monitor_every_n_epochs``: the kNN monitor runs after every N-th epoch only (0 =
    never), and the trained weights are those of a run monitored after every epoch."""
    runs = {}
    for n in (1, 2, 0):
        out = tmp_path / f"m{n}"
        r = pretrain(
            _cfg(tiny_manifest, out, "optim.epochs=3", f"trainer.monitor_every_n_epochs={n}"),
            progress=False,
        )
        log = pd.read_csv(out / "logs/metrics.csv")
        monitored = log.dropna(subset=["val/knn_bacc"]) if "val/knn_bacc" in log else log[:0]
        runs[n] = (load_encoder(out)[0].state_dict(), sorted(monitored["epoch"].astype(int)))
        assert r.steps > 0
    assert runs[1][1] == [0, 1, 2] and runs[2][1] == [1] and runs[0][1] == []
    for n in (2, 0):
        for k, v in runs[1][0].items():
            torch.testing.assert_close(runs[n][0][k], v, rtol=0, atol=1e-6, msg=k)


def test_monitor_frequency_refused_when_negative(tiny_manifest, tmp_path):
    with pytest.raises(ConfigError, match="trainer.monitor_every_n_epochs"):
        _cfg(tiny_manifest, tmp_path / "x", "trainer.monitor_every_n_epochs=-1")


def test_quiet_run_prints_no_loading_line(tiny_manifest, tmp_path, capsys):
    """``progress=False`` (e.g. inside ``medcl efficiency``): the training set's in-memory/streamed
    choice is logged, not printed; a console run prints it once."""
    pretrain(_cfg(tiny_manifest, tmp_path / "quiet", "optim.epochs=1"), progress=False)
    assert "held in memory" not in capsys.readouterr().err
    pretrain(_cfg(tiny_manifest, tmp_path / "console", "optim.epochs=1"), progress=True)
    assert capsys.readouterr().err.count("held in memory") == 1


def test_multilabel_manifest_pretrains_end_to_end(tiny_multilabel_manifest, tmp_path, capsys):
    """`medcl pretrain` on findings: multi-label SupCon in the loss, the per-finding kNN monitor
    (macro AUROC) instead of balanced accuracy, an encoder that loads."""
    out = tmp_path / "run"
    overrides = [f"data.manifest={tiny_multilabel_manifest}", f"out={out}", *TINY]
    assert main(["pretrain", *overrides, "optim.epochs=1", "method.lambda_sup=0.5"]) == 0
    assert "val/knn_macro_auroc" in capsys.readouterr().out
    m = json.loads((out / "run.json").read_text())["metrics"]
    assert m["train/sup"] > 0
    assert m["train/loss_epoch"] == pytest.approx(0.5 * m["train/sup"] + m["train/ssl"])
    assert 0.0 <= m["val/knn_macro_auroc"] <= 1.0 and "val/knn_bacc" not in m
    enc, description = load_encoder(out)
    assert description.classes == ["bright", "dark", "bar"]
    assert enc(torch.rand(2, 1, 16, 16)).shape == (2, enc.out_dim)


def test_pseudo_labels_refused_on_a_multilabel_manifest(tiny_multilabel_manifest, tmp_path, capsys):
    """One line naming the option and the manifest, before the run folder exists."""
    out = tmp_path / "run"
    overrides = [f"data.manifest={tiny_multilabel_manifest}", f"out={out}", *TINY]
    assert main(["pretrain", *overrides, "method.pseudo.enabled=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert "method.pseudo.enabled" in err and "multi-label" in err
    assert str(tiny_multilabel_manifest) in err and len(err.splitlines()) == 1
    assert not out.exists()
