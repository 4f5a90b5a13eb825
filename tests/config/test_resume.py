"""Resuming a run folder: the saved config must describe the same run, read in today's form (old
keys migrated, fields added since at their defaults, options at their objective's default taken
as absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import medcl.train.objectives  # noqa: F401  (gives check_resume the objectives' option defaults)
from medcl.config import check_resume, derive, load_config, save_config
from medcl.errors import ConfigError

OLD_DINO_RUN = Path(__file__).with_name("old_dino_run_config.yaml")
DINO_YAML = Path(__file__).parents[2] / "configs" / "pretrain" / "dino.yaml"


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


def test_a_run_folder_saved_with_the_old_flat_keys_resumes():
    """A DINO run's config.yaml written before options moved under method.options (flat
    method.dino_*, method.ema_base = 0.996, ...) describes the run today's dino.yaml describes."""
    current = load_config(DINO_YAML)
    check_resume(OLD_DINO_RUN, current, "refused", objectives=["dino"])
    check_resume(OLD_DINO_RUN, load_config(OLD_DINO_RUN), "refused")  # the old file itself
    for changed in ({"out_dim": 2048}, {"ema_base": 0.99}, {"teacher_temp": 0.05}):
        other = derive(current, **{"method.options.dino": changed})
        with pytest.raises(ConfigError, match="^refused$"):
            check_resume(OLD_DINO_RUN, other, "refused", objectives=["dino"])
    # the old ema_base was MoCo's and BYOL's too; a DINO run does not depend on theirs
    with pytest.raises(ConfigError, match="^refused$"):
        check_resume(OLD_DINO_RUN, current, "refused")


def test_options_at_their_defaults_count_as_absent(tmp_path):
    """An option written at its objective's default and one left out describe the same run;
    any other value, or options of a name that is no objective, differ; with ``objectives``
    only those objectives' options count."""
    cfg = load_config(None, ["method.name=moco"])
    saved = save_config(cfg, tmp_path / "config.yaml")

    def resumes(*changes: dict, objectives: list[str] | None = None) -> bool:
        new = cfg
        for change in changes:
            new = derive(new, **change)
        try:
            check_resume(saved, new, "refused", objectives=objectives)
        except ConfigError:
            return False
        return True

    assert resumes({"method.options.moco.queue_size": 4096})  # the default
    assert resumes({"method.options.dino": {"ema_base": 0.99, "out_dim": 4096}, "out": "b"})
    assert resumes({"method.options.simclr": {}})
    assert not resumes({"method.options.moco.queue_size": 8})
    assert not resumes({"method.options.swav": {"k": 1}})  # no such objective: as it stands
    vicreg = {"method.options.vicreg.cov_weight": 2.0}
    assert not resumes(vicreg)
    assert resumes(vicreg, objectives=["moco"])
    assert not resumes(vicreg, objectives=["moco", "vicreg"])
