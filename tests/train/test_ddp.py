"""Lightning DDP executed: ``medcl pretrain`` with 2 CPU processes (gloo) against 1 process.

The 2-process runs are fresh processes: the real command line (``python -m medcl.cli.main
pretrain … trainer.accelerator=cpu trainer.devices=2 trainer.strategy=ddp``), or for the resume
test a script calling :func:`~medcl.train.pretrain.pretrain` that can stop it and records each
rank's steps. Lightning's DDP launcher starts rank 1 by re-running that command line with
``LOCAL_RANK=1``: plain ``ddp`` (not ``ddp_spawn``) works because the command is a script, not
pytest itself, which the launcher would re-run.

Parity after the first optimiser step. For one optimiser step of the 2-process run to equal one
step of a 1-process run on the union of the two ranks' batches, three things must hold:

- the same samples: rank ``r`` takes batch ``r`` of the sampler's stream of ``2·B``-row batches
  (``MixedBatchSampler``); one process with ``data.batch_size = 2B`` draws the same stream, so
  its batch holds both ranks' rows (labelled rows and unlabelled rows each in rank order);
- the same views: the augmentation generator is seeded per rank, so the test uses the identity
  preset (every ``p_*`` 0) and both runs see the images themselves;
- the same forward pass: batch-norm normalises by the statistics of the batch on the device
  (SyncBatchNorm only runs on CUDA). Here every rank's batch is the *whole* training pool (pool
  size ``B``: the sampler's stream is two permutations of the pool, one per rank), so a rank's
  batch statistics equal those of the union, and every sample's activations agree.

Then the gradients agree (the losses gather embeddings, labels and patient ids with gradients and
scale by the world size, DDP averages; read back from AdamW's first moment), and AdamW's first step
``−lr·g/(|g|+ε)`` moves the parameters by the same amounts: tolerance 1e-5 on parameters of size
~0.1 moved by ``lr = 1e-3``. Two kinds of entries have no determined step and are left to the
gradient check: conv biases followed by batch-norm (gradient 0 in exact arithmetic, rounding noise
here) and entries whose gradient is at the noise level of its tensor; for both, AdamW's
normalisation turns noise into ±lr. Batch-norm running statistics are buffers, not parameters:
DDP broadcasts rank 0's (its unbiased variance counts ``B`` rows, the 1-process run ``2B``), so
they are not compared.

Resume: a 2-process run stopped at the start of its third epoch (after the epoch-2 checkpoint)
and run again ends with the same step count and parameters as an uninterrupted 2-process run.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medcl.config import Config, load_config
from medcl.data.manifest import Manifest, new_frame, read_manifest
from medcl.errors import ConfigError
from medcl.evaluate.efficiency import run_efficiency
from medcl.evaluate.finetune import finetune
from medcl.train.module import _no_decay
from medcl.train.pretrain import pretrain
from tests.conftest import TINY_OVERRIDES, make_manifest

# every probability of the MR preset 0: the views are the images (see medcl.transforms.options)
IDENTITY = (
    "augment.options={p_affine: 0, p_crop: 0, p_gamma: 0, p_contrast: 0, p_blur: 0, "
    "p_noise: 0, p_bias: 0, p_rician: 0, p_motion: 0, p_ghosting: 0, p_spike: 0, "
    "p_anisotropy: 0}"
)
DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")

# 6 train patients × 3 images = 18 training rows (6 labelled, natural share 1/3), 3 val patients
POOL = 18


def _manifest(tmp_path: Path) -> Path:
    return make_manifest(tmp_path / "data", n_patients=9, per_patient=3, labelled_patients=2)


def _env() -> dict[str, str]:
    """This environment without a launcher's variables (Lightning would join that launch)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "PMI_", "OMPI_"))
        and k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR")
        and k not in ("MASTER_PORT", "GROUP_RANK", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID")
    }
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _cli_pretrain(overrides: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``medcl pretrain OVERRIDES`` in a fresh process (Lightning starts rank 1 from it)."""
    r = _run(["-m", "medcl.cli.main", "pretrain", *overrides], cwd)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def _params(run: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in _checkpoint(run)["state_dict"].items() if not k.endswith(BUFFERS)}


def _first_gradients(run: Path) -> dict[str, torch.Tensor]:
    """The gradient of the first optimiser step, read back from AdamW's state.

    After one step the first moment is ``m = (1 − β1)·g`` exactly. The optimiser's parameter
    groups are the module's parameters in order, those with weight decay first
    (``PretrainModule.configure_optimizers``).
    """
    ckpt = _checkpoint(run)
    sd = {k: v for k, v in ckpt["state_dict"].items() if not k.endswith(BUFFERS)}
    decay = [k for k in sd if not _no_decay(k, sd[k])]
    order = decay + [k for k in sd if _no_decay(k, sd[k])]
    (opt,) = ckpt["optimizer_states"]
    beta1 = opt["param_groups"][0]["betas"][0]
    out = {}
    for i, k in enumerate(order):
        assert int(opt["state"][i]["step"]) == 1
        out[k] = opt["state"][i]["exp_avg"] / (1 - beta1)
        assert out[k].shape == sd[k].shape, k
    return out


def _worst(a: dict, b: dict, relative: bool = False) -> tuple[str, float]:
    """The tensor with the largest max |a − b| (relative to max |b| if asked), and that value."""
    assert a.keys() == b.keys()
    diffs = {}
    for k in a:
        d = (a[k].double() - b[k].double()).abs().max().item()
        diffs[k] = d / max(b[k].abs().max().item(), 1e-30) if relative else d
    k = max(diffs, key=diffs.__getitem__)
    return k, diffs[k]


def test_two_processes_equal_one_on_the_global_batch(tmp_path):
    manifest = _manifest(tmp_path)
    common = [
        f"data.manifest={manifest}",
        *TINY_OVERRIDES,
        IDENTITY,
        "optim.epochs=1",
        "optim.max_steps=1",
    ]
    two = tmp_path / "two"
    _cli_pretrain([*common, f"out={two}", f"data.batch_size={POOL}", *DDP], tmp_path)
    one = tmp_path / "one"
    pretrain(
        load_config(None, [*common, f"out={one}", f"data.batch_size={2 * POOL}"]), progress=False
    )
    g2, g1 = _first_gradients(two), _first_gradients(one)
    # Conv biases followed by batch-norm have gradient 0 in exact arithmetic (BN subtracts the
    # batch mean): what the runs hold there is rounding noise (~1e-6 against gradients ~1), and
    # AdamW's first step turns any noise into ±lr. Both runs must agree that it is noise.
    null = {k for k in g1 if g1[k].abs().max() < 1e-4}
    assert null == {k for k in g2 if g2[k].abs().max() < 1e-4}
    assert all(k.endswith("downsample.0.bias") for k in null)
    live = [k for k in g1 if k not in null]
    name, err = _worst({k: g2[k] for k in live}, {k: g1[k] for k in live}, relative=True)
    assert err < 1e-4, f"gradient of {name}: relative difference {err:.3g}"
    # AdamW's first step is lr·g/(|g| + ε): where a gradient is itself at the noise level
    # (~1e-6 of its tensor's largest; e.g. taps that nearly cancel), rounding decides between
    # ±lr·(1 − ε/|g|). The parameters are compared wherever the gradient is determined.
    p2, p1 = _params(two), _params(one)
    checked, worst = 0, ("", 0.0)
    for k in live:
        sure = g1[k].abs() > 1e-4 * g1[k].abs().max()
        checked += int(sure.sum())
        err = (p2[k] - p1[k])[sure].abs().max().item()
        worst = max(worst, (k, err), key=lambda t: t[1])
    assert worst[1] <= 1e-5, f"{worst[0]}: parameters differ by {worst[1]:.3g} after one step"
    assert checked > 0.9 * sum(int((g1[k] != 0).sum()) for k in live)
    # the check can fail: the same step without the other rank's rows (one process, one rank's
    # batch; what a DDP run without the cross-rank gather would compute) is far off
    local = tmp_path / "local"
    pretrain(
        load_config(None, [*common, f"out={local}", f"data.batch_size={POOL}"]), progress=False
    )
    gl = _first_gradients(local)
    assert _worst({k: gl[k] for k in live}, {k: g1[k] for k in live}, relative=True)[1] > 1e-2
    assert _worst({k: _params(local)[k] for k in live}, {k: p1[k] for k in live})[1] > 1e-3


def _no_cuda(monkeypatch, cores: int = 2) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trainer.accelerator=gpu", "trainer.accelerator"),
        ("trainer.devices=3", "trainer.devices"),
        ("trainer.sync_batchnorm=true", "trainer.sync_batchnorm"),
    ],
)
def test_hardware_refused_before_any_data_is_read(monkeypatch, tmp_path, override, key):
    """Pretraining, fine-tuning and the efficiency experiment refuse a request this machine
    cannot serve before they open the manifest (here a file that does not exist)."""
    _no_cuda(monkeypatch, cores=2)
    missing = tmp_path / "missing.csv"
    cfg = load_config(None, [f"data.manifest={missing}", f"out={tmp_path / 'r'}", override])
    with pytest.raises(ConfigError, match=key):
        pretrain(cfg, progress=False)
    with pytest.raises(ConfigError, match=key):
        run_efficiency(cfg, missing, tmp_path / "eff", log=lambda s: None, progress=False)
    with pytest.raises(ConfigError, match=key):
        finetune(cfg, Manifest(new_frame([]), []))  # an empty manifest: fails if read
    assert not (tmp_path / "r").exists() and not (tmp_path / "eff").exists()


def test_finetune_takes_the_trainer_keys_on_one_device(tmp_path, caplog):
    """DDP keys in a fine-tuning config: it runs (one device, by design) and says so once."""
    manifest = read_manifest(_manifest(tmp_path))
    cfg = load_config(
        None,
        [*TINY_OVERRIDES, *DDP, "trainer.precision=32-true", "finetune.mode=full"],
    )
    with caplog.at_level(logging.WARNING, logger="medcl.evaluate.finetune"):
        res = finetune(cfg, manifest)
    assert 0 <= res.val_balanced_accuracy <= 1
    lines = [r.getMessage() for r in caplog.records if "one device" in r.getMessage()]
    assert len(lines) == 1 and "trainer.devices=2" in lines[0] and "\n" not in lines[0]
    caplog.clear()
    finetune(load_config(None, [*TINY_OVERRIDES, "finetune.mode=linear"]), manifest)
    assert not [r for r in caplog.records if "one device" in r.getMessage()]


def test_efficiency_runs_every_arm_on_one_device(tmp_path, monkeypatch):
    """``medcl efficiency`` with DDP keys: one line, then every run gets a one-device config
    (accelerator and precision kept)."""
    import medcl.evaluate.efficiency as eff

    manifest = make_manifest(tmp_path / "data", n_patients=12, labelled_patients=4, test_patients=3)
    cfg = load_config(
        None,
        [
            *TINY_OVERRIDES,
            *DDP,
            "trainer.precision=32-true",
            "optim.epochs=1",
            "finetune.epochs=1",
            "efficiency.methods=[simclr]",
            "efficiency.fractions=[1.0]",
            "efficiency.seeds=[0]",
            "efficiency.linear_probe=false",
            "efficiency.fair_budget=false",
            "efficiency.n_boot=10",
        ],
    )
    seen = []
    real_pretrain, real_finetune = eff.pretrain, eff.finetune

    def record(c: Config) -> None:
        t = c.trainer
        seen.append((t.accelerator, t.devices, t.num_nodes, t.strategy, t.precision))

    def pretrain_spy(c: Config, *args: object, **kwargs: object) -> object:
        record(c)
        return real_pretrain(c, *args, **kwargs)

    def finetune_spy(c: Config, *args: object, **kwargs: object) -> object:
        record(c)
        return real_finetune(c, *args, **kwargs)

    monkeypatch.setattr(eff, "pretrain", pretrain_spy)
    monkeypatch.setattr(eff, "finetune", finetune_spy)
    lines: list[str] = []
    result = run_efficiency(cfg, manifest, tmp_path / "eff", log=lines.append, progress=False)
    assert [r["method"] for r in result.records] == ["simclr"]
    assert len(seen) == 2  # the pretraining and its fine-tuning
    assert set(seen) == {("cpu", 1, 1, "auto", "32-true")}
    notes = [s for s in lines if "one device" in s]
    assert len(notes) == 1 and "trainer.strategy=ddp" in notes[0]


# the real pretraining in a script that can stop it (a callback that raises at the start of an
# epoch, as a killed run would stop) and can record the optimiser step of every training batch of
# each rank; Lightning starts rank 1 by re-running it with the same arguments
DRIVER = """\
import sys
from pathlib import Path

from medcl.config import Config, load_config
from medcl.data.manifest import Manifest, new_frame, read_manifest
from medcl.errors import ConfigError
from medcl.evaluate.efficiency import run_efficiency
from medcl.evaluate.finetune import finetune
from medcl.train.module import PretrainModule
from medcl.train.pretrain import pretrain
from lightning.pytorch.callbacks import Callback

stop, record, *overrides = sys.argv[1:]


class StopAtEpoch(Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch >= int(stop):
            raise RuntimeError(f"interrupted at epoch {stop} (simulated kill)")


step = PretrainModule.training_step


def recorded(self, batch, batch_idx):
    with open(Path(record + f".rank{self.global_rank}"), "a") as f:
        f.write(f"{self.global_step}\\n")
    return step(self, batch, batch_idx)


PretrainModule.training_step = recorded
callbacks = [StopAtEpoch()] if int(stop) else []
r = pretrain(load_config(None, overrides), progress=False, callbacks=callbacks)
print(f"resumed={r.resumed} steps={r.steps}")
"""


def _recorded_steps(record: Path, rank: int) -> list[int]:
    return [int(s) for s in Path(f"{record}.rank{rank}").read_text().split()]


@pytest.mark.slow
def test_two_process_run_killed_and_rerun_resumes(tmp_path):
    manifest = _manifest(tmp_path)
    common = [
        f"data.manifest={manifest}",
        *TINY_OVERRIDES,
        "data.batch_size=4",  # 18 rows // (4 × 2 ranks) = 2 steps per epoch
        "optim.epochs=3",
        *DDP,
    ]
    straight = tmp_path / "straight"
    _cli_pretrain([*common, f"out={straight}"], tmp_path)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    resumed = tmp_path / "resumed"
    # the same run, stopped at the start of epoch 3 (after its epoch-2 checkpoint) on both ranks
    killed = tmp_path / "killed"
    r = _run([str(driver), "2", str(killed), *common, f"out={resumed}"], tmp_path)
    assert r.returncode != 0 and "interrupted" in r.stderr, r.stderr[-3000:]
    assert _recorded_steps(killed, 0) == _recorded_steps(killed, 1) == [0, 1, 2, 3]
    assert _checkpoint(resumed)["global_step"] == 4
    assert not (resumed / "encoder.pt").exists()
    # run again: it continues from the checkpoint (steps 4 and 5 only) on both ranks
    again = tmp_path / "again"
    r = _run([str(driver), "0", str(again), *common, f"out={resumed}"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed=True steps=6" in r.stdout
    assert _recorded_steps(again, 0) == _recorded_steps(again, 1) == [4, 5]
    name, err = _worst(_params(resumed), _params(straight))
    assert err <= 1e-6, f"{name}: resumed and uninterrupted runs differ by {err:.3g}"
