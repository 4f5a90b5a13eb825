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

Adding one: write a subclass of :class:`Objective` (or :class:`MomentumObjective`) implementing
:meth:`Objective.ssl_loss` in its own file, and add it to :data:`OBJECTIVES` (or call
:func:`register`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

from medcl.config import Config
from medcl.errors import ConfigError
from medcl.train.objectives.base import (
    MomentumObjective,
    Objective,
    ObjectiveOutput,
    ViewBatch,
    channels_last,
)
from medcl.train.objectives.byol import BYOL
from medcl.train.objectives.dino import DINO
from medcl.train.objectives.moco import MoCo
from medcl.train.objectives.simclr import SimCLR
from medcl.train.objectives.simsiam import SimSiam
from medcl.train.objectives.supcon import SupCon
from medcl.train.objectives.vicreg import VICReg

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


def build_objective(cfg: Config, encoder: nn.Module) -> Objective:
    """The objective of ``cfg.method.name`` for ``encoder``.

    Args:
        cfg: The run config.
        encoder: The online encoder.

    Returns:
        The objective, with its heads (and target networks) initialised.

    Raises:
        ConfigError: If ``method.name`` names no registered objective.
    """
    return objective_class(cfg.method.name)(cfg, encoder)


__all__ = [
    "BYOL",
    "DINO",
    "OBJECTIVES",
    "MoCo",
    "MomentumObjective",
    "Objective",
    "ObjectiveOutput",
    "SimCLR",
    "SimSiam",
    "SupCon",
    "VICReg",
    "ViewBatch",
    "build_objective",
    "channels_last",
    "objective_class",
    "register",
]
