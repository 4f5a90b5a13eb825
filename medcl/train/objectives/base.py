"""The base of every pretraining objective: ``L = λ1 · SupCon(labelled) + λ2 · SSL(all)``.

An :class:`Objective` owns what its self-supervised method adds on top of the encoder: the
projection head (every method), a predictor, momentum target networks and their EMA, a key queue.
The encoder and the augmentation stay with :class:`~medcl.train.module.PretrainModule`, which
hands each step's views to the objective as a :class:`ViewBatch` and gets back the loss and its
parts. With ``z = g(f(x))`` the online projections of the ``V`` views of each image::

    L = λ1 · SupCon(z; labelled anchors) + λ2 · L_ssl(z, ...)

where SupCon is the :class:`~medcl.train.objectives.supcon.SupCon` component, computed only while
λ1 > 0 (λ1 ramps: :meth:`~medcl.train.module.PretrainModule.sup_ramp`) over the true labels, or
with ``method.pseudo`` the true labels plus confident pseudo-labels (:attr:`ViewBatch.sup_labels`,
:mod:`medcl.train.pseudo`), and ``L_ssl`` is
:meth:`Objective.ssl_loss`, the one method each subclass writes. :class:`MomentumObjective` adds
EMA copies ``f_ξ``, ``g_ξ`` of the encoder and projector, moved after every optimiser step by
``ξ ← m·ξ + (1 − m)·θ`` with the cosine schedule of :func:`~medcl.models.ema.momentum_schedule`
(MoCo's key encoder, He et al. 2020; BYOL's target network, Grill et al. 2020).

A new objective is one file with a subclass and one line in
:data:`medcl.train.objectives.OBJECTIVES`; the design follows solo-learn's base method and
momentum base method with small per-method subclasses (da Costa et al. 2022, JMLR).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from medcl.config import Config, from_mapping
from medcl.config.checks import in_range
from medcl.models.ema import ema_update, momentum_schedule
from medcl.models.heads import ProjectionHead
from medcl.train.objectives.supcon import SupCon


def channels_last(x: Tensor) -> Tensor:
    """``x`` in channels-last memory format when it is a 2D image batch on CUDA, else ``x``.

    Args:
        x: ``(N, C, ...)`` images.

    Returns:
        The same values, laid out as the channels-last convolutions expect.
    """
    if x.device.type == "cuda" and x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def channels_last_applies(device: torch.device, spatial_dims: int) -> bool:
    """Whether networks on ``device`` for ``spatial_dims``-D images run channels-last: 2-D on
    CUDA only. ``torch.channels_last`` needs 4-D tensors; a 3-D network's 5-D convolution
    weights (and its 5-D inputs) stay contiguous, since converting them raises at fit start.

    Args:
        device: The training device.
        spatial_dims: 2 or 3.
    """
    return torch.device(device).type == "cuda" and spatial_dims == 2


def to_channels_last(module: nn.Module, device: torch.device, spatial_dims: int) -> bool:
    """Lay out the 4-D weights of ``module`` channels-last when :func:`channels_last_applies`.

    Args:
        module: An encoder (or an objective holding target encoders).
        device: The training device.
        spatial_dims: 2 or 3.

    Returns:
        Whether the layout was changed.
    """
    if not channels_last_applies(device, spatial_dims):
        return False
    module.to(memory_format=torch.channels_last)
    return True


@dataclass(frozen=True)
class ViewBatch:
    """One training step's augmented views, as every objective sees them.

    Attributes:
        views: ``(B·V, 1, ...)`` augmented views, sample-major (the ``V`` views of image 0 first),
            normalised; the input of target encoders.
        features: ``(B·V, F)`` online encoder features of ``views``.
        labels: ``(B,)`` class indices, −1 for unlabelled; or, on a multi-label manifest,
            ``(B, K)`` finding states (1 present, 0 absent, −1 unknown), which the SupCon term
            reads as multi-label SupCon (:mod:`medcl.train.objectives.supcon`).
        groups: ``(B,)`` patient ids; images of one patient are never negatives.
        n_samples: ``B``.
        n_views: ``V`` (at least 2).
        sup_labels: ``(B,)`` the labels of the SupCon term when they differ from ``labels``: the
            true ones plus the pseudo-labels of confident unlabelled images
            (:mod:`medcl.train.pseudo`); ``None``: ``labels``.
    """

    views: Tensor
    features: Tensor
    labels: Tensor
    groups: Tensor
    n_samples: int
    n_views: int
    sup_labels: Tensor | None = None

    @property
    def supcon_labels(self) -> Tensor:
        """The labels SupCon reads: ``sup_labels`` when given, else ``labels``."""
        return self.labels if self.sup_labels is None else self.sup_labels


@dataclass
class ObjectiveOptions:
    """An objective's own options, read from ``method.options.<name>``: none here.

    A subclass per objective adds its options as fields with their defaults and extends
    :meth:`check`.
    """

    def check(self, where: str) -> None:
        """Refuse a bad value.

        Args:
            where: The options' path, ``method.options.<name>``.

        Raises:
            ConfigError: One line naming ``where.<option>``.
        """


@dataclass
class MomentumOptions(ObjectiveOptions):
    """Options of every objective with EMA target networks (:class:`MomentumObjective`).

    Attributes:
        ema_base: ``m0``, the starting EMA momentum of the target networks, scheduled to 1.
    """

    ema_base: float = 0.99

    def check(self, where: str) -> None:
        in_range(self.ema_base, "[0, 1]", f"{where}.ema_base")


class ObjectiveOutput(NamedTuple):
    """The loss of a step and its detached parts for logging.

    Attributes:
        loss: ``λ1 · sup + λ2 · ssl``, differentiable.
        logs: ``{"sup": ..., "ssl": ...}`` before weighting (logged as ``train/sup``,
            ``train/ssl``); ``sup`` only when it was computed.
    """

    loss: Tensor
    logs: dict[str, Tensor]


class LossParts(NamedTuple):
    """The unweighted terms of a step's loss.

    Attributes:
        sup: SupCon over the labelled anchors, or ``None`` when it was not computed.
        ssl: The method's self-supervised term.
    """

    sup: Tensor | None
    ssl: Tensor


class Objective(nn.Module, ABC):
    """A self-supervised objective plus the SupCon term, ``λ1 · SupCon + λ2 · SSL``.

    Subclasses implement :meth:`ssl_loss`; those with target networks derive from
    :class:`MomentumObjective`. Submodules created in ``__init__`` (heads, queues) are part of the
    checkpoint and, if trainable, of the optimiser. A subclass with options of its own names their
    dataclass as :attr:`Options` (a subclass of :class:`ObjectiveOptions`).

    Args:
        cfg: The run config (``model`` for the head sizes, ``method`` for λ, τ and
            ``method.options.<method.name>``).
        encoder: The online encoder (``out_dim`` attribute); not owned, only read (a momentum
            objective copies it).

    Attributes:
        Options: The options' dataclass (class attribute).
        options: This objective's options, read and checked by :meth:`read_options`.
        projector: The projection head ``g`` on the encoder features.
        supcon: The SupCon component, weighted by λ1.
    """

    Options: ClassVar[type[ObjectiveOptions]] = ObjectiveOptions
    options: ObjectiveOptions

    def __init__(self, cfg: Config, encoder: nn.Module) -> None:
        super().__init__()
        self.options = self.read_options(cfg, cfg.method.name)
        m, mc = cfg.model, cfg.method
        self.projector = ProjectionHead(int(encoder.out_dim), m.proj_hidden, m.proj_dim)
        self.supcon = SupCon(mc.temperature, mc.group_positives)

    @classmethod
    def read_options(cls, cfg: Config, name: str) -> Any:
        """``method.options.<name>`` as this objective's :attr:`Options`, checked.

        Args:
            cfg: The run config.
            name: The objective's registry name (``method.name`` when it is the run's).

        Returns:
            The options; those not given keep their defaults.

        Raises:
            ConfigError: On an unknown option (naming the closest valid one) or a bad value, with
                the path ``method.options.<name>.<option>``.
        """
        where = f"method.options.{name}"
        options = from_mapping(cls.Options, cfg.method.options.get(name) or {}, where)
        options.check(where)
        return options

    def project(self, batch: ViewBatch) -> Tensor:
        """Online projections ``z`` of all views, ``(B, V, D)``, encoded as one batch."""
        return self.projector(batch.features).view(batch.n_samples, batch.n_views, -1)

    def forward(self, batch: ViewBatch, lambda_sup: float, lambda_ssl: float) -> ObjectiveOutput:
        """The weighted loss of one step.

        Args:
            batch: The step's views and their online features.
            lambda_sup: λ1 at this step (after the ramp).
            lambda_ssl: λ2.

        Returns:
            The loss and its parts.
        """
        return self.combine(batch, self.project(batch), lambda_sup, lambda_ssl)

    def combine(
        self, batch: ViewBatch, z: Tensor, lambda_sup: float, lambda_ssl: float
    ) -> ObjectiveOutput:
        """``λ1 · sup + λ2 · ssl`` of :meth:`loss_parts`, the one place the weights are applied.

        SupCon is asked for only while λ1 > 0 and logged whenever it was computed.

        Args:
            batch: The step's views.
            z: ``(B, V, D)`` online projections.
            lambda_sup: λ1.
            lambda_ssl: λ2.

        Returns:
            The loss and its parts.
        """
        parts = self.loss_parts(batch, z, with_sup=lambda_sup > 0)
        logs: dict[str, Tensor] = {}
        sup = z.new_zeros(())
        if parts.sup is not None:
            sup = parts.sup
            logs["sup"] = sup.detach()
        logs["ssl"] = parts.ssl.detach()
        return ObjectiveOutput(lambda_sup * sup + lambda_ssl * parts.ssl, logs)

    def loss_parts(self, batch: ViewBatch, z: Tensor, with_sup: bool) -> LossParts:
        """The unweighted parts of the loss: SupCon (when ``with_sup``), then :meth:`ssl_loss`.

        An objective whose SSL term shares SupCon's similarity matrix overrides this to compute
        both at once (:class:`~medcl.train.objectives.simclr.SimCLR`).

        Args:
            batch: The step's views.
            z: ``(B, V, D)`` online projections.
            with_sup: Compute SupCon (λ1 > 0).

        Returns:
            The parts; ``sup`` is ``None`` when not computed.
        """
        sup = self.supcon(z, batch.supcon_labels, batch.groups) if with_sup else None
        return LossParts(sup, self.ssl_loss(batch, z))

    @abstractmethod
    def ssl_loss(self, batch: ViewBatch, z: Tensor) -> Tensor:
        """The self-supervised term ``L_ssl`` of the method, over all images.

        Args:
            batch: The step's views (for target networks) with labels and patient ids.
            z: ``(B, V, D)`` online projections, with gradient.

        Returns:
            A differentiable scalar.
        """

    def on_optimizer_step(self, encoder: nn.Module, step: int, total_steps: int) -> None:
        """Called once after every optimiser step (not after accumulating micro-batches).

        Args:
            encoder: The online encoder.
            step: Optimiser steps taken so far.
            total_steps: Optimiser steps of the whole run.
        """


class MomentumObjective(Objective):
    """An objective with EMA target copies ``f_ξ``, ``g_ξ`` of the encoder and projector.

    After every optimiser step ``k`` of ``K``: ``ξ ← m·ξ + (1 − m)·θ`` with
    ``m = 1 − (1 − m0)(cos(πk/K) + 1)/2`` (``m0`` = the ``ema_base`` option of
    :class:`MomentumOptions`); the targets' BatchNorm statistics are their own. Target parameters
    never get gradients.

    Args:
        cfg: The run config.
        encoder: The online encoder, copied as the target encoder.

    Attributes:
        target_encoder: EMA copy of the encoder.
        target_projector: EMA copy of :attr:`projector`.
    """

    Options: ClassVar[type[ObjectiveOptions]] = MomentumOptions
    options: MomentumOptions

    def __init__(self, cfg: Config, encoder: nn.Module) -> None:
        super().__init__(cfg, encoder)
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)

    @torch.no_grad()
    def target_projections(self, batch: ViewBatch) -> Tensor:
        """Target projections ``g_ξ(f_ξ(x))`` of all views, ``(B, V, D)``, without gradient."""
        h = self.target_encoder(channels_last(batch.views))
        return self.target_projector(h).view(batch.n_samples, batch.n_views, -1)

    def on_optimizer_step(self, encoder: nn.Module, step: int, total_steps: int) -> None:
        """One EMA step of the target networks towards the online ones.

        Args:
            encoder: The online encoder.
            step: Optimiser steps taken so far (``k``).
            total_steps: Optimiser steps of the whole run (``K``).
        """
        m = momentum_schedule(step, total_steps, base=self.options.ema_base)
        ema_update(self.target_encoder, encoder, m)
        ema_update(self.target_projector, self.projector, m)


def cross_view_regression(
    predictor: nn.Module, regression: nn.Module, batch: ViewBatch, z: Tensor, targets: Tensor
) -> Tensor:
    """Symmetrised regression of each view's prediction onto the other view's target (BYOL,
    SimSiam): ``regression(p1, t2, p2, t1)`` with ``p = predictor(z)``.

    Args:
        predictor: The predictor head, applied to every view's projection.
        regression: A :class:`~medcl.losses.NegativeCosineLoss`.
        batch: The step's views (two per image).
        z: ``(B, V, D)`` online projections.
        targets: ``(B, V, D)`` targets, without gradient.

    Returns:
        The scalar loss.
    """
    p = predictor(z.flatten(0, 1)).view(batch.n_samples, batch.n_views, -1)
    return regression(p[:, 0], targets[:, 1], p[:, 1], targets[:, 0])
