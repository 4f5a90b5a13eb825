"""What this machine can serve: requests it cannot are refused in one line naming the key, before
any work; the precision and SyncBatchNorm rules; the machine is probed once per process."""

from __future__ import annotations

import pytest

from medcl.config import load_config, precision_for
from medcl.config.hardware import this_machine
from medcl.errors import ConfigError


@pytest.mark.parametrize(
    ("overrides", "cuda", "expected"),
    [
        ([], True, "bf16-mixed"),
        ([], False, "32-true"),
        (["trainer.accelerator=cpu"], True, "32-true"),
        (["trainer.accelerator=gpu"], True, "bf16-mixed"),
        (["trainer.precision=16-mixed"], False, "16-mixed"),
    ],
)
def test_precision_rule(monkeypatch, overrides, cuda, expected):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert precision_for(load_config(None, overrides)) == expected


# ---------------------------------------------------------------- hardware (issue 12)
def _hw(monkeypatch, cuda: int, cores: int = 4):
    """Pretend this machine has ``cuda`` GPUs (0 = none) and ``cores`` CPU cores."""
    import os

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)


@pytest.mark.parametrize(
    ("overrides", "cuda", "key"),
    [
        (["trainer.accelerator=gpu"], 0, "trainer.accelerator"),
        (["trainer.accelerator=cuda", "trainer.devices=1"], 0, "trainer.accelerator"),
        (["trainer.accelerator=gpu", "trainer.devices=4"], 2, "trainer.devices"),
        (["trainer.accelerator=auto", "trainer.devices=3"], 2, "trainer.devices"),
        (["trainer.accelerator=gpu", "trainer.devices=[0, 2]"], 2, "trainer.devices"),
        (["trainer.accelerator=gpu", "trainer.devices='1,2'"], 2, "trainer.devices"),
        (["trainer.accelerator=cpu", "trainer.devices=5"], 0, "trainer.devices"),
        (["trainer.accelerator=cpu", "trainer.devices=5"], 8, "trainer.devices"),
        (["trainer.devices=5"], 0, "trainer.devices"),
        (["trainer.accelerator=cpu", "trainer.devices=[0, 1]"], 0, "trainer.devices"),
        (["trainer.accelerator=cpu", "trainer.devices=-1"], 0, "trainer.devices"),
        (["trainer.accelerator=cpu", "trainer.sync_batchnorm=true"], 2, "trainer.sync_batchnorm"),
        (["trainer.sync_batchnorm=true", "trainer.devices=2"], 0, "trainer.sync_batchnorm"),
    ],
)
def test_hardware_requests_refused(monkeypatch, overrides, cuda, key):
    _hw(monkeypatch, cuda, cores=4)
    cfg = load_config(None, overrides)  # loading does not look at the machine
    with pytest.raises(ConfigError, match=key) as err:
        cfg.trainer.check_hardware()
    assert "\n" not in str(err.value) and str(err.value).startswith(key)


@pytest.mark.parametrize(
    ("overrides", "cuda"),
    [
        ([], 0),
        ([], 2),
        (["trainer.accelerator=cpu", "trainer.devices=4", "trainer.strategy=ddp"], 0),
        (["trainer.accelerator=cpu", "trainer.devices='2'"], 8),
        (["trainer.accelerator=gpu", "trainer.devices=2", "trainer.sync_batchnorm=true"], 2),
        (["trainer.accelerator=gpu", "trainer.devices=[1]"], 2),
        (["trainer.accelerator=gpu", "trainer.devices=-1"], 2),
        (["trainer.devices=auto", "trainer.sync_batchnorm=false"], 0),
    ],
)
def test_hardware_requests_served(monkeypatch, overrides, cuda):
    _hw(monkeypatch, cuda, cores=4)
    load_config(None, overrides).trainer.check_hardware()


@pytest.mark.parametrize(
    ("overrides", "cuda", "expected"),
    [
        # auto: SyncBN only on CUDA with more than one device in all (devices × nodes)
        (["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"], 0, False),
        (["trainer.accelerator=cpu", "trainer.devices=2", "trainer.num_nodes=2"], 4, False),
        (["trainer.devices=2"], 0, False),  # auto accelerator on a machine without CUDA
        (["trainer.devices=2"], 2, True),
        (["trainer.accelerator=gpu", "trainer.devices=1"], 4, False),
        (["trainer.accelerator=gpu", "trainer.devices=1", "trainer.num_nodes=2"], 4, True),
        (["trainer.accelerator=gpu", "trainer.devices=[0, 1]"], 4, True),
        (["trainer.accelerator=gpu", "trainer.devices='0,1'"], 4, True),
        (["trainer.devices=auto"], 1, False),
        (["trainer.devices=auto"], 4, True),  # Lightning's auto takes every GPU
        (["trainer.devices=-1"], 4, True),
        (["trainer.devices=auto"], 0, False),
        # an explicit value stands (true on the CPU is refused by check_hardware)
        (["trainer.devices=2", "trainer.sync_batchnorm=false"], 2, False),
        (["trainer.devices=1", "trainer.sync_batchnorm=true"], 2, True),
    ],
)
def test_sync_batchnorm_resolution(monkeypatch, overrides, cuda, expected):
    _hw(monkeypatch, cuda, cores=8)
    assert load_config(None, overrides).trainer.sync_batchnorm_on() is expected


def test_the_machine_is_probed_once_per_process(monkeypatch):
    """Many runs' checks and readings (as in one `medcl efficiency` command) probe torch once."""
    import os

    import torch

    calls = {"is_available": 0, "device_count": 0, "cpu_count": 0}

    def counted(name, value):
        def probe():
            calls[name] += 1
            return value

        return probe

    monkeypatch.setattr(torch.cuda, "is_available", counted("is_available", True))
    monkeypatch.setattr(torch.cuda, "device_count", counted("device_count", 2))
    monkeypatch.setattr(os, "cpu_count", counted("cpu_count", 4))
    for devices in ("auto", "1", "2", "-1"):
        t = load_config(None, [f"trainer.devices={devices}"]).trainer
        t.check_hardware()
        assert t.uses_cuda() and t.device_count() == (
            2 if devices in ("auto", "-1") else int(devices)
        )
        assert t.sync_batchnorm_on() == (t.device_count() > 1)
        assert precision_for(load_config(None)) == "bf16-mixed"
    assert calls == {"is_available": 1, "device_count": 1, "cpu_count": 1}
    assert this_machine().gpus == 2
    this_machine.cache_clear()  # as a new process would, probe again
    with pytest.raises(ConfigError, match="more GPUs than the 2"):
        load_config(None, ["trainer.devices=3"]).trainer.check_hardware()
    assert calls == {"is_available": 2, "device_count": 2, "cpu_count": 2}
