"""What this machine can serve: the only part of the config that looks at torch and CUDA.

The facts come from one probe per process (:func:`this_machine`: ``torch.cuda.is_available()``,
``torch.cuda.device_count()``, ``os.cpu_count()``), kept for the rest of the process, so that the
many pretrainings and fine-tunings of one ``medcl efficiency`` run check their requests without
probing again. torch is imported by the probe, not by reading a config.

:class:`HardwareRules` gives :class:`~medcl.config.schema.TrainerConfig` its device readings:
the parsed ``devices`` (:meth:`~HardwareRules.device_request`, no probe) and the machine-dependent
ones (:meth:`~HardwareRules.uses_cuda`, :meth:`~HardwareRules.device_count`,
:meth:`~HardwareRules.sync_batchnorm_on`) and the refusal of a request this machine cannot serve
(:meth:`~HardwareRules.check_hardware`); :func:`precision_for` is the precision rule of a run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Protocol

from medcl.errors import ConfigError


@dataclass(frozen=True)
class Machine:
    """The facts a run's hardware request is checked against.

    Attributes:
        cuda: ``torch.cuda.is_available()``.
        gpus: ``torch.cuda.device_count()``.
        cores: ``os.cpu_count()`` (1 when unknown).
    """

    cuda: bool
    gpus: int
    cores: int


@functools.cache
def this_machine() -> Machine:
    """This process's :class:`Machine`, probed on the first call and kept (``cache_clear()``
    forgets it, for tests that pretend to be another machine)."""
    import os

    import torch  # here, so that reading a config does not load torch

    return Machine(
        cuda=bool(torch.cuda.is_available()),
        gpus=int(torch.cuda.device_count()),
        cores=os.cpu_count() or 1,
    )


class HardwareRules:
    """The device readings of :class:`~medcl.config.schema.TrainerConfig` (which derives from
    this class and holds the fields below): ``devices`` parsed, and what this machine makes of it.
    """

    accelerator: str
    devices: Any
    num_nodes: int
    precision: str
    sync_batchnorm: bool | str

    def device_request(self, where: str = "trainer") -> int | list[int] | str:
        """``devices`` as Lightning reads it: ``auto``, a count (``-1`` = every GPU) or indices.

        A digit string (``"2"``) is a count and a comma-separated string (``"0,1"``) a list of
        indices, as on Lightning's command line. Reads no hardware (the config's check uses it).

        Raises:
            ConfigError: Naming ``devices`` for anything else.
        """
        dev = self.devices
        bad = ConfigError(
            f"{where}.devices: 'auto', a positive count (-1 = every GPU) or a list of GPU "
            f"indices, got {dev!r}"
        )
        if isinstance(dev, str) and dev != "auto":
            text = dev.strip()
            try:
                dev = [int(x) for x in text.strip(",").split(",")] if "," in text else int(text)
            except ValueError:
                raise bad from None
        if dev == "auto":
            return dev
        if isinstance(dev, bool):
            raise bad
        if isinstance(dev, int):
            if dev == 0 or dev < -1:
                raise bad
            return dev
        if (
            isinstance(dev, list)
            and dev
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in dev)
        ):
            if len(set(dev)) != len(dev):
                raise bad
            return dev
        raise bad

    def uses_cuda(self) -> bool:
        """Whether the run will train on CUDA: ``accelerator`` ``gpu``/``cuda``, or ``auto`` on a
        machine where ``torch.cuda.is_available()``."""
        if self.accelerator in ("gpu", "cuda"):
            return True
        if self.accelerator != "auto":
            return False
        return this_machine().cuda

    def device_count(self, where: str = "trainer") -> int:
        """Devices per node the run will use: the CUDA count for ``auto``/``-1`` on CUDA, one for
        ``auto`` on the CPU (Lightning's reading), else the count or length of ``devices``."""
        dev = self.device_request(where)
        if isinstance(dev, list):
            return len(dev)
        if dev == "auto" or dev == -1:
            return this_machine().gpus if self.uses_cuda() else 1
        return int(dev)

    def sync_batchnorm_on(self) -> bool:
        """The resolved ``sync_batchnorm``: ``auto`` is on exactly when the run uses CUDA with more
        than one device in all (devices × nodes); a single device has nothing to synchronise and
        PyTorch's SyncBatchNorm does not run on the CPU. An explicit value stands (refused on the
        CPU by :meth:`check_hardware`)."""
        if self.sync_batchnorm != "auto":
            return bool(self.sync_batchnorm)
        return self.uses_cuda() and self.device_count() * self.num_nodes > 1

    def check_hardware(self, where: str = "trainer") -> None:
        """Refuse, before any work, a request this machine cannot serve.

        Checked: ``accelerator`` ``gpu``/``cuda`` where ``torch.cuda.is_available()`` is false;
        ``devices`` beyond what exists (CUDA: more than ``torch.cuda.device_count()`` or an index
        past it; CPU: more processes than ``os.cpu_count()``, or a list of indices, which only
        GPUs have); ``sync_batchnorm: true`` on a run that does not use CUDA. A CPU run with
        ``devices: N`` and ``strategy: ddp`` is N gloo processes on this machine (for testing).

        Raises:
            ConfigError: One line naming the key.
        """
        machine = this_machine()
        acc = self.accelerator
        if acc in ("gpu", "cuda") and not machine.cuda:
            raise ConfigError(
                f"{where}.accelerator: {acc!r} asks for CUDA, but torch.cuda.is_available() is "
                "false on this machine; use 'cpu' or 'auto'"
            )
        dev = self.device_request(where)
        if self.uses_cuda():
            have = machine.gpus
            wanted = dev if isinstance(dev, list) else []
            if (isinstance(dev, int) and dev > have) or any(i >= have for i in wanted):
                raise ConfigError(
                    f"{where}.devices: {self.devices!r} asks for more GPUs than the {have} "
                    "this machine has"
                )
        elif acc in ("cpu", "auto"):
            cores = machine.cores
            if isinstance(dev, list) or dev == -1:
                raise ConfigError(
                    f"{where}.devices: {self.devices!r} names GPUs, but this run uses the CPU; "
                    "give a process count"
                )
            if isinstance(dev, int) and dev > cores:
                raise ConfigError(
                    f"{where}.devices: {dev} CPU processes asked for, but this machine has "
                    f"{cores} cores"
                )
        if self.sync_batchnorm is True and not self.uses_cuda():
            raise ConfigError(
                f"{where}.sync_batchnorm: true needs CUDA (PyTorch's SyncBatchNorm runs on GPUs "
                "only) and this run uses the CPU; set it to auto or false"
            )


class _RunConfig(Protocol):
    """What :func:`precision_for` reads of a :class:`~medcl.config.schema.Config`."""

    @property
    def trainer(self) -> HardwareRules: ...


def precision_for(cfg: _RunConfig) -> str:
    """Lightning precision of a run (pretraining or fine-tuning).

    Args:
        cfg: The run config (``trainer.precision`` and ``trainer.accelerator``).

    Returns:
        ``trainer.precision``, or for ``auto``: ``bf16-mixed`` when CUDA is available and the
        accelerator may use it (``auto``, ``gpu``, ``cuda``), ``32-true`` otherwise.
    """
    t = cfg.trainer
    if t.precision != "auto":
        return t.precision
    gpu = this_machine().cuda and t.accelerator in ("auto", "gpu", "cuda")
    return "bf16-mixed" if gpu else "32-true"
