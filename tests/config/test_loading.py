"""Strict config loading: unknown keys, bad types and values are refused before work starts;
overrides and derived changes merge section by section, ``method.options`` option by option."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medcl.config import derive, load_config, save_config
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
        ("data.patch_overlap=1", "data.patch_overlap: must be in [0, 1), got 1.0"),
        ("model.width=0", "model.width: must be in (0, 4], got 0.0"),
        ("method.temperature=11", "method.temperature: must be in (0, 10], got 11.0"),
        ("method.lambda_sup_start=1", "method.lambda_sup_start: must be in [0, 1), got 1.0"),
        ("finetune.fixmatch_threshold=2", "finetune.fixmatch_threshold: must be in [0, 1], got"),
        ("finetune.epoch_steps=-1", "finetune.epoch_steps: must be ≥ 0, got -1"),
        ("data.batch_size=0", "data.batch_size: must be positive, got 0"),
        ("method.options=3", "method.options: expected dict, got 3"),
        ("method.options.dino=3", "method.options.dino: expected a mapping of dino's options"),
        ("method.options={1: {}}", "method.options: keys are objective names"),
        ("method.pseudo.threshold=1.5", "method.pseudo.threshold: must be in [0, 1], got 1.5"),
        ("method.pseudo.start=1", "method.pseudo.start: must be in [0, 1), got 1.0"),
        ("method.pseudo.ramp=-0.1", "method.pseudo.ramp: must be in [0, 1], got -0.1"),
        ("method.pseudo.head_weight=0", "method.pseudo.head_weight: must be positive, got 0.0"),
        ("method.pseudo.pool_patients=true", "needs method.group_positives: true"),
        ("method.pseudo.treshold=0.5", "'method.pseudo.treshold' (did you mean 'threshold'?)"),
        ("method.pseudo=3", "method.pseudo: expected a mapping"),
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


@pytest.mark.parametrize("devices", ["0", "-2", "two", "[]", "[0, 0]", "true", "1.5"])
def test_malformed_devices_refused_on_load(devices):
    with pytest.raises(ConfigError, match="trainer.devices"):
        load_config(None, [f"trainer.devices={devices}"])


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_spawn_find_unused_parameters_true"])
def test_ddp_spawn_refused_on_load(strategy):
    """ddp_spawn would pickle the data module and crash with a traceback in the launcher."""
    with pytest.raises(ConfigError, match="trainer.strategy: ddp_spawn.*use ddp"):
        load_config(None, [f"trainer.strategy={strategy}"])


def test_method_options_merge_option_by_option(tmp_path):
    """A later source changes one option of one objective and keeps the rest; augment.options
    keeps its one-level merge (an option's value is replaced whole)."""
    f = tmp_path / "c.yaml"
    f.write_text(
        "method:\n  options:\n    dino: {out_dim: 8, student_temp: 0.2}\n"
        "    vicreg: {sim_weight: 1.0}\n"
        "augment:\n  options: {gamma: {p: 1, q: 2}, flip_lr: true}\n"
    )
    cfg = load_config(f, ["method.options.dino.out_dim=16", "augment.options.gamma={p: 3}"])
    assert cfg.method.options == {
        "dino": {"out_dim": 16, "student_temp": 0.2},
        "vicreg": {"sim_weight": 1.0},
    }
    assert cfg.augment.options == {"gamma": {"p": 3}, "flip_lr": True}
    new = derive(
        cfg,
        **{
            "method.options": {"moco": {"queue_size": 8}, "vicreg": {"cov_weight": 2.0}},
            "method.options.dino.teacher_temp": 0.05,
        },
    )
    assert new.method.options == {
        "dino": {"out_dim": 16, "student_temp": 0.2, "teacher_temp": 0.05},
        "vicreg": {"sim_weight": 1.0, "cov_weight": 2.0},
        "moco": {"queue_size": 8},
    }
    assert cfg.method.options["dino"] == {"out_dim": 16, "student_temp": 0.2}  # not changed


def test_reading_a_config_does_not_import_torch(tmp_path):
    """Loading, deriving, saving and checking resumption stay free of torch (a config is read
    by every command, the light ones too)."""
    code = (
        "import sys\n"
        "from medcl.config import check_resume, derive, load_config, save_config\n"
        "cfg = derive(load_config(None, ['method.options.dino.out_dim=8']), out='x')\n"
        f"p = save_config(cfg, {str(tmp_path / 'c.yaml')!r})\n"
        "check_resume(p, cfg, 'refused')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pseudo_labels_are_a_nested_section_off_by_default(tmp_path):
    """``method.pseudo``: off by default; a dotted override or a derive changes one field and
    keeps the others; it is saved and read back."""
    cfg = load_config(None)
    assert not cfg.method.pseudo.enabled and cfg.method.pseudo.threshold == 0.9
    on = derive(cfg, **{"method.pseudo.enabled": True})
    assert on.method.pseudo.enabled and on.method.pseudo.threshold == 0.9
    again = load_config(None, ["method.pseudo.threshold=0.8", "method.pseudo.enabled=true"])
    assert again.method.pseudo == derive(on, **{"method.pseudo.threshold": 0.8}).method.pseudo
    pooled = load_config(None, ["method.group_positives=true", "method.pseudo.pool_patients=true"])
    assert pooled.method.pseudo.pool_patients
    path = save_config(again, tmp_path / "c.yaml")
    assert load_config(path).method.pseudo == again.method.pseudo
