"""MoCo: InfoNCE against a momentum key and a FIFO queue of negative keys (He et al. 2020,
"Momentum Contrast for Unsupervised Visual Representation Learning", CVPR; MoCo v2, Chen et al.
2020), with patient-aware and optionally label-aware queue entries.

For query ``q_i`` and its key ``k_i`` (L2-normalised, keys carry no gradient) and queue entries
``k_j`` with temperature ``tau``, candidates are ``{k_i} + queue``:

    l_i = -(1/|P(i)|) sum_{p in P(i)} [ q_i.k_p/tau - log sum_{a in A(i)} exp(q_i.k_a/tau) ]

``P(i)`` is ``{k_i}`` (plain MoCo: ``l_i = -log softmax`` of the key, the paper's InfoNCE), plus
queue entries with the same label ``>= 0`` if ``label_positives`` (SupCon ``L_out``, Khosla et al.
2020) and with the same patient if ``group_positives``. ``A(i)`` drops queue entries of the same
patient that are not positives: a same-patient image is never a negative. The loss is the mean of
``l_i`` over the queries of this rank (keys carry no gradient, so with DDP and equal per-rank
batches the averaged gradient is that of the mean over all ranks' queries).

The key encoder's EMA (``ema_update``, ``momentum_schedule``) lives in :mod:`medcl.models.ema`;
BYOL's target network uses it too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcl.losses.distributed import gather_no_grad, gather_sizes, is_distributed

#: Patient id stored for queue entries enqueued without groups (matches no real id in practice).
NO_GROUP = torch.iinfo(torch.int64).min


class MoCoLoss(nn.Module):
    """InfoNCE of queries against their keys and a persistent FIFO queue of past keys.

    The queue, its labels, patient ids, write pointer and fill count are persistent buffers, so a
    checkpoint (``state_dict``) resumes with the queue intact. Empty slots (before the queue first
    fills) are ignored, not used as random negatives.

    Typical step::

        q = proj(encoder(x1)); k = key_proj(key_encoder(x2))      # key branch under no_grad
        loss = moco(q, k, labels, groups)                        # uses the current queue
        moco.enqueue(k, labels, groups)                          # after the loss
        ema_update(key_encoder, encoder, momentum_schedule(step, total_steps))

    Args:
        dim: feature dimension ``D``.
        queue_size: number of stored keys ``K``.
        temperature: softmax temperature ``tau`` (MoCo v2 uses 0.2).
        label_positives: queue entries with the query's label ``>= 0`` are positives (SupCon form).
        group_positives: queue entries of the query's patient are positives (else only excluded).
        gather: under ``torch.distributed``, :meth:`enqueue` stores the keys of all ranks.
    """

    queue: Tensor
    queue_labels: Tensor
    queue_groups: Tensor
    queue_ptr: Tensor
    queue_len: Tensor

    def __init__(
        self,
        dim: int,
        queue_size: int = 4096,
        temperature: float = 0.2,
        label_positives: bool = False,
        group_positives: bool = False,
        gather: bool = True,
    ) -> None:
        super().__init__()
        if queue_size < 1 or dim < 1:
            raise ValueError(f"dim and queue_size must be >= 1; got {dim}, {queue_size}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        self.temperature = float(temperature)
        self.label_positives = bool(label_positives)
        self.group_positives = bool(group_positives)
        self.gather = bool(gather)
        self.register_buffer("queue", torch.zeros(queue_size, dim), persistent=True)
        self.register_buffer(
            "queue_labels", torch.full((queue_size,), -1, dtype=torch.int64), persistent=True
        )
        self.register_buffer(
            "queue_groups", torch.full((queue_size,), NO_GROUP, dtype=torch.int64), persistent=True
        )
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.int64), persistent=True)
        self.register_buffer("queue_len", torch.zeros((), dtype=torch.int64), persistent=True)

    @property
    def queue_size(self) -> int:
        """Capacity ``K`` of the queue."""
        return self.queue.shape[0]

    def extra_repr(self) -> str:
        return (
            f"dim={self.queue.shape[1]}, queue_size={self.queue_size}, "
            f"temperature={self.temperature}, label_positives={self.label_positives}, "
            f"group_positives={self.group_positives}, gather={self.gather}"
        )

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        labels: Tensor | None = None,
        groups: Tensor | None = None,
    ) -> Tensor:
        """Compute the loss against the current queue (call :meth:`enqueue` afterwards).

        Args:
            query: ``(B, D)`` query projections (with gradient), not normalised.
            key: ``(B, D)`` key projections of the other view, not normalised; detached here.
            labels: ``(B,)`` int labels of the queries, ``-1`` for unlabelled, or ``None``.
            groups: ``(B,)`` int patient ids of the queries, or ``None``.

        Returns:
            Scalar loss, the mean of ``l_i`` over this rank's queries.
        """
        if query.ndim != 2 or query.shape != key.shape or query.shape[1] != self.queue.shape[1]:
            raise ValueError(
                f"query and key must both be (B, {self.queue.shape[1]}); "
                f"got {tuple(query.shape)} and {tuple(key.shape)}"
            )
        with torch.autocast(device_type=query.device.type, enabled=False):
            dtype = torch.promote_types(query.dtype, torch.float32)
            q = F.normalize(query.to(dtype), dim=1)
            k = F.normalize(key.detach().to(dtype), dim=1)
            n = int(self.queue_len)
            positive_logit = (q * k).sum(dim=1, keepdim=True) / self.temperature
            # clone: enqueue() writes the queue in place before backward() may run
            queue_logits = q @ self.queue[:n].to(dtype).clone().T / self.temperature

            positive = torch.zeros_like(queue_logits, dtype=torch.bool)
            if self.label_positives and labels is not None:
                labels = labels.to(query.device)
                positive |= (labels[:, None] == self.queue_labels[None, :n]) & (labels >= 0)[
                    :, None
                ]
            valid = torch.ones_like(positive)
            if groups is not None:
                same_group = groups.to(query.device)[:, None] == self.queue_groups[None, :n]
                if self.group_positives:
                    positive |= same_group
                valid = ~(same_group & ~positive)

            logits = torch.cat([positive_logit, queue_logits], dim=1)
            own_key = torch.ones(q.shape[0], 1, dtype=torch.bool, device=q.device)
            positive = torch.cat([own_key, positive], dim=1)
            valid = torch.cat([own_key, valid], dim=1)
            log_denom = torch.logsumexp(torch.where(valid, logits, float("-inf")), dim=1)
            positive_mean = torch.where(positive, logits, 0.0).sum(1) / positive.sum(1)
            return (log_denom - positive_mean).mean()

    @torch.no_grad()
    def enqueue(
        self, keys: Tensor, labels: Tensor | None = None, groups: Tensor | None = None
    ) -> None:
        """Append keys (from every rank when distributed) to the queue, overwriting the oldest.

        Args:
            keys: ``(B, D)`` key projections, not normalised (they are L2-normalised here).
            labels: ``(B,)`` int labels, ``-1`` for unlabelled; ``None`` stores ``-1``.
            groups: ``(B,)`` int patient ids; ``None`` stores :data:`NO_GROUP`.
        """
        if keys.ndim != 2 or keys.shape[1] != self.queue.shape[1]:
            raise ValueError(f"keys must be (B, {self.queue.shape[1]}); got {tuple(keys.shape)}")
        b = keys.shape[0]
        if labels is None:
            labels = torch.full((b,), -1, dtype=torch.int64, device=keys.device)
        if groups is None:
            groups = torch.full((b,), NO_GROUP, dtype=torch.int64, device=keys.device)
        keys = F.normalize(keys.detach().to(self.queue.dtype), dim=1)
        labels, groups = labels.to(torch.int64), groups.to(torch.int64)
        if self.gather and is_distributed():
            sizes = gather_sizes(b, keys.device)
            keys, labels, groups = (gather_no_grad(t, sizes) for t in (keys, labels, groups))
            b = keys.shape[0]

        capacity = self.queue_size
        ptr = int(self.queue_ptr)
        slots = (ptr + torch.arange(b, device=self.queue.device)) % capacity
        keep = slice(max(0, b - capacity), b)  # only the newest `capacity` keys survive
        dev = self.queue.device
        self.queue[slots[keep]] = keys[keep].to(dev)
        self.queue_labels[slots[keep]] = labels[keep].to(dev)
        self.queue_groups[slots[keep]] = groups[keep].to(dev)
        self.queue_ptr.fill_((ptr + b) % capacity)
        self.queue_len.fill_(min(int(self.queue_len) + b, capacity))

    def queued(self) -> tuple[Tensor, Tensor, Tensor]:
        """Return the stored ``(keys, labels, groups)`` from oldest to newest."""
        n, ptr = int(self.queue_len), int(self.queue_ptr)
        order = torch.arange(n, device=self.queue.device)
        if n == self.queue_size:
            order = (order + ptr) % n
        return self.queue[order], self.queue_labels[order], self.queue_groups[order]
