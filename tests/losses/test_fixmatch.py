"""FixMatchLoss against a per-sample float reference; masking, pseudo-labels, stop-gradient."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medcl.losses import FixMatchLoss
from medcl.losses.alignment import DistributionAlignment
from medcl.losses.fixmatch import pool_by_group


def _log_softmax(row: list[float]) -> list[float]:
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def _reference(lab, y, weak, strong, tau, lam, weight=None):
    """The paper's Eq. 2-4 one sample at a time, in Python floats."""
    lab, weak, strong = lab.tolist(), weak.tolist(), strong.tolist()
    y = y.tolist()
    w = [1.0] * len(lab[0]) if weight is None else weight.tolist()
    num = sum(-w[c] * _log_softmax(row)[c] for row, c in zip(lab, y, strict=True))
    sup = num / sum(w[c] for c in y)
    total, kept = 0.0, 0
    for wr, sr in zip(weak, strong, strict=True):
        q = [math.exp(v) for v in _log_softmax(wr)]
        conf = max(q)
        pseudo = q.index(conf)
        if conf >= tau:
            kept += 1
            total += -_log_softmax(sr)[pseudo]
    unsup = total / len(weak)  # over ALL unlabelled samples, masked ones count as 0
    return sup + lam * unsup, sup, unsup, kept / len(weak)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_per_sample_reference(weighted: bool, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    b, u, c = 6, 14, 4
    lab = torch.randn(b, c, generator=g) * 2
    y = torch.randint(c, (b,), generator=g)
    weak = torch.randn(u, c, generator=g) * 3
    strong = torch.randn(u, c, generator=g) * 2
    weight = torch.rand(c, generator=g) * 2 + 0.1 if weighted else None
    tau, lam = 0.6, 0.7
    loss, logs = FixMatchLoss(tau, lam)(lab, y, weak, strong, class_weight=weight)
    ref_loss, ref_sup, ref_unsup, ref_rate = _reference(lab, y, weak, strong, tau, lam, weight)
    assert 0 < ref_rate < 1, "the draw must have both masked and kept pseudo-labels"
    assert float(loss) == pytest.approx(ref_loss, abs=1e-6)
    assert float(logs["sup"]) == pytest.approx(ref_sup, abs=1e-6)
    assert float(logs["unsup"]) == pytest.approx(ref_unsup, abs=1e-6)
    assert float(logs["mask_rate"]) == pytest.approx(ref_rate, abs=1e-7)


def _binary_logits(p: float) -> list[float]:
    """Two-class logits whose softmax is ``(p, 1 - p)``."""
    return [math.log(p / (1 - p)), 0.0]


def test_confidence_mask_boundary() -> None:
    """Just below τ contributes 0, just above contributes its CE; the mean is over all samples."""
    tau = 0.8
    weak = torch.tensor([_binary_logits(tau - 1e-3), _binary_logits(tau + 1e-3)])
    # the strong views' confidence is the reverse of the weak views' (a threshold on the strong
    # view would keep the other sample)
    strong = torch.tensor([[4.0, 0.0], [0.3, 0.0]])
    lab, y = torch.zeros(1, 2), torch.tensor([0])
    loss, logs = FixMatchLoss(tau, 1.0)(lab, y, weak, strong)
    ce_above = float(F.cross_entropy(strong[1:], torch.tensor([0])))
    assert float(logs["mask_rate"]) == pytest.approx(0.5)
    assert float(logs["unsup"]) == pytest.approx(ce_above / 2, abs=1e-6)
    assert float(loss) == pytest.approx(math.log(2) + ce_above / 2, abs=1e-6)
    # moving the first sample just above τ makes it contribute too
    weak2 = torch.tensor([_binary_logits(tau + 1e-3), _binary_logits(tau + 1e-3)])
    _, logs2 = FixMatchLoss(tau, 1.0)(lab, y, weak2, strong)
    both = float(F.cross_entropy(strong, torch.tensor([0, 0])))
    assert float(logs2["unsup"]) == pytest.approx(both, abs=1e-6)
    assert float(logs2["mask_rate"]) == 1.0
    # a confidence exactly equal to τ is kept (max q ≥ τ, not >)
    at = float(F.softmax(weak, dim=1).max(dim=1).values[1])
    _, logs3 = FixMatchLoss(at, 1.0)(lab, y, weak, strong)
    assert float(logs3["mask_rate"]) == pytest.approx(0.5)


def test_pseudo_label_is_argmax_of_weak_view() -> None:
    weak = torch.tensor([[0.0, 0.0, 9.0], [7.0, 0.0, 0.0]])  # pseudo-labels 2 and 0
    strong = torch.tensor([[5.0, 1.0, 0.0], [0.0, 3.0, 1.0]])  # strong argmax 0 and 1
    lab, y = torch.zeros(1, 3), torch.tensor([1])
    _, logs = FixMatchLoss(0.9, 1.0)(lab, y, weak, strong)
    expected = float(F.cross_entropy(strong, torch.tensor([2, 0])))
    assert float(logs["unsup"]) == pytest.approx(expected, abs=1e-6)
    assert float(logs["mask_rate"]) == 1.0


def test_no_gradient_through_the_pseudo_label_or_the_mask() -> None:
    g = torch.Generator().manual_seed(3)
    lab = torch.randn(4, 3, generator=g, requires_grad=True)
    y = torch.tensor([0, 1, 2, 1])
    weak = (torch.randn(8, 3, generator=g) * 3).requires_grad_()
    strong = torch.randn(8, 3, generator=g, requires_grad=True)
    loss, logs = FixMatchLoss(0.9, 1.0)(lab, y, weak, strong)
    assert 0 < float(logs["mask_rate"]) < 1
    loss.backward()
    assert weak.grad is None or torch.count_nonzero(weak.grad) == 0
    assert strong.grad is not None and torch.count_nonzero(strong.grad) > 0
    assert lab.grad is not None and torch.count_nonzero(lab.grad) > 0
    assert all(not v.requires_grad for v in logs.values())


def test_lambda_zero_is_plain_supervised_cross_entropy() -> None:
    g = torch.Generator().manual_seed(4)
    lab = torch.randn(5, 3, generator=g)
    y = torch.tensor([0, 1, 2, 2, 0])
    weak = torch.randn(10, 3, generator=g) * 5
    strong = torch.randn(10, 3, generator=g, requires_grad=True)
    w = torch.tensor([0.5, 2.0, 1.0])
    loss, logs = FixMatchLoss(0.0, 0.0)(lab, y, weak, strong, class_weight=w)
    torch.testing.assert_close(loss, F.cross_entropy(lab, y, weight=w))
    assert float(logs["unsup"]) > 0  # computed and logged, but not added
    loss.backward()
    assert strong.grad is None or torch.count_nonzero(strong.grad) == 0


def test_empty_unlabelled_batch() -> None:
    lab, y = torch.randn(3, 2), torch.tensor([0, 1, 1])
    empty = torch.zeros(0, 2)
    loss, logs = FixMatchLoss()(lab, y, empty, empty)
    torch.testing.assert_close(loss, F.cross_entropy(lab, y))
    assert float(logs["unsup"]) == 0.0 and float(logs["mask_rate"]) == 0.0


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="threshold"):
        FixMatchLoss(threshold=1.5)
    with pytest.raises(ValueError, match="lambda_u"):
        FixMatchLoss(lambda_u=-1.0)
    with pytest.raises(ValueError, match="logits_weak"):
        FixMatchLoss()(
            torch.zeros(2, 3),
            torch.zeros(2, dtype=torch.long),
            torch.zeros(4, 3),
            torch.zeros(5, 3),
        )


def _pooled_reference(weak, strong, groups, tau):
    """Pooled targets by an explicit loop: ``q_i`` = mean of ``softmax(weak_j)`` over the ``j``
    with ``groups[j] == groups[i]``; masked CE of the strong views against ``argmax q_i``."""
    q = [[math.exp(v) for v in _log_softmax(row)] for row in weak.tolist()]
    g = groups.tolist()
    total, kept = 0.0, 0
    for i, sr in enumerate(strong.tolist()):
        mates = [j for j in range(len(g)) if g[j] == g[i]]
        pooled = [sum(q[j][c] for j in mates) / len(mates) for c in range(len(q[0]))]
        if max(pooled) >= tau:
            kept += 1
            total += -_log_softmax(sr)[pooled.index(max(pooled))]
    return total / len(g), kept / len(g)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_targets_pooled_over_groups_match_a_loop(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    u, c = 12, 3
    weak = torch.randn(u, c, generator=g) * 3
    strong = torch.randn(u, c, generator=g) * 2
    groups = torch.tensor([7, 7, 2, 2, 2, 9, 4, 4, 9, 1, 5, 5])  # sizes 1 to 3, not contiguous
    lab, y = torch.zeros(1, c), torch.tensor([0])
    tau = 0.55
    _, logs = FixMatchLoss(tau, 1.0)(lab, y, weak, strong, groups=groups)
    ref_unsup, ref_rate = _pooled_reference(weak, strong, groups, tau)
    assert 0 < ref_rate < 1, "the draw must have both masked and kept pseudo-labels"
    assert float(logs["unsup"]) == pytest.approx(ref_unsup, abs=1e-6)
    assert float(logs["mask_rate"]) == pytest.approx(ref_rate, abs=1e-7)
    # one image per group is no pooling at all
    _, plain = FixMatchLoss(tau, 1.0)(lab, y, weak, strong)
    _, single = FixMatchLoss(tau, 1.0)(lab, y, weak, strong, groups=torch.arange(u))
    assert float(single["unsup"]) == pytest.approx(float(plain["unsup"]), abs=1e-7)


def test_pool_by_group_is_a_mean_per_group() -> None:
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.2, 0.8]])
    pooled = pool_by_group(q, torch.tensor([3, 3, 0, 3]))
    torch.testing.assert_close(
        pooled, torch.tensor([[0.4, 0.6], [0.4, 0.6], [0.5, 0.5], [0.4, 0.6]])
    )


def test_alignment_is_applied_to_the_targets() -> None:
    """With alignment the pseudo-labels come from the aligned targets (the loss updates the
    running marginal once per call)."""
    weak = torch.tensor([[2.0, 1.6, 0.0], [2.0, 0.0, 1.9], [3.0, 0.0, 0.0]])
    strong = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [1.0, 0.0, 0.0]])
    lab, y = torch.zeros(1, 3), torch.tensor([0])
    target = torch.tensor([0.2, 0.4, 0.4])
    align = DistributionAlignment(target, window=4)
    _, logs = FixMatchLoss(0.0, 1.0, align)(lab, y, weak, strong)
    q = torch.softmax(weak, 1)
    aligned = q * target / q.mean(0)
    pseudo = (aligned / aligned.sum(1, keepdim=True)).argmax(1)
    assert pseudo.tolist() == [1, 2, 0]  # the first two flip away from the over-predicted class
    assert float(logs["unsup"]) == pytest.approx(float(F.cross_entropy(strong, pseudo)), abs=1e-6)
    assert align.seen == 1
