"""Pretraining objectives, one small class per self-supervised method, chosen by ``method.name``.

Every objective is ``L = λ1 · SupCon(labelled) + λ2 · SSL(all)`` (:mod:`.base`); the SSL term is

- ``simclr``: NT-Xent over all views (:mod:`.simclr`), sharing SupCon's similarity matrix;
- ``moco``: symmetrised InfoNCE against EMA keys and a FIFO queue (:mod:`.moco`);
- ``byol``: ``2 − 2cos`` of a predictor against the EMA target projection (:mod:`.byol`);
- ``simsiam``: ``−cos`` against the stop-gradient projection (:mod:`.simsiam`);
- ``dino``: cross-entropy against the centered, sharpened softmax of an EMA teacher over
  prototypes (:mod:`.dino`);
- ``vicreg``: invariance MSE + variance hinge + covariance penalty of the projections, over the
  global batch (:mod:`.vicreg`).

Options live with their objective. Each class names a small dataclass as its ``Options``, with the
defaults and the checks; the config holds the values given under ``method.options.<name>``
(:class:`~medcl.config.MethodConfig`), e.g. in YAML::

    method:
      name: dino
      options:
        dino: {out_dim: 4096, student_temp: 0.1}

or as an override, ``method.options.dino.out_dim=2048``. The options are:

- ``simclr``, ``simsiam``: none;
- ``moco`` (:class:`~.moco.MoCoOptions`): ``queue_size``, ``ema_base``;
- ``byol`` (:class:`~.base.MomentumOptions`): ``ema_base``;
- ``dino`` (:class:`~.dino.DINOOptions`): ``out_dim``, ``student_temp``, ``teacher_temp``,
  ``warmup_teacher_temp``, ``teacher_temp_warmup``, ``center_momentum``, ``ema_base``;
- ``vicreg`` (:class:`~.vicreg.VICRegOptions`): ``sim_weight``, ``var_weight``, ``cov_weight``.

Reading a config does not import torch, so the options are checked when an objective is resolved,
before any work: :func:`check_objective_options` (pretraining calls it for ``method.name``, the
label-efficiency experiment for every objective its arms pretrain with), and again when an
objective is built. An unknown option is refused naming the closest valid one; a bad value naming
``method.options.<name>.<option>``.

Adding one: write a subclass of :class:`Objective` (or :class:`MomentumObjective`) implementing
:meth:`Objective.ssl_loss` in its own file, with its ``Options`` dataclass if it has options (a
subclass of :class:`ObjectiveOptions`, or of :class:`MomentumOptions`), and add it to
:data:`OBJECTIVES` (or call :func:`register`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from torch import nn

from medcl.config import Config
from medcl.config.resume import set_option_defaults
from medcl.errors import ConfigError
from medcl.train.objectives.base import (
    MomentumObjective,
    MomentumOptions,
    Objective,
    ObjectiveOptions,
    ObjectiveOutput,
    ViewBatch,
    channels_last,
    channels_last_applies,
    to_channels_last,
)
from medcl.train.objectives.byol import BYOL
from medcl.train.objectives.dino import DINO, DINOOptions
from medcl.train.objectives.moco import MoCo, MoCoOptions
from medcl.train.objectives.simclr import SimCLR
from medcl.train.objectives.simsiam import SimSiam
from medcl.train.objectives.supcon import SupCon
from medcl.train.objectives.vicreg import VICReg, VICRegOptions

OBJECTIVES: dict[str, type[Objective]] = {
    "simclr": SimCLR,
    "moco": MoCo,
    "byol": BYOL,
    "simsiam": SimSiam,
    "dino": DINO,
    "vicreg": VICReg,
}
"""``method.name`` → objective class."""

ObjectiveT = TypeVar("ObjectiveT", bound=type[Objective])


def register(name: str) -> Callable[[ObjectiveT], ObjectiveT]:
    """Class decorator adding an objective to :data:`OBJECTIVES` under ``name``.

    Args:
        name: The ``method.name`` that selects it.

    Returns:
        A decorator that registers the class and returns it unchanged.

    Raises:
        ValueError: If ``name`` is taken by another class, or is not an identifier (the config
            accepts only identifiers as ``method.name``).

    Example:
        >>> @register("align")  # doctest: +SKIP
        ... class AlignViews(Objective): ...
    """

    if not name.isidentifier():
        raise ValueError(f"objective name {name!r}: not an identifier, so no config could pick it")

    def add(cls: ObjectiveT) -> ObjectiveT:
        if not (isinstance(cls, type) and issubclass(cls, Objective)):
            raise TypeError(f"{cls!r} is not an Objective subclass")
        if OBJECTIVES.get(name, cls) is not cls:
            raise ValueError(f"objective {name!r} is already registered ({OBJECTIVES[name]})")
        OBJECTIVES[name] = cls
        return cls

    return add


def objective_class(name: str) -> type[Objective]:
    """The objective class registered as ``name``.

    Args:
        name: ``method.name``.

    Returns:
        The class.

    Raises:
        ConfigError: If no objective has that name (the message names ``method.name``).
    """
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ConfigError(
            f"method.name: no pretraining objective {name!r}; choose from {', '.join(OBJECTIVES)}"
        ) from None


def check_objective_options(cfg: Config, names: Iterable[str] = ()) -> dict[str, ObjectiveOptions]:
    """Check, before any work, the options of the objectives a command will build.

    Every entry of ``method.options`` must name a registered objective and hold valid options
    for it; so must the options (given or default) of each objective in ``names``.

    Args:
        cfg: The run config.
        names: The objectives the command will build (e.g. ``[cfg.method.name]``).

    Returns:
        ``{name: options}`` for ``names`` and every objective in ``method.options``.

    Raises:
        ConfigError: One line naming the objective (``method.name``, or the key under
            ``method.options``) or the option.
    """
    for name in cfg.method.options:
        if name not in OBJECTIVES:
            raise ConfigError(
                f"method.options.{name}: options of {name!r}, which is no pretraining objective; "
                f"choose from {', '.join(OBJECTIVES)}"
            )
    wanted = dict.fromkeys([*names, *cfg.method.options])
    return {name: objective_class(name).read_options(cfg, name) for name in wanted}


def _option_defaults(name: str) -> dict[str, Any] | None:
    """The defaults of the options of the objective ``name`` (None if there is none)."""
    cls = OBJECTIVES.get(name)
    return None if cls is None else dataclasses.asdict(cls.Options())


set_option_defaults(_option_defaults)  # a resumed run's options compare at their defaults


def build_objective(cfg: Config, encoder: nn.Module) -> Objective:
    """The objective of ``cfg.method.name`` for ``encoder``.

    Args:
        cfg: The run config.
        encoder: The online encoder.

    Returns:
        The objective, with its heads (and target networks) initialised.

    Raises:
        ConfigError: If ``method.name`` names no registered objective, or its options are bad.
    """
    return objective_class(cfg.method.name)(cfg, encoder)


__all__ = [
    "BYOL",
    "DINO",
    "OBJECTIVES",
    "DINOOptions",
    "MoCo",
    "MoCoOptions",
    "MomentumObjective",
    "MomentumOptions",
    "Objective",
    "ObjectiveOptions",
    "ObjectiveOutput",
    "SimCLR",
    "SimSiam",
    "SupCon",
    "VICReg",
    "VICRegOptions",
    "ViewBatch",
    "build_objective",
    "channels_last",
    "channels_last_applies",
    "to_channels_last",
    "check_objective_options",
    "objective_class",
    "register",
]
