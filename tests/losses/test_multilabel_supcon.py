"""Multi-label SupCon against a slow literal loop reference (values and gradients, float64, 1e-8),
its exact reduction to the SupCon part of SSCLLoss on one-hot findings, and two ranks against one
process."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from medcl.losses import MultiLabelSupConLoss, SSCLLoss
from medcl.losses.multilabel_supcon import finding_overlap
from tests.losses._ranks import run_on_two_ranks
from tests.losses.test_contrastive import CASES as SINGLE_LABEL_CASES
from tests.losses.test_contrastive import make_inputs

# --------------------------------------------------------------------------------------------------
# Reference: the definitions, one anchor and one candidate at a time
# --------------------------------------------------------------------------------------------------


def jaccard_by_sets(a: list[int], b: list[int]) -> float:
    """``w(a, b)`` from Python sets over the findings known in both."""
    known = [k for k in range(len(a)) if a[k] >= 0 and b[k] >= 0]
    ya = {k for k in known if a[k] == 1}
    yb = {k for k in known if b[k] == 1}
    if ya | yb:
        return len(ya & yb) / len(ya | yb)
    return 1.0 if known else 0.0


def reference_loss(
    features: Tensor,
    findings: Tensor,
    groups: Tensor | None,
    temperature: float,
    group_positives: bool = False,
) -> Tensor:
    n, v, _ = features.shape
    flat = (features / features.norm(dim=-1, keepdim=True)).reshape(n * v, -1)
    rows = findings.tolist()

    def weight(i: int, j: int) -> float:
        a, b = i // v, j // v
        if groups is not None and group_positives and int(groups[a]) == int(groups[b]):
            return 1.0
        return jaccard_by_sets(rows[a], rows[b])

    def excluded(i: int, j: int) -> bool:
        same_patient = groups is not None and int(groups[i // v]) == int(groups[j // v])
        return same_patient and weight(i, j) == 0

    terms = []
    for i in range(n * v):
        if all(f < 0 for f in rows[i // v]):
            continue  # an unlabelled anchor
        a_set = [j for j in range(n * v) if j != i and not excluded(i, j)]
        sim = {j: torch.dot(flat[i], flat[j]) / temperature for j in a_set}
        log_denominator = torch.log(sum(torch.exp(sim[a]) for a in a_set))
        weights = {p: weight(i, p) for p in a_set if weight(i, p) > 0}
        total = sum(w * (sim[p] - log_denominator) for p, w in weights.items())
        terms.append(-total / sum(weights.values()))
    return sum(terms) / len(terms) if terms else features.sum() * 0.0


# --------------------------------------------------------------------------------------------------
# Cases: (N, V, findings, groups, group_positives)
# --------------------------------------------------------------------------------------------------

FINDINGS = [
    [1, 0, 1, 0],  # two findings
    [1, 1, 0, 0],  # overlaps sample 0 by 1/3
    [0, 0, 0, 0],  # no finding at all
    [0, 0, 0, 0],  # the same empty set: weight 1 with sample 2
    [1, -1, 1, -1],  # partly unknown: equal to sample 0 on what both know
    [-1, -1, -1, -1],  # unlabelled: a negative only
    [-1, 1, -1, 0],  # known only where sample 4 is unknown: weight 0 with it
    [0, 1, 1, 1],
]
CASES: dict[str, tuple[int, int, list[list[int]], list[int] | None, bool]] = {
    "mixed": (8, 2, FINDINGS, None, False),
    "three_views": (8, 3, FINDINGS, None, False),
    "groups": (8, 2, FINDINGS, [0, 0, 1, 1, 2, 2, 3, 4], False),
    "group_positives": (8, 2, FINDINGS, [0, 0, 1, 1, 2, 2, 3, 4], True),
    "groups_three_views": (8, 3, FINDINGS, [0, 1, 1, 2, 0, 2, 3, 3], False),
    "all_unknown": (4, 2, [[-1, -1]] * 4, None, False),
}


def case_inputs(name: str, seed: int = 0) -> tuple[Tensor, Tensor, Tensor | None, bool]:
    n, v, findings, groups, group_positives = CASES[name]
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(n, v, 5, generator=gen, dtype=torch.float64) * 3.0
    features.requires_grad_(True)
    g = None if groups is None else torch.tensor(groups)
    return features, torch.tensor(findings), g, group_positives


def grad_of(value: Tensor, features: Tensor) -> Tensor:
    (grad,) = torch.autograd.grad(value, features, retain_graph=True)
    return grad


def assert_matches(ours: Tensor, ref: Tensor, features: Tensor) -> None:
    torch.testing.assert_close(ours, ref, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(
        grad_of(ours, features), grad_of(ref, features), atol=1e-8, rtol=1e-8
    )


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------


def test_overlap_weights_match_python_sets() -> None:
    gen = torch.Generator().manual_seed(3)
    findings = torch.randint(-1, 2, (30, 5), generator=gen)
    findings[0] = -1  # nothing known
    findings[1] = 0  # no finding
    got = finding_overlap(findings, findings)
    rows = findings.tolist()
    want = torch.tensor([[jaccard_by_sets(a, b) for b in rows] for a in rows], dtype=torch.float64)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    fixed = finding_overlap(torch.tensor(FINDINGS), torch.tensor(FINDINGS))
    assert fixed[0, 1] == pytest.approx(1 / 3) and fixed[2, 3] == 1.0 and fixed[0, 4] == 1.0
    assert fixed[4, 6] == 0.0 and fixed[5].sum() == 0.0


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_loss_matches_the_loop_reference(name: str, temperature: float) -> None:
    features, findings, groups, group_positives = case_inputs(name)
    loss = MultiLabelSupConLoss(temperature=temperature, group_positives=group_positives)
    ours = loss(features, findings, groups)
    ref = reference_loss(features, findings, groups, temperature, group_positives)
    assert_matches(ours, ref, features)


def one_hot_findings(labels: Tensor, n_classes: int) -> Tensor:
    """Class ``c`` → ``e_c``; an unlabelled sample (``-1``) → every finding unknown."""
    out = torch.zeros(labels.shape[0], n_classes, dtype=torch.int64)
    labelled = labels >= 0
    out[labelled, labels[labelled]] = 1
    out[~labelled] = -1
    return out


@pytest.mark.parametrize("name", list(SINGLE_LABEL_CASES))
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_one_hot_findings_give_exactly_sscls_supcon(name: str, temperature: float) -> None:
    features, labels, groups, group_positives = make_inputs(name, seed=1)
    sscl = SSCLLoss(temperature=temperature, group_positives=group_positives)
    single = sscl(features, labels, groups, sup=True, ssl=False).sup
    multi = MultiLabelSupConLoss(temperature=temperature, group_positives=group_positives)
    ours = multi(features, one_hot_findings(labels, int(labels.max()) + 1), groups)
    assert_matches(ours, single, features)


def test_partial_overlap_is_weighted_not_counted_as_a_full_positive() -> None:
    """Sample 1 overlaps sample 0 by 1/3: as a full positive (weight 1) the loss differs."""
    features, findings, _, _ = case_inputs("mixed")
    loss = MultiLabelSupConLoss(temperature=0.2)
    weighted = loss(features, findings)
    binary = findings.clone()
    binary[1] = binary[0]  # now an exact match, weight 1
    assert not torch.allclose(weighted, loss(features, binary))


def test_without_a_known_finding_the_loss_is_zero() -> None:
    features = torch.randn(4, 2, 3, requires_grad=True)
    value = MultiLabelSupConLoss()(features, torch.full((4, 3), -1))
    assert value.item() == 0.0


@pytest.mark.parametrize(
    ("features", "findings", "groups"),
    [
        (torch.randn(4, 1, 3), torch.zeros(4, 2, dtype=torch.int64), None),
        (torch.randn(4, 2, 3), torch.zeros(3, 2, dtype=torch.int64), None),
        (torch.randn(4, 2, 3), torch.zeros(4, 2), None),
        (torch.randn(4, 2, 3), torch.full((4, 2), 2), None),
        (torch.randn(4, 2, 3), torch.zeros(4, 2, dtype=torch.int64), torch.zeros(3)),
    ],
)
def test_rejects_bad_inputs(features: Tensor, findings: Tensor, groups: Tensor | None) -> None:
    with pytest.raises(ValueError):
        MultiLabelSupConLoss()(features, findings, groups)


# --------------------------------------------------------------------------------------------------
# Two ranks equal one process
# --------------------------------------------------------------------------------------------------

SPLIT = (5, 3)  # uneven; rank 1 holds the unlabelled sample 5


def run_split(rank: int, distributed: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    model = nn.Linear(6, 5).double()
    inputs = torch.randn(8, 2, 6, dtype=torch.float64)
    findings = torch.tensor(FINDINGS)
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3, 4])
    if distributed:
        start = sum(SPLIT[:rank])
        part = slice(start, start + SPLIT[rank])
        inputs, findings, groups = inputs[part], findings[part], groups[part]
        model = nn.parallel.DistributedDataParallel(model)
    value = MultiLabelSupConLoss(temperature=0.2)(model(inputs), findings, groups)
    value.backward()
    params = model.module if distributed else model
    return {
        "loss": value.detach(),
        "grads": {k: p.grad.detach().clone() for k, p in params.named_parameters()},
    }


def rank_result(rank: int) -> dict[str, Any]:
    return run_split(rank, distributed=True)


def test_two_ranks_equal_one_process(tmp_path) -> None:
    single = run_split(0, distributed=False)
    for rank, got in enumerate(run_on_two_ranks(rank_result, tmp_path)):
        torch.testing.assert_close(got["loss"], single["loss"], atol=1e-8, rtol=1e-8)
        for key, grad in single["grads"].items():
            torch.testing.assert_close(
                got["grads"][key], grad, atol=1e-8, rtol=1e-8, msg=f"rank {rank}, {key}"
            )
