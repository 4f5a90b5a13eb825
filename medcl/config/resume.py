"""When a run folder may be continued: the saved config must describe the same run.

:func:`check_resume` compares the folder's saved ``config.yaml`` with the config of the run about
to continue, field by field, except :data:`RESUMABLE_FIELDS`. Both are read in today's form: the
saved file as :func:`~medcl.config.loading.load_config` reads one (old keys migrated, a field added
since it was written at its default), and ``method.options`` with each option at its objective's
default dropped, so that an option written out at its default and one left out describe the same
run. The defaults are the objectives' own: :mod:`medcl.train.objectives` tells this module where
they are when it is imported (:func:`set_option_defaults`), as both callers, pretraining and the
label-efficiency experiment, do. A caller may also name the objectives whose options its results
depend on (a pretraining: its own), so that another objective's options do not matter.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from medcl.config.legacy import migrate
from medcl.config.loading import from_mapping
from medcl.config.schema import Config
from medcl.errors import ConfigError

RESUMABLE_FIELDS = (
    "out",
    "data.num_workers",
    "trainer.monitor_every_n_epochs",
    "efficiency.metric",
)
"""Fields that may differ between a run and its resumption (``efficiency.metric`` heads the
experiment's report and comparisons, no run depends on it; its default became ``auto``)."""

OptionDefaults = Callable[[str], Mapping[str, Any] | None]
"""Objective name → its options' defaults (None for a name that is no objective)."""

_option_defaults: list[OptionDefaults] = []


def set_option_defaults(lookup: OptionDefaults) -> None:
    """Where :func:`check_resume` finds each objective's option defaults.

    Args:
        lookup: Objective name → ``{option: default}``, or None for an unknown name.
    """
    _option_defaults[:] = [lookup]


def _without_defaults(options: dict[str, Any]) -> dict[str, Any]:
    """``method.options`` without the options at their objective's default (entries of names
    no registered objective has are kept as they are)."""
    out: dict[str, Any] = {}
    for name, given in options.items():
        defaults = _option_defaults[0](name) if _option_defaults else None
        if defaults is None or not isinstance(given, dict | None):
            out[name] = given
            continue
        kept = {k: v for k, v in (given or {}).items() if k not in defaults or v != defaults[k]}
        if kept:
            out[name] = kept
    return out


def _comparable(d: dict[str, Any], objectives: set[str] | None) -> dict[str, Any]:
    d = json.loads(json.dumps(d))
    for dotted in RESUMABLE_FIELDS:
        *parents, leaf = dotted.split(".")
        node = d
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    method = d.get("method")
    if isinstance(method, dict) and isinstance(method.get("options"), dict):
        options = method["options"]
        if objectives is not None:
            options = {k: v for k, v in options.items() if k in objectives}
        method["options"] = _without_defaults(options)
    return d


def check_resume(
    saved: str | Path, current: Config, refusal: str, objectives: Iterable[str] | None = None
) -> None:
    """Refuse to continue in a folder whose saved ``config.yaml`` describes another run.

    The two configs are compared field by field, except :data:`RESUMABLE_FIELDS`. The saved file
    is read as :func:`~medcl.config.loading.load_config` reads one, so an old key is migrated
    (:mod:`medcl.config.legacy`) and a field added to :class:`~medcl.config.schema.Config` since
    it was written counts as its default; a file that no longer loads is compared as it stands.
    An objective's option at its default counts as absent (see the module docstring).

    Args:
        saved: The folder's saved config (nothing is checked when the file does not exist).
        current: The config of the run about to continue.
        refusal: The message of the error (what the folder holds and what to do instead).
        objectives: The objectives whose ``method.options`` the folder's results depend on
            (None: all).

    Raises:
        ConfigError: ``refusal``, when the configs differ.
    """
    p = Path(saved)
    if not p.is_file():
        return
    before = yaml.safe_load(p.read_text()) or {}
    if isinstance(before, dict):
        before = migrate(before)
    try:
        before = from_mapping(Config, before, "").to_dict()
    except ConfigError:
        pass
    keep = None if objectives is None else set(objectives)
    if _comparable(before, keep) != _comparable(current.to_dict(), keep):
        raise ConfigError(refusal)
