"""Resume from a mid-epoch checkpoint (``trainer.checkpoint_every_n_steps``) to the weights of an
uninterrupted run; a checkpoint interrupted while being written is never read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from subprocess import PIPE

import pytest
import torch

from medcl.models.export import load_encoder
from medcl.train.pretrain import pretrain
from tests.train._stop import SimulatedKillError, StopAtStep
from tests.train.test_pretrain import _cfg

# 27 training images in batches of 4: 6 steps per epoch, a checkpoint every 2 steps
EVERY = ("optim.epochs=2", "data.batch_size=4", "trainer.checkpoint_every_n_steps=2")


def _same_encoders(a, b) -> None:
    ea, _ = load_encoder(a)
    eb, _ = load_encoder(b)
    for (name, pa), pb in zip(ea.state_dict().items(), eb.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    from tests.conftest import make_manifest

    root = tmp_path_factory.mktemp("resume")
    manifest = make_manifest(root / "data")
    r = pretrain(_cfg(manifest, root / "straight", *EVERY), progress=False)
    assert r.steps == 12
    return manifest, root / "straight"


def _last(run) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


@pytest.mark.parametrize("stop", [3, 9])
def test_mid_epoch_checkpoint_resumes_exactly(straight, tmp_path, stop):
    """Killed after step 3 (epoch 0) or 9 (epoch 1): last.ckpt is the step-2 or step-8 checkpoint,
    mid-epoch, with the loader's position; the resumed run skips the batches already seen."""
    manifest, ref = straight
    run = tmp_path / "run"
    with pytest.raises(SimulatedKillError):
        pretrain(_cfg(manifest, run, *EVERY), progress=False, callbacks=[StopAtStep(stop)])
    ckpt = _last(run)
    assert ckpt["global_step"] == stop - 1 and ckpt["epoch"] == (stop - 1) // 6
    assert ckpt["PretrainData"]["train_loader"]["batches"] == (stop - 1) % 6
    resumed = pretrain(_cfg(manifest, run, *EVERY), progress=False)
    assert resumed.resumed and resumed.steps == 12
    _same_encoders(ref, run)


def test_a_checkpoint_write_killed_half_way_is_never_read(straight, tmp_path, monkeypatch):
    """The step-4 save of last.ckpt dies after writing half its bytes: last.ckpt stays the whole
    step-2 checkpoint (nothing half-written replaces it), the resume continues from there."""
    manifest, ref = straight
    run = tmp_path / "run"
    real_save = torch.save
    saves = {"n": 0}

    def dies_half_way(obj, f, *args, **kwargs):
        writing_last = "last.ckpt" in os.path.basename(str(f))  # itself or its temporary
        if writing_last and isinstance(obj, dict) and obj.get("global_step") == 4:
            saves["n"] += 1
            real_save(obj, f, *args, **kwargs)
            with open(f, "r+b") as fh:
                fh.truncate(fh.seek(0, 2) // 2)
            raise SimulatedKillError("killed while writing a checkpoint")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(SimulatedKillError):
        pretrain(_cfg(manifest, run, *EVERY), progress=False)
    monkeypatch.setattr(torch, "save", real_save)
    assert saves["n"] == 1
    assert _last(run)["global_step"] == 2  # whole, and the one before the interrupted save
    assert not list((run / "checkpoints").glob(".*.tmp"))
    resumed = pretrain(_cfg(manifest, run, *EVERY), progress=False)
    assert resumed.resumed and resumed.steps == 12
    _same_encoders(ref, run)


def _pretrain_cmd(manifest, out) -> list[str]:
    from tests.train.test_pretrain import TINY

    args = [f"data.manifest={manifest}", f"out={out}", *TINY, *EVERY]
    return [sys.executable, "-m", "medcl.cli.main", "pretrain", *args]


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> bool:
    """``kill -9`` ``proc`` as soon as ``ready()`` holds (polled); False if it ended first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    return False


def test_a_real_kill_mid_epoch_resumes_exactly(straight, tmp_path):
    """``medcl pretrain`` in its own process, ``kill -9`` once a mid-epoch checkpoint exists, then
    the same command again: the weights of the uninterrupted run."""
    manifest, ref = straight
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    proc = subprocess.Popen(_pretrain_cmd(manifest, run), stdout=subprocess.DEVNULL, stderr=PIPE)
    mid_epoch = lambda: any(ckpts.glob("step-step=[2-4].ckpt")) and (ckpts / "last.ckpt").exists()  # noqa: E731
    assert kill_when(proc, mid_epoch), proc.stderr.read()
    assert proc.returncode == -signal.SIGKILL and not (run / "encoder.pt").exists()
    assert _last(run)["global_step"] < 6  # killed in the first epoch
    again = subprocess.run(_pretrain_cmd(manifest, run), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert json.loads((run / "run.json").read_text())["resumed"] is True
    _same_encoders(ref, run)
