"""Strict config loading: unknown keys, bad types and values are refused before work starts."""

from __future__ import annotations

import pytest
import yaml

from medcl.config import check_resume, derive, load_config, precision_for, save_config
from medcl.errors import ConfigError


def test_defaults_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("method:\n  name: moco\n  temperature: 0.2\noptim:\n  lr: 0.01\n")
    cfg = load_config(f, ["optim.lr=0.005", "augment.options={flip_lr: true}", "data.batch_size=8"])
    assert cfg.method.name == "moco" and cfg.method.temperature == 0.2
    assert cfg.optim.lr == 0.005 and cfg.data.batch_size == 8
    assert cfg.augment.options == {"flip_lr": True}
    assert cfg.model.encoder == "resnet18"


def test_int_accepted_for_float():
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "method.temprature=0.1",
            "unknown config key 'method.temprature' (did you mean 'temperature'?)",
        ),
        ("bogus.x=1", "unknown config key 'bogus'"),
        ("method.name=two words", "method.name: an objective name (an identifier"),
        ("method.name=1", "method.name: expected str"),
        ("finetune.weight_decay=-0.1", "finetune.weight_decay: must be ≥ 0"),
        ("finetune.warmup_fraction=1", "finetune.warmup_fraction: must be in [0, 1)"),
        ("optim.epochs=ten", "optim.epochs: expected int"),
        ("optim.lr=-1", "optim.lr: must be in (0, 10)"),
        ("augment.views=1", "augment.views"),
        ("data.labelled_share=1.5", "data.labelled_share"),
        ("data.images_per_patient=3", "must be a multiple of data.images_per_patient (3)"),
        ("method.lambda_sup=0", "lambda_sup and lambda_ssl are both 0"),
        ("optim.lr", "expected KEY=VALUE"),
    ],
)
def test_bad_values_refused(override, message):
    overrides = [override] + (["method.lambda_ssl=0"] if "lambda_sup=0" in override else [])
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)


def test_file_errors_name_the_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="c.yaml: invalid YAML"):
        load_config(f)
    f.write_text("optim:\n  lrr: 1\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown config key 'optim\.lrr'"):
        load_config(f)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_save_round_trip(tmp_path):
    cfg = load_config(None, ["method.name=byol", "augment.options={gamma_p: 0.3}"])
    p = save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(p) == cfg


def test_derive_is_a_validated_copy():
    """``derive`` replaces dotted fields in a copy, coerces like a file, merges options."""
    cfg = load_config(None, ["augment.options={flip_lr: true}"])
    new = derive(
        cfg,
        **{
            "finetune.epochs": 5,
            "optim.lr": 1e-5,  # JSON writes it as 1e-05, which YAML would read as a string
            "method.lambda_sup": 0,
            "augment.options": {"gamma_p": 0.3},
            "efficiency.seeds": (3, 4),
        },
    )
    assert new.finetune.epochs == 5 and cfg.finetune.epochs == 30
    assert new.optim.lr == pytest.approx(1e-5)
    assert isinstance(new.method.lambda_sup, float) and new.method.lambda_sup == 0.0
    assert new.augment.options == {"flip_lr": True, "gamma_p": 0.3}
    assert cfg.augment.options == {"flip_lr": True}
    assert new.efficiency.seeds == [3, 4]
    assert derive(cfg) == cfg and derive(cfg) is not cfg


@pytest.mark.parametrize(
    ("field", "value", "override"),
    [
        ("optim.lr", -1, "optim.lr=-1"),
        ("finetune.warmup_fraction", 1.5, "finetune.warmup_fraction=1.5"),
        ("optim.epochs", "ten", "optim.epochs=ten"),
        ("method.temprature", 0.1, "method.temprature=0.1"),
        ("method.name", "two words", "method.name=two words"),
    ],
)
def test_derive_refuses_what_load_config_refuses(field, value, override):
    """A bad derived value: the same one-line error as the same override at load time."""
    with pytest.raises(ConfigError) as loaded:
        load_config(None, [override])
    with pytest.raises(ConfigError) as derived:
        derive(load_config(None), **{field: value})
    assert str(derived.value) == str(loaded.value) and "\n" not in str(derived.value)


def test_check_resume(tmp_path):
    """Same config (up to out and data.num_workers) passes; any other field is refused with the
    caller's message; a saved file missing a field added later counts as its default."""
    cfg = load_config(None, ["out=a"])
    saved = tmp_path / "config.yaml"
    check_resume(saved, cfg, "refused")  # no saved config: nothing to compare
    save_config(cfg, saved)
    check_resume(saved, derive(cfg, **{"out": "b", "data.num_workers": 3}), "refused")
    with pytest.raises(ConfigError, match="^refused$"):
        check_resume(saved, derive(cfg, **{"finetune.lr": 0.5}), "refused")
    with pytest.raises(ConfigError, match="^refused$"):
        check_resume(saved, derive(cfg, **{"data.batch_size": 64}), "refused")
    old = yaml.safe_load(saved.read_text())
    del old["finetune"]["warmup_fraction"]  # as written before the field existed
    saved.write_text(yaml.safe_dump(old))
    check_resume(saved, cfg, "refused")
    old["finetune"]["bogus"] = 1  # no longer loads: compared as it stands
    saved.write_text(yaml.safe_dump(old))
    with pytest.raises(ConfigError, match="^refused$"):
        check_resume(saved, cfg, "refused")


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


@pytest.mark.parametrize("devices", ["0", "-2", "two", "[]", "[0, 0]", "true", "1.5"])
def test_malformed_devices_refused_on_load(devices):
    with pytest.raises(ConfigError, match="trainer.devices"):
        load_config(None, [f"trainer.devices={devices}"])


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


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_spawn_find_unused_parameters_true"])
def test_ddp_spawn_refused_on_load(strategy):
    """ddp_spawn would pickle the data module and crash with a traceback in the launcher."""
    with pytest.raises(ConfigError, match="trainer.strategy: ddp_spawn.*use ddp"):
        load_config(None, [f"trainer.strategy={strategy}"])
