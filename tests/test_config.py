"""Strict config loading: unknown keys, bad types and values are refused before work starts."""

from __future__ import annotations

import pytest

from medcl.config import load_config, save_config
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
        ("method.name=swav", "method.name: expected one of"),
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
