"""MoCo queue (FIFO, wrap-around, persistence) and loss vs a hand reference."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from medcl.losses import MoCoLoss
from medcl.losses.moco import NO_GROUP


def unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def numbered_keys(start: int, count: int, dim: int = 4) -> Tensor:
    """Keys whose first coordinate identifies them (all other coordinates 0 → already unit)."""
    keys = torch.zeros(count, dim)
    keys[:, 0] = 1.0
    keys[:, 1] = torch.arange(start, start + count, dtype=torch.float32)
    return keys


def key_ids(moco: MoCoLoss) -> list[int]:
    keys, _, _ = moco.queued()
    return [round(float(k[1] / k[0])) for k in keys]  # undo the normalisation


# --------------------------------------------------------------------------------------------------
# Queue
# --------------------------------------------------------------------------------------------------


def test_queue_is_fifo_and_wraps_around() -> None:
    moco = MoCoLoss(dim=4, queue_size=5)
    assert key_ids(moco) == []
    moco.enqueue(numbered_keys(0, 2))
    moco.enqueue(numbered_keys(2, 2))
    assert key_ids(moco) == [0, 1, 2, 3]
    assert int(moco.queue_ptr) == 4 and int(moco.queue_len) == 4
    moco.enqueue(numbered_keys(4, 2))  # wraps: key 5 lands in slot 0, key 0 is dropped
    assert key_ids(moco) == [1, 2, 3, 4, 5]
    assert int(moco.queue_ptr) == 1 and int(moco.queue_len) == 5
    torch.testing.assert_close(moco.queue[0], unit(numbered_keys(5, 1))[0])
    moco.enqueue(numbered_keys(6, 3))
    assert key_ids(moco) == [4, 5, 6, 7, 8]


def test_batch_larger_than_queue_keeps_the_newest() -> None:
    moco = MoCoLoss(dim=4, queue_size=3)
    moco.enqueue(numbered_keys(0, 1))
    moco.enqueue(numbered_keys(1, 7))
    assert key_ids(moco) == [5, 6, 7]
    assert int(moco.queue_ptr) == (1 + 7) % 3


def test_queue_stores_normalised_keys_labels_and_groups() -> None:
    moco = MoCoLoss(dim=4, queue_size=4)
    moco.enqueue(torch.randn(2, 4) * 7, torch.tensor([3, -1]), torch.tensor([10, 11]))
    moco.enqueue(torch.randn(1, 4))
    keys, labels, groups = moco.queued()
    torch.testing.assert_close(keys.norm(dim=1), torch.ones(3))
    assert labels.tolist() == [3, -1, -1]
    assert groups.tolist() == [10, 11, NO_GROUP]


def test_queue_survives_state_dict_round_trip() -> None:
    moco = MoCoLoss(dim=4, queue_size=5)
    for start in (0, 3, 6):
        moco.enqueue(numbered_keys(start, 3), torch.arange(3) + start, torch.arange(3))
    state = moco.state_dict()
    assert {"queue", "queue_labels", "queue_groups", "queue_ptr", "queue_len"} <= set(state)

    fresh = MoCoLoss(dim=4, queue_size=5)
    fresh.load_state_dict(state)
    for a, b in zip(moco.queued(), fresh.queued(), strict=True):
        torch.testing.assert_close(a, b)
    assert int(fresh.queue_ptr) == int(moco.queue_ptr)
    q, k = torch.randn(2, 4), torch.randn(2, 4)
    torch.testing.assert_close(fresh(q, k), moco(q, k))
    fresh.enqueue(numbered_keys(9, 1))
    moco.enqueue(numbered_keys(9, 1))
    assert key_ids(fresh) == key_ids(moco) == [5, 6, 7, 8, 9]


# --------------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------------


def reference_moco(
    query: Tensor,
    key: Tensor,
    queue: Tensor,
    queue_labels: list[int],
    queue_groups: list[int],
    labels: list[int] | None,
    groups: list[int] | None,
    *,
    temperature: float,
    label_positives: bool,
    group_positives: bool,
) -> Tensor:
    """Loop reference: candidates are the own key followed by every queue entry."""
    q, k, bank = unit(query), unit(key), unit(queue)
    terms = []
    for i in range(q.shape[0]):
        logits = [torch.dot(q[i], k[i]) / temperature]
        positive = [True]
        for j in range(bank.shape[0]):
            pos = label_positives and labels is not None and labels[i] >= 0
            pos = pos and labels[i] == queue_labels[j]
            same_patient = groups is not None and groups[i] == queue_groups[j]
            pos = pos or (group_positives and same_patient)
            if same_patient and not pos:
                continue  # a same-patient entry is never a negative
            logits.append(torch.dot(q[i], bank[j]) / temperature)
            positive.append(pos)
        log_denominator = torch.log(sum(torch.exp(x) for x in logits))
        pos_logits = [x for x, p in zip(logits, positive, strict=True) if p]
        terms.append(log_denominator - sum(pos_logits) / len(pos_logits))
    return sum(terms) / len(terms)


@pytest.mark.parametrize(
    ("label_positives", "group_positives", "use_labels", "use_groups"),
    [
        (False, False, False, False),  # plain MoCo InfoNCE
        (False, False, True, True),  # same-patient entries excluded
        (True, False, True, False),  # SupCon variant
        (True, False, True, True),
        (False, True, False, True),  # patient positives
        (True, True, True, True),
    ],
)
def test_loss_matches_reference(
    label_positives: bool, group_positives: bool, use_labels: bool, use_groups: bool
) -> None:
    gen = torch.Generator().manual_seed(0)
    dim, batch = 6, 5
    moco = MoCoLoss(
        dim=dim,
        queue_size=8,
        temperature=0.3,
        label_positives=label_positives,
        group_positives=group_positives,
    ).double()
    queue_labels = [0, 1, -1, 2, 0, 1, -1, 2, 0, 1]
    queue_groups = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    bank = torch.randn(10, dim, generator=gen, dtype=torch.float64)
    moco.enqueue(bank[:6], torch.tensor(queue_labels[:6]), torch.tensor(queue_groups[:6]))
    moco.enqueue(bank[6:], torch.tensor(queue_labels[6:]), torch.tensor(queue_groups[6:]))
    stored, stored_labels, stored_groups = moco.queued()

    query = torch.randn(batch, dim, generator=gen, dtype=torch.float64, requires_grad=True)
    key = torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    labels = [0, 1, -1, 2, 0] if use_labels else None
    groups = [2, 3, 4, 11, 9] if use_groups else None
    ours = moco(
        query,
        key,
        torch.tensor(labels) if labels is not None else None,
        torch.tensor(groups) if groups is not None else None,
    )
    ref = reference_moco(
        query,
        key,
        stored,
        stored_labels.tolist(),
        stored_groups.tolist(),
        labels,
        groups,
        temperature=0.3,
        label_positives=label_positives,
        group_positives=group_positives,
    )
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-10)
    (g_ours,) = torch.autograd.grad(ours, query)
    (g_ref,) = torch.autograd.grad(ref, query)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-10, rtol=1e-10)


def test_plain_moco_is_cross_entropy_on_key_and_queue() -> None:
    gen = torch.Generator().manual_seed(1)
    moco = MoCoLoss(dim=8, queue_size=16, temperature=0.2)
    moco.enqueue(torch.randn(16, 8, generator=gen))
    q, k = torch.randn(4, 8, generator=gen), torch.randn(4, 8, generator=gen)
    logits = torch.cat([(unit(q) * unit(k)).sum(1, keepdim=True), unit(q) @ moco.queue.T], 1) / 0.2
    expected = nn.functional.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(moco(q, k), expected)


def test_empty_queue_and_no_gradient_to_key() -> None:
    moco = MoCoLoss(dim=4, queue_size=4)
    q = torch.randn(3, 4, requires_grad=True)
    k = torch.randn(3, 4, requires_grad=True)
    value = moco(q, k)
    assert float(value.detach()) == 0.0  # only the positive in the softmax
    moco.enqueue(torch.randn(4, 4))
    moco(q, k).backward()
    assert k.grad is None and q.grad is not None
