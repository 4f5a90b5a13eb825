"""Configs written before the objectives' options moved under ``method.options`` still load:
each old ``method`` key becomes the option it was."""

from __future__ import annotations

from pathlib import Path

import yaml

from medcl.config import load_config
from medcl.config.legacy import migrate

OLD_DINO_RUN = Path(__file__).with_name("old_dino_run_config.yaml")
DINO_YAML = Path(__file__).parents[2] / "configs" / "pretrain" / "dino.yaml"


# old method key, a value, the (objective, option) pairs it becomes
MOVES = [
    ("queue_size", 8, [("moco", "queue_size")]),
    ("ema_base", 0.9, [("moco", "ema_base"), ("byol", "ema_base"), ("dino", "ema_base")]),
    ("dino_out_dim", 16, [("dino", "out_dim")]),
    ("dino_student_temp", 0.2, [("dino", "student_temp")]),
    ("dino_teacher_temp", 0.1, [("dino", "teacher_temp")]),
    ("dino_warmup_teacher_temp", 0.05, [("dino", "warmup_teacher_temp")]),
    ("dino_teacher_temp_warmup", 0.5, [("dino", "teacher_temp_warmup")]),
    ("dino_center_momentum", 0.8, [("dino", "center_momentum")]),
    ("vicreg_sim_weight", 1.0, [("vicreg", "sim_weight")]),
    ("vicreg_var_weight", 2.0, [("vicreg", "var_weight")]),
    ("vicreg_cov_weight", 3.0, [("vicreg", "cov_weight")]),
]


def test_every_old_key_moves_to_its_option():
    old = {"out": "x", "method": {"name": "moco", **{key: value for key, value, _ in MOVES}}}
    frozen = yaml.safe_dump(old)
    options: dict = {}
    for _, value, targets in MOVES:
        for name, option in targets:
            options.setdefault(name, {})[option] = value
    assert migrate(old) == {"out": "x", "method": {"name": "moco", "options": options}}
    assert yaml.safe_dump(old) == frozen  # the input is not changed
    new = {"method": {"name": "dino", "options": {"dino": {"out_dim": 8}}}}
    assert migrate(new) is new


def test_the_new_form_wins_within_a_mapping_and_a_later_source_wins_across():
    both = {"method": {"ema_base": 0.5, "options": {"dino": {"ema_base": 0.9}}}}
    assert migrate(both)["method"]["options"] == {
        "moco": {"ema_base": 0.5},
        "byol": {"ema_base": 0.5},
        "dino": {"ema_base": 0.9},
    }
    cfg = load_config(DINO_YAML, ["method.ema_base=0.5"])  # old key on the command line
    assert cfg.method.options["dino"]["ema_base"] == 0.5
    assert cfg.method.options["moco"] == {"ema_base": 0.5}
    cfg = load_config(OLD_DINO_RUN, ["method.options.dino.out_dim=64"])
    assert cfg.method.options["dino"]["out_dim"] == 64
    assert cfg.method.options["dino"]["ema_base"] == 0.996


def test_an_old_saved_config_loads_as_todays_shipped_one():
    """Everything but the other objectives' options is what today's dino.yaml gives."""
    old, new = load_config(OLD_DINO_RUN).to_dict(), load_config(DINO_YAML).to_dict()
    old_options, new_options = old["method"].pop("options"), new["method"].pop("options")
    # the file wrote efficiency.metric's default of then (balanced_accuracy; today auto), a
    # field no run depends on (RESUMABLE_FIELDS)
    assert old["efficiency"].pop("metric") == "balanced_accuracy"
    assert new["efficiency"].pop("metric") == "auto"
    assert old == new
    assert old_options["dino"] == new_options["dino"]
    assert set(old_options) == {"moco", "byol", "dino", "vicreg"} and set(new_options) == {"dino"}
