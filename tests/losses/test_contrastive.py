"""The contrastive parts (NT-Xent, SupCon over labelled anchors) against a slow literal loop
reference (values and gradients)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from medcl.losses import SSCLLoss, SSCLParts

# --------------------------------------------------------------------------------------------------
# Reference: explicit loops over anchors i and candidates j, A(i) and P(i) built element by element
# from the definitions, every similarity and log-sum-exp a scalar torch op (so autograd works).
# --------------------------------------------------------------------------------------------------


def reference_anchor_terms(
    features: Tensor,
    labels: Tensor | None,
    groups: Tensor | None,
    *,
    temperature: float,
    label_positives: bool,
    group_positives: bool,
) -> list[Tensor]:
    """Return ``l_i`` for every anchor view ``i`` (sample-major order ``i = n * V + v``)."""
    n, v, _ = features.shape
    z = features / features.norm(dim=-1, keepdim=True)
    flat = z.reshape(n * v, -1)
    count = n * v

    def sample(k: int) -> int:
        return k // v

    def positive(i: int, j: int) -> bool:
        if sample(i) == sample(j):
            return True
        if label_positives and labels is not None:
            li, lj = int(labels[sample(i)]), int(labels[sample(j)])
            if li >= 0 and li == lj:
                return True
        if group_positives and groups is not None:
            if int(groups[sample(i)]) == int(groups[sample(j)]):
                return True
        return False

    def excluded(i: int, j: int) -> bool:
        if groups is None:
            return False
        return int(groups[sample(i)]) == int(groups[sample(j)]) and not positive(i, j)

    terms = []
    for i in range(count):
        a_set = [j for j in range(count) if j != i and not excluded(i, j)]
        p_set = [j for j in a_set if positive(i, j)]
        sim = {j: torch.dot(flat[i], flat[j]) / temperature for j in a_set}
        log_denominator = torch.log(sum(torch.exp(sim[a]) for a in a_set))
        total = sum(sim[p] - log_denominator for p in p_set)
        terms.append(-total / len(p_set))
    return terms


def reference_loss(
    kind: str,
    features: Tensor,
    labels: Tensor | None,
    groups: Tensor | None,
    *,
    temperature: float = 0.1,
    group_positives: bool = False,
    lambda_sup: float = 1.0,
    lambda_ssl: float = 1.0,
) -> dict[str, Tensor]:
    """Reference value of ``kind`` in ``{"ntxent", "sscl"}``: NT-Xent's ``loss``, or SSCL's
    ``loss = λ1 · sup + λ2 · ssl`` with ``sup`` SupCon over the labelled anchors (0 without any)
    and ``ssl`` NT-Xent over all anchors."""
    common = dict(temperature=temperature, group_positives=group_positives)
    ssl_terms = reference_anchor_terms(features, None, groups, label_positives=False, **common)
    ssl = sum(ssl_terms) / len(ssl_terms)
    if kind == "ntxent":
        return {"loss": ssl}
    sup_terms = reference_anchor_terms(features, labels, groups, label_positives=True, **common)
    v = features.shape[1]
    labelled = [t for k, t in enumerate(sup_terms) if labels is not None and labels[k // v] >= 0]
    sup = sum(labelled) / len(labelled) if labelled else features.sum() * 0.0
    return {"loss": lambda_sup * sup + lambda_ssl * ssl, "sup": sup, "ssl": ssl}


# --------------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------------

# name: (N, V, labels, groups, group_positives)
CASES = {
    "all_unlabelled": (6, 2, [-1] * 6, None, False),
    "all_labelled": (6, 2, [0, 1, 2, 0, 1, 2], None, False),
    "one_class": (5, 2, [3] * 5, None, False),
    "lone_labelled": (6, 2, [-1, -1, 4, -1, -1, -1], None, False),
    "mixed": (7, 2, [0, -1, 1, 0, -1, 1, -1], None, False),
    "three_views": (5, 3, [0, -1, 0, 1, -1], None, False),
    # patient 0 has two images of different labels, patient 1 two of the same label,
    # patient 2 an unlabelled and a labelled image
    "groups": (8, 2, [0, 1, 0, 0, -1, 1, 0, -1], [0, 0, 1, 1, 2, 2, 3, 4], False),
    "groups_three_views": (6, 3, [0, 0, 1, -1, 1, -1], [0, 1, 1, 2, 0, 2], False),
    "group_positives": (8, 2, [0, 1, 0, 0, -1, 1, 0, -1], [0, 0, 1, 1, 2, 2, 3, 4], True),
    "groups_unlabelled": (6, 2, [-1] * 6, [0, 0, 1, 2, 2, 2], False),
}


def make_inputs(case: str, seed: int = 0) -> tuple[Tensor, Tensor, Tensor | None, bool]:
    n, v, labels, groups, group_positives = CASES[case]
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(n, v, 5, generator=gen, dtype=torch.float64) * 3.0
    features.requires_grad_(True)
    group_tensor = torch.tensor(groups) if groups is not None else None
    return features, torch.tensor(labels), group_tensor, group_positives


def grad_of(value: Tensor, features: Tensor) -> Tensor:
    (grad,) = torch.autograd.grad(value, features, retain_graph=True)
    return grad


def assert_matches(ours: Tensor, ref: Tensor, features: Tensor) -> None:
    torch.testing.assert_close(ours, ref, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(
        grad_of(ours, features), grad_of(ref, features), atol=1e-8, rtol=1e-8
    )


# --------------------------------------------------------------------------------------------------
# Tests against the reference
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_ntxent_part_matches_reference(case: str, temperature: float) -> None:
    features, labels, groups, group_positives = make_inputs(case)
    loss = SSCLLoss(temperature=temperature, group_positives=group_positives)
    parts = loss(features, labels, groups, sup=False)
    assert parts.sup is None and parts.ssl is not None
    ref = reference_loss(
        "ntxent", features, labels, groups, temperature=temperature, group_positives=group_positives
    )
    assert_matches(parts.ssl, ref["loss"], features)


@pytest.mark.parametrize("case", list(CASES))
def test_supcon_part_matches_reference(case: str) -> None:
    """SupCon alone: the mean of ``l_i`` over the labelled anchors (0 without any)."""
    features, labels, groups, group_positives = make_inputs(case, seed=1)
    loss = SSCLLoss(temperature=0.2, group_positives=group_positives)
    parts = loss(features, labels, groups, ssl=False)
    assert parts.ssl is None and parts.sup is not None
    ref = reference_loss(
        "sscl", features, labels, groups, temperature=0.2, group_positives=group_positives
    )
    assert_matches(parts.sup, ref["sup"], features)


@pytest.mark.parametrize("case", list(CASES))
def test_both_parts_from_one_call_match_reference(case: str) -> None:
    """Asked together (sharing the similarity matrix and, where allowed, the log-denominator),
    each part has the reference's value and gradient, and a weighted sum the weighted gradient."""
    features, labels, groups, group_positives = make_inputs(case, seed=2)
    kwargs = dict(temperature=0.1, group_positives=group_positives)
    parts = SSCLLoss(**kwargs)(features, labels, groups)
    ref = reference_loss("sscl", features, labels, groups, **kwargs)
    assert_matches(parts.sup, ref["sup"], features)
    assert_matches(parts.ssl, ref["ssl"], features)
    assert_matches(0.7 * parts.sup + 1.3 * parts.ssl, 0.7 * ref["sup"] + 1.3 * ref["ssl"], features)


@pytest.mark.parametrize(
    ("case", "asked", "expected"),
    [
        ("mixed", {"sup": True, "ssl": False}, 1),
        ("mixed", {"sup": False, "ssl": True}, 1),
        ("mixed", {"sup": True, "ssl": True}, 1),  # no patient ids: one A(i), one denominator
        ("group_positives", {"sup": True, "ssl": True}, 1),  # same-patient views positive in both
        ("groups", {"sup": True, "ssl": True}, 1),  # A(i) differs: a sparse correction, one pass
        ("groups", {"sup": True, "ssl": False}, 1),
        ("groups", {"sup": False, "ssl": True}, 1),
    ],
)
def test_computes_only_what_is_asked(case: str, asked: dict[str, bool], expected: int) -> None:
    """One pass over the logit matrix whatever is asked (one row softmax; SupCon's different
    ``A(i)`` is a sparse correction): count the passes (and the parts returned)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    features, labels, groups, group_positives = make_inputs(case)
    calls = [0]

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            if func.__name__.startswith(("logsumexp", "_softmax", "_log_softmax")):
                calls[0] += 1
            return func(*args, **(kwargs or {}))

    with Counter(), torch.no_grad():
        parts = SSCLLoss(group_positives=group_positives)(features, labels, groups, **asked)
    assert calls[0] == expected
    assert (parts.sup is not None, parts.ssl is not None) == (asked["sup"], asked["ssl"])


def test_asking_for_nothing_is_refused() -> None:
    features, labels, groups, _ = make_inputs("mixed")
    with pytest.raises(ValueError, match="at least one part"):
        SSCLLoss()(features, labels, groups, sup=False, ssl=False)


# --------------------------------------------------------------------------------------------------
# Reductions between the parts
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["mixed", "groups", "three_views"])
def test_supcon_with_distinct_labels_is_ntxent(case: str) -> None:
    """Every sample labelled, each with its own class: no label positives, so SupCon = NT-Xent."""
    features, _, groups, _ = make_inputs(case)
    distinct = torch.arange(features.shape[0])
    parts = SSCLLoss(temperature=0.3)(features, distinct, groups)
    torch.testing.assert_close(parts.sup, parts.ssl, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("labels_given", [True, False])
def test_supcon_without_labelled_samples_is_zero(labels_given: bool) -> None:
    features, labels, groups, _ = make_inputs("groups_unlabelled")
    parts = SSCLLoss()(features, labels if labels_given else None, groups)
    alone = SSCLLoss()(features, None, groups, sup=False)
    assert float(parts.sup.detach()) == 0.0
    torch.testing.assert_close(parts.ssl, alone.ssl, atol=1e-12, rtol=1e-12)


def test_ntxent_ignores_labels() -> None:
    features, labels, groups, _ = make_inputs("mixed")
    loss = SSCLLoss()
    torch.testing.assert_close(
        loss(features, labels, groups, sup=False).ssl, loss(features, None, groups, sup=False).ssl
    )


def test_groups_change_the_loss() -> None:
    """Guards the reference cases: the grouped case must actually exclude something."""
    features, labels, groups, _ = make_inputs("groups")
    loss = SSCLLoss()
    with_groups = loss(features, labels, groups, ssl=False).sup
    assert not torch.allclose(with_groups, loss(features, labels, None, ssl=False).sup)


def test_ntxent_two_views_is_simclr() -> None:
    """V=2, no groups: the textbook SimCLR formula with a (2N, 2N) softmax."""
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(2, 6, 4, generator=gen, dtype=torch.float64).unbind(0)
    z = torch.nn.functional.normalize(torch.cat([a, b]), dim=1)
    sim = z @ z.T / 0.5
    sim.fill_diagonal_(float("-inf"))
    n = a.shape[0]
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    expected = torch.nn.functional.cross_entropy(sim, target)
    ours = SSCLLoss(temperature=0.5)(torch.stack([a, b], dim=1), sup=False).ssl
    torch.testing.assert_close(ours, expected)


# --------------------------------------------------------------------------------------------------
# Numerics, dtype, memory
# --------------------------------------------------------------------------------------------------

ASKED = {
    "sup": {"sup": True, "ssl": False},
    "ssl": {"sup": False, "ssl": True},
    "both": {"sup": True, "ssl": True},
}


def total(parts: SSCLParts) -> Tensor:
    """The sum of the parts that were computed."""
    return sum(p for p in parts if p is not None)  # type: ignore[return-value]


@pytest.mark.parametrize("asked", list(ASKED))
def test_bf16_autocast_accumulates_in_float32(asked: str) -> None:
    features, labels, groups, _ = make_inputs("groups")
    features = features.detach().float()
    loss = SSCLLoss(temperature=0.05)
    expected = total(loss(features, labels, groups, **ASKED[asked]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = total(loss(features, labels, groups, **ASKED[asked]))
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("asked", list(ASKED))
def test_stable_at_low_temperature_and_large_norms(asked: str) -> None:
    gen = torch.Generator().manual_seed(4)
    features = (torch.randn(32, 2, 16, generator=gen) * 1e4).requires_grad_(True)
    labels = torch.randint(-1, 3, (32,), generator=gen)
    groups = torch.randint(0, 8, (32,), generator=gen)
    value = total(SSCLLoss(temperature=0.01)(features, labels, groups, **ASKED[asked]))
    (grad,) = torch.autograd.grad(value, features)
    assert torch.isfinite(value) and torch.isfinite(grad).all()


@pytest.mark.parametrize("asked", list(ASKED))
def test_never_materialises_nv_nv_d(asked: str) -> None:
    """Record every tensor produced in forward+backward; none may have NV*NV*D elements."""
    # A hard import on purpose: if torch moves this module the test must fail, not skip.
    from torch.utils._python_dispatch import TorchDispatchMode

    n, v, d = 32, 2, 64
    gen = torch.Generator().manual_seed(5)
    features = torch.randn(n, v, d, generator=gen, requires_grad=True)
    labels = torch.randint(-1, 3, (n,), generator=gen)
    groups = torch.randint(0, 10, (n,), generator=gen)
    largest = [0]

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, Tensor):
                    largest[0] = max(largest[0], t.numel())
            return out

    with Recorder():
        value = total(SSCLLoss()(features, labels, groups, **ASKED[asked]))
        value.backward()
    nv = n * v
    assert largest[0] >= nv * nv  # the recorder saw the similarity matrix
    assert largest[0] < nv * nv * 2  # ... and nothing near (NV, NV, D)


def dense_reference_sscl(
    features: Tensor,
    labels: Tensor,
    groups: Tensor,
    *,
    temperature: float,
    lambda_sup: float,
    lambda_ssl: float,
) -> Tensor:
    """SSCL from the definitions (docs/objectives.md) with dense (NV, NV) masks, in float64.

    Same-patient views that are not positives are left out of ``A(i)``; SupCon is averaged over
    labelled anchors, NT-Xent over all anchors.
    """
    n, v, d = features.shape
    z = features.double()
    z = (z / z.norm(dim=-1, keepdim=True)).reshape(n * v, d)
    sample = torch.arange(n).repeat_interleave(v)
    lab, grp = labels.repeat_interleave(v), groups.repeat_interleave(v)
    sim = z @ z.T / temperature
    not_self = ~torch.eye(n * v, dtype=torch.bool)
    same_sample = sample[:, None] == sample[None, :]
    same_label = (lab[:, None] == lab[None, :]) & (lab >= 0)[:, None]
    same_group = grp[:, None] == grp[None, :]

    def anchor_terms(positive: Tensor) -> Tensor:
        valid = not_self & ~(same_group & ~positive)
        positive = positive & valid
        log_denominator = torch.logsumexp(sim.masked_fill(~valid, float("-inf")), 1, keepdim=True)
        log_prob = sim - log_denominator
        return -(log_prob * positive).sum(1) / positive.sum(1)

    ssl = anchor_terms(same_sample).mean()
    sup = anchor_terms(same_sample | same_label)[lab >= 0].mean()
    return lambda_sup * sup + lambda_ssl * ssl


def test_large_batch_matches_dense_reference() -> None:
    """NV = 2048, D = 128, float32: value and gradient equal a float64 dense reference."""
    n, v, d = 1024, 2, 128
    gen = torch.Generator().manual_seed(6)
    features = torch.randn(n, v, d, generator=gen, requires_grad=True)
    labels = torch.randint(-1, 10, (n,), generator=gen)
    groups = torch.randint(0, 256, (n,), generator=gen)  # ~4 images per patient: exclusions
    kwargs = dict(temperature=0.1, lambda_sup=0.7, lambda_ssl=1.3)
    parts = SSCLLoss(temperature=0.1)(features, labels, groups)
    value = 0.7 * parts.sup + 1.3 * parts.ssl
    (grad,) = torch.autograd.grad(value, features)
    ref_features = features.detach().double().requires_grad_(True)
    ref = dense_reference_sscl(ref_features, labels, groups, **kwargs)
    (ref_grad,) = torch.autograd.grad(ref, ref_features)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value.double(), ref.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad.double(), ref_grad, atol=1e-8, rtol=1e-4)


# --------------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("features", "labels", "groups"),
    [
        (torch.randn(4, 8), None, None),  # not (N, V, D)
        (torch.randn(4, 1, 8), None, None),  # one view
        (torch.randn(4, 2, 8), torch.zeros(3, dtype=torch.long), None),  # wrong length
        (torch.randn(4, 2, 8), torch.zeros(4), None),  # float labels
        (torch.randn(4, 2, 8), None, torch.zeros(4, 1, dtype=torch.long)),  # wrong shape
    ],
)
def test_rejects_bad_inputs(features: Tensor, labels: Tensor | None, groups: Tensor | None) -> None:
    with pytest.raises(ValueError):
        SSCLLoss()(features, labels, groups)


def test_rejects_bad_temperature() -> None:
    with pytest.raises(ValueError):
        SSCLLoss(temperature=0.0)
