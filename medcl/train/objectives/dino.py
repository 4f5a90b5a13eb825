"""DINO: self-distillation with no labels (Caron et al. 2021, "Emerging Properties in
Self-Supervised Vision Transformers", ICCV).

The student is the online encoder ``f``, projector ``g`` and a prototype layer ``P``; the teacher
is their EMA copy (:class:`~medcl.train.objectives.base.MomentumObjective`, momentum
``ema_base`` scheduled to 1; the paper uses 0.996). Both end in ``K = out_dim`` logits::

    s = P(ẑ),  ẑ = z/‖z‖,  z = g(f(x))           P(u)_k = u · w_k/‖w_k‖

(the weight-normalised last layer with its norm fixed to 1, as in the paper's head). The loss is
:func:`~medcl.losses.dino_loss`: the cross-entropy between the teacher's centered, sharpened
softmax ``softmax((t − c)/τ_t)`` and the student's ``log_softmax(s/τ_s)`` over every pair of
*different* views; then the center ``c`` (a checkpointed buffer) takes one EMA step towards the
teacher outputs' batch mean, all-reduced over ranks (:func:`~medcl.losses.dino_center_update`).
``τ_t`` warms up linearly from ``warmup_teacher_temp`` to ``teacher_temp`` over the first
``teacher_temp_warmup`` of the optimiser steps. These are DINO's options, ``method.options.dino``
(:class:`DINOOptions`).

Head design: the projection head ``g`` (``model.proj_hidden`` → ``model.proj_dim``) is the same
:class:`~medcl.models.heads.ProjectionHead` as every other objective's, and plays the part of the
paper's MLP and bottleneck; only the prototype layer is new. So the SupCon term (λ1) acts on the
same ``proj_dim`` projections ``z`` with the same temperature as for SimCLR, MoCo or BYOL, and
DINO's prototypes sit on top of them.

Multi-crop: the views come from the augmentation of :class:`~medcl.train.module.PretrainModule`,
all of one size, so only the ``V`` global views are used (each is a teacher view and a student
view; ``V(V − 1)`` pairs). :func:`~medcl.losses.dino_loss` itself accepts extra student-only
(local) views, for a future multi-crop augmentation. The paper's freezing of the last layer in the
first epoch and its gradient clipping are not applied.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcl.config import Config
from medcl.config.checks import at_least, in_range
from medcl.errors import ConfigError
from medcl.losses import dino_center_update, dino_loss, teacher_temperature
from medcl.models.ema import ema_update, momentum_schedule
from medcl.train.objectives.base import (
    MomentumObjective,
    MomentumOptions,
    ObjectiveOptions,
    ViewBatch,
    channels_last,
)


@dataclass
class DINOOptions(MomentumOptions):
    """DINO's options (the paper's temperatures and center momentum; it uses ``K`` = 65536 and
    ``ema_base`` = 0.996 on ImageNet).

    Attributes:
        out_dim: Prototypes ``K`` of the weight-normalised last layer (the softmax size).
        student_temp: Student temperature ``τ_s``.
        teacher_temp: Teacher temperature ``τ_t`` after the warm-up (≤ ``τ_s``: the teacher
            sharpens).
        warmup_teacher_temp: ``τ_t`` at step 0, raised linearly to ``teacher_temp`` (≤ ``τ_s``).
        teacher_temp_warmup: Share of the optimiser steps of that warm-up (0 = none).
        center_momentum: EMA momentum ``m`` of the center of the teacher outputs.
        ema_base: Starting EMA momentum of the teacher, scheduled to 1.
    """

    # the student: prototypes and temperature
    out_dim: int = 4096
    student_temp: float = 0.1

    # the teacher's temperatures, each at most student_temp (the teacher sharpens); τ_t rises
    # linearly from warmup_teacher_temp to teacher_temp over a share teacher_temp_warmup of steps
    TEACHER_TEMPS: ClassVar[tuple[str, ...]] = ("teacher_temp", "warmup_teacher_temp")
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    teacher_temp_warmup: float = 0.3

    # the center of the teacher outputs
    center_momentum: float = 0.9

    def check(self, where: str) -> None:
        super().check(where)
        at_least(self.out_dim, 2, f"{where}.out_dim")
        in_range(self.student_temp, "(0, 10]", f"{where}.student_temp")
        for k in self.TEACHER_TEMPS:
            t = getattr(self, k)
            if not 0 < t <= self.student_temp:
                raise ConfigError(
                    f"{where}.{k}: must be in (0, student_temp = {self.student_temp}] "
                    f"(the teacher sharpens), got {t}"
                )
        in_range(self.teacher_temp_warmup, "[0, 1]", f"{where}.teacher_temp_warmup")
        in_range(self.center_momentum, "[0, 1)", f"{where}.center_momentum")


class Prototypes(nn.Module):
    """DINO's last layer: ``K`` weight-normalised prototypes on the L2-normalised projection,
    ``P(z)_k = (z/‖z‖) · (w_k/‖w_k‖)`` (``weight_norm`` with the norm ``g`` fixed to 1).

    Args:
        dim: Projection size ``D``.
        n_prototypes: ``K``.
    """

    def __init__(self, dim: int, n_prototypes: int) -> None:
        super().__init__()
        self.layer = nn.Linear(dim, n_prototypes, bias=False)

    def forward(self, z: Tensor) -> Tensor:
        """``(M, D)`` projections → ``(M, K)`` logits (cosines, in ``[−1, 1]``)."""
        return F.linear(F.normalize(z, dim=-1), F.normalize(self.layer.weight, dim=-1))


class DINO(MomentumObjective):
    """Cross-entropy of the student against the centered, sharpened EMA teacher.

    Args:
        cfg: The run config (``model.proj_dim``, ``method.options.dino``).
        encoder: The online encoder, copied as the teacher encoder.

    Attributes:
        prototypes: The student's prototype layer.
        target_prototypes: Its EMA copy (the teacher's).
        center: ``(K,)`` the center of the teacher outputs (buffer, checkpointed).
        steps_done: Optimiser steps taken (buffer, checkpointed), for the ``τ_t`` warm-up.
    """

    Options: ClassVar[type[ObjectiveOptions]] = DINOOptions
    options: DINOOptions

    def __init__(self, cfg: Config, encoder: nn.Module) -> None:
        super().__init__(cfg, encoder)
        k = self.options.out_dim
        self.prototypes = Prototypes(cfg.model.proj_dim, k)
        self.target_prototypes = copy.deepcopy(self.prototypes).requires_grad_(False)
        self.register_buffer("center", torch.zeros(k))
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.int64))
        self.register_buffer("total_steps", torch.zeros((), dtype=torch.int64))

    def current_teacher_temp(self) -> float:
        """``τ_t`` at the current optimiser step (the final value before any step is known)."""
        o, total = self.options, int(self.total_steps)
        if total <= 0:
            return o.warmup_teacher_temp if o.teacher_temp_warmup > 0 else o.teacher_temp
        return teacher_temperature(
            int(self.steps_done),
            total,
            o.warmup_teacher_temp,
            o.teacher_temp,
            o.teacher_temp_warmup,
        )

    @torch.no_grad()
    def teacher_logits(self, batch: ViewBatch) -> Tensor:
        """Teacher logits ``P_ξ(g_ξ(f_ξ(x)))`` of all views, ``(B, V, K)``, without gradient."""
        h = self.target_encoder(channels_last(batch.views))
        t = self.target_prototypes(self.target_projector(h))
        return t.view(batch.n_samples, batch.n_views, -1)

    def ssl_loss(self, batch: ViewBatch, z: Tensor) -> Tensor:
        """DINO's loss over all pairs of different views; then one EMA step of the center."""
        student = self.prototypes(z.flatten(0, 1)).view(batch.n_samples, batch.n_views, -1)
        teacher = self.teacher_logits(batch)
        loss = dino_loss(
            student,
            teacher,
            self.center,
            student_temp=self.options.student_temp,
            teacher_temp=self.current_teacher_temp(),
        )
        self.center.copy_(dino_center_update(self.center, teacher, self.options.center_momentum))
        return loss

    def on_optimizer_step(self, encoder: nn.Module, step: int, total_steps: int) -> None:
        """One EMA step of the teacher (encoder, projector, prototypes); records the step.

        Args:
            encoder: The online encoder.
            step: Optimiser steps taken so far.
            total_steps: Optimiser steps of the whole run.
        """
        super().on_optimizer_step(encoder, step, total_steps)
        m = momentum_schedule(step, total_steps, base=self.options.ema_base)
        ema_update(self.target_prototypes, self.prototypes, m)
        self.steps_done.fill_(step)
        self.total_steps.fill_(total_steps)
