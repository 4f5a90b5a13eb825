"""The arms of the label-efficiency experiment, one record each.

An arm is how a classifier is obtained from a label subset: which pretraining (if any) its
encoder starts from, how it is then fitted on the labelled images, and what it is compared with.
``medcl efficiency`` (:mod:`medcl.evaluate.efficiency`) runs the arms named in
``efficiency.methods``; its report (:mod:`medcl.evaluate.report`) names, orders and compares them
from this table alone. Adding an arm is adding one :class:`Arm` to :data:`ARMS` (or calling
:func:`register_arm`).

A pretraining is described by :class:`Pretraining`: its objective (``method.name``), whether it
reads the labels of the subset (SSCL, ``λ1 = method.lambda_sup``) or none at all (``λ1 = 0``; it
then depends only on the seed, not on the label fraction), and config overrides of its own. Arms
with the same :class:`Pretraining` share one pretraining run per seed (and label fraction, when it
reads labels).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from medcl.errors import ConfigError


@dataclass(frozen=True)
class Pretraining:
    """A pretraining that arms start from.

    Attributes:
        tag: Its folder name prefix under ``OUT/pretrain/`` (``simclr`` → ``simclr_s0``;
            a labelled one ``sscl`` → ``sscl_f0.05_s0``).
        objective: ``method.name`` of the run.
        labelled: Whether it reads the labels of the subset (``λ1 = method.lambda_sup``) or
            none (``λ1 = 0``, run on the label-free pool).
        title: How the log names it.
        overrides: Further config changes of this pretraining (dotted keys, Python values).
    """

    tag: str
    objective: str
    labelled: bool
    title: str
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Arm:
    """One arm: a pretraining (or none), a fitting mode, its display name and its rivals.

    Attributes:
        name: The ``efficiency.methods`` entry and the records' ``method``.
        title: The display name in the headline and the report.
        pretraining: What its encoder starts from; ``None`` = from scratch (the arm then gets
            the from-scratch budget and ``efficiency.scratch_augment``).
        finetune: ``finetune.mode`` of its fitting stage; ``None`` = the config's own
            (normally ``full``).
        probe: With ``efficiency.linear_probe``, also fit a linear probe on its frozen encoder,
            recorded as the arm ``<name>+linear``.
        compare_with: The arms its paired differences are taken against, when they ran (like
            with like: fine-tuned arms with fine-tuned arms).
        probe_compare_with: The same for its linear probe.
        headline: Whether the one-line headline lists it.
        teacher: Another arm whose fitted model this arm's fitting learns from (self-training's
            teacher); the experiment runs the two together and hands the teacher's model over
            (the same fit the arm would otherwise repeat).
    """

    name: str
    title: str
    pretraining: Pretraining | None = None
    finetune: str | None = None
    probe: bool = False
    compare_with: tuple[str, ...] = ()
    probe_compare_with: tuple[str, ...] = ()
    headline: bool = True
    teacher: str | None = None

    def linear_probe(self) -> Arm:
        """The arm's linear probe on the same pretrained encoder."""
        return dataclasses.replace(
            self,
            name=f"{self.name}+linear",
            title=f"{self.title} (linear probe)",
            finetune="linear",
            probe=False,
            compare_with=self.probe_compare_with,
            probe_compare_with=(),
            headline=False,
        )

    def finetune_mode(self, default: str) -> str:
        """The fitting stage's ``finetune.mode`` (``default`` = the config's)."""
        return self.finetune or default


SIMCLR = Pretraining("simclr", "simclr", labelled=False, title="SimCLR")
DINO = Pretraining("dino", "dino", labelled=False, title="DINO")
VICREG = Pretraining("vicreg", "vicreg", labelled=False, title="VICReg")
SSCL = Pretraining("sscl", "simclr", labelled=True, title="SSCL")
SSCL_PSEUDO = Pretraining(
    "ssclpl",
    "simclr",
    labelled=True,
    title="SSCL+pseudo",
    overrides={"method.pseudo.enabled": True},
)

ARMS: dict[str, Arm] = {
    a.name: a
    for a in (
        Arm("supervised", "supervised"),
        Arm("fixmatch", "FixMatch", finetune="fixmatch", compare_with=("supervised",)),
        Arm("simclr", "SimCLR", SIMCLR, probe=True, compare_with=("supervised",)),
        Arm("dino", "DINO", DINO, probe=True, compare_with=("supervised",)),
        Arm("vicreg", "VICReg", VICREG, probe=True, compare_with=("supervised",)),
        Arm(
            "sscl",
            "SSCL",
            SSCL,
            probe=True,
            compare_with=("supervised", "fixmatch", "simclr", "dino", "vicreg"),
            probe_compare_with=("simclr+linear", "dino+linear", "vicreg+linear"),
        ),
        Arm(
            "selftrain",
            "Self-training",
            finetune="selftrain",
            teacher="supervised",
            compare_with=("supervised", "fixmatch"),
        ),
        Arm(
            "sscl+selftrain",
            "SSCL+self-training",
            SSCL,
            finetune="selftrain",
            teacher="sscl",
            compare_with=("supervised", "selftrain", "sscl"),
        ),
        Arm(
            "sscl+pseudo",
            "SSCL+pseudo",
            SSCL_PSEUDO,
            compare_with=("supervised", "fixmatch", "sscl"),
        ),
        Arm(
            "sscl+fixmatch",
            "SSCL+FixMatch",
            SSCL,
            finetune="fixmatch",
            compare_with=("supervised", "fixmatch", "simclr", "sscl"),
        ),
    )
}
"""Every arm ``efficiency.methods`` may name, in the report's order."""


def register_arm(arm: Arm) -> Arm:
    """Add ``arm`` to :data:`ARMS` (after the others in the report's order).

    Raises:
        ValueError: If another arm has that name, or its name ends in ``+linear`` (reserved for
            probes).
    """
    if arm.name.endswith("+linear"):
        raise ValueError(f"arm {arm.name!r}: '+linear' names are the probes of other arms")
    if ARMS.get(arm.name, arm) != arm:
        raise ValueError(f"arm {arm.name!r} is already registered")
    ARMS[arm.name] = arm
    return arm


def resolve_arms(methods: list[str], linear_probe: bool) -> list[Arm]:
    """The arms of ``efficiency.methods`` in the order of a seed's runs: each arm, then its
    linear probe when ``linear_probe``.

    Raises:
        ConfigError: Naming ``efficiency.methods`` and the choices, for an unknown arm.
    """
    unknown = [m for m in methods if m not in ARMS]
    if unknown or not methods:
        raise ConfigError(f"efficiency.methods: choose from {', '.join(ARMS)}; got {methods}")
    out: list[Arm] = []
    for m in methods:
        arm = ARMS[m]
        out.append(arm)
        if arm.probe and linear_probe:
            out.append(arm.linear_probe())
    return out


def report_order(names: list[str] | set[str]) -> list[str]:
    """``names`` in the table's order (each arm followed by its probe), unknown names last."""
    order = [n for a in ARMS.values() for n in (a.name, f"{a.name}+linear")]
    known = [n for n in order if n in names]
    return known + sorted(n for n in names if n not in order)


def arm_of(name: str) -> Arm | None:
    """The arm (or probe arm) recorded as ``name``; ``None`` when no arm has it."""
    if name in ARMS:
        return ARMS[name]
    base = name.removesuffix("+linear")
    if base != name and base in ARMS and ARMS[base].probe:
        return ARMS[base].linear_probe()
    return None


def title(name: str) -> str:
    """Display name of a recorded arm (its own name when unknown)."""
    arm = arm_of(name)
    return arm.title if arm is not None else name
