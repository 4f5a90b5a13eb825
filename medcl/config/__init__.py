"""One configuration object that flows from the CLI through every stage.

A run is described by :class:`Config`, a tree of dataclasses loaded from YAML and then patched with
command-line overrides (``section.key=value``, values parsed as YAML). Loading is strict and happens
before any work: an unknown key, a value of the wrong type or outside its range is refused with one
:class:`~medcl.errors.ConfigError` that names the field (and suggests the closest valid key). A
loaded config is changed only through :func:`derive`, which validates the result as
:func:`load_config` does. Reading a config does not import torch.

The package, by concern:

- :mod:`~medcl.config.schema`: the sections and their checks (:class:`Config`,
  :class:`MethodConfig`, ...), with the range checks of :mod:`~medcl.config.checks`;
- :mod:`~medcl.config.loading`: YAML and overrides in, a checked config out (:func:`load_config`,
  :func:`parse_overrides`, :func:`derive`, :func:`save_config`), old keys migrated by
  :mod:`~medcl.config.legacy`;
- :mod:`~medcl.config.resume`: the refusal to resume a run folder under another config
  (:func:`check_resume`);
- :mod:`~medcl.config.hardware`: what this machine can serve, probed once per process
  (``trainer.check_hardware()``, :func:`precision_for`), shared by pretraining and fine-tuning.
"""

from __future__ import annotations

from medcl.config.hardware import precision_for
from medcl.config.loading import derive, from_mapping, load_config, parse_overrides, save_config
from medcl.config.resume import RESUMABLE_FIELDS, check_resume
from medcl.config.schema import (
    LOGGERS,
    AugmentConfig,
    Config,
    DataConfig,
    EfficiencyConfig,
    FinetuneConfig,
    MethodConfig,
    ModelConfig,
    OperatingPoint,
    OptimConfig,
    PseudoLabelConfig,
    TrainerConfig,
)

__all__ = [
    "LOGGERS",
    "RESUMABLE_FIELDS",
    "AugmentConfig",
    "Config",
    "DataConfig",
    "EfficiencyConfig",
    "FinetuneConfig",
    "MethodConfig",
    "ModelConfig",
    "OperatingPoint",
    "OptimConfig",
    "PseudoLabelConfig",
    "TrainerConfig",
    "check_resume",
    "derive",
    "from_mapping",
    "load_config",
    "parse_overrides",
    "precision_for",
    "save_config",
]
