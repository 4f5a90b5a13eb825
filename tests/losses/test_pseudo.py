"""Pseudo-labels in the SupCon term against a slow literal reference: the candidates, the ramp's
allowance and the per-class cap chosen image by image, then SupCon's positive sets built anchor by
anchor from the true ∪ pseudo labels (values and gradients)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from medcl.losses import SSCLLoss
from medcl.losses.pseudo import pool_by_patient, select_pseudo_labels
from tests.losses.test_contrastive import reference_anchor_terms

# --------------------------------------------------------------------------------------------------
# Reference
# --------------------------------------------------------------------------------------------------


def reference_pseudo_labels(
    probs: Tensor, labels: Tensor, threshold: float, share: float, counts: list[int] | None
) -> list[int]:
    """The SupCon labels, chosen one image at a time (module docstring of medcl.losses.pseudo)."""
    n, n_classes = probs.shape
    candidates = []  # (index, confidence, class)
    for b in range(n):
        if int(labels[b]) >= 0:
            continue  # a true label is never overridden
        row = [float(probs[b, c]) for c in range(n_classes)]
        best = max(range(n_classes), key=lambda c: row[c])
        if row[best] >= threshold:
            candidates.append((b, row[best], best))
    allowed = math.floor(share * len(candidates))
    candidates.sort(key=lambda t: (-t[1], t[0]))  # most confident first, ties by index
    kept: dict[int, int] = {}
    if counts is None:
        for b, _, c in candidates[:allowed]:
            kept[b] = c
    else:
        shares = counts if sum(counts) > 0 else [1] * n_classes
        for c in range(n_classes):
            cap = shares[c] * allowed // sum(shares)
            mine = [b for b, _, cc in candidates if cc == c]
            for b in mine[:cap]:
                kept[b] = c
    return [kept.get(b, int(labels[b])) for b in range(n)]


def reference_supcon(
    features: Tensor, sup_labels: list[int], groups: Tensor | None, group_positives: bool
) -> Tensor:
    """SupCon over the anchors labelled or pseudo-labelled, positives from the same labels."""
    lab = torch.tensor(sup_labels)
    terms = reference_anchor_terms(
        features,
        lab,
        groups,
        temperature=0.2,
        label_positives=True,
        group_positives=group_positives,
    )
    v = features.shape[1]
    anchors = [t for k, t in enumerate(terms) if sup_labels[k // v] >= 0]
    return sum(anchors) / len(anchors) if anchors else features.sum() * 0.0


# --------------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------------

N, C = 10, 3
LABELS = torch.tensor([0, -1, 1, -1, -1, 2, -1, -1, -1, 0])
GROUPS = torch.tensor([0, 1, 2, 1, 3, 4, 3, 5, 6, 7])


def make_probs(seed: int, sharp: float = 3.0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.softmax(sharp * torch.randn(N, C, generator=gen, dtype=torch.float64), dim=1)


def make_features(seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(100 + seed)
    return (torch.randn(N, 2, 5, generator=gen, dtype=torch.float64) * 2).requires_grad_(True)


# (threshold, share, counts, pool by patient)
SETTINGS = {
    "all_confident_no_cap": (0.0, 1.0, None, False),
    "threshold": (0.9, 1.0, None, False),
    "ramp_half": (0.5, 0.5, None, False),
    "ramp_zero": (0.0, 0.0, [5, 3, 2], False),
    "balanced": (0.4, 1.0, [5, 3, 2], False),
    "balanced_ramp": (0.3, 0.6, [2, 2, 1], False),
    "balanced_unknown_counts": (0.3, 0.8, [0, 0, 0], False),
    "pooled_balanced": (0.4, 0.7, [1, 1, 1], True),
}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", list(SETTINGS))
def test_supcon_with_pseudo_labels_matches_the_loop_reference(name: str, seed: int) -> None:
    threshold, share, counts, pool = SETTINGS[name]
    probs = make_probs(seed)
    if pool:
        probs = pool_by_patient(probs, GROUPS)
    chosen = select_pseudo_labels(
        probs,
        LABELS,
        threshold=threshold,
        share=share,
        class_counts=None if counts is None else torch.tensor(counts),
    )
    expected = reference_pseudo_labels(probs, LABELS, threshold, share, counts)
    assert chosen.labels.tolist() == expected
    features = make_features(seed)
    for groups, group_positives in ((None, False), (GROUPS, False), (GROUPS, True)):
        ours = SSCLLoss(0.2, group_positives)(features, chosen.labels, groups, ssl=False).sup
        ref = reference_supcon(features, expected, groups, group_positives)
        torch.testing.assert_close(ours, ref, atol=1e-8, rtol=1e-8)
        (g_ours,) = torch.autograd.grad(ours, features, retain_graph=True)
        (g_ref,) = torch.autograd.grad(ref, features, retain_graph=True)
        torch.testing.assert_close(g_ours, g_ref, atol=1e-8, rtol=1e-8)


def test_the_settings_exercise_what_they_are_named_for() -> None:
    """Over the seeds the cases keep and drop images as named: the threshold drops candidates,
    the ramp keeps ⌊r·|U|⌋ of them, the per-class cap binds."""
    seen: dict[str, list[tuple[int, int]]] = {}
    for seed in (0, 1, 2):
        for name, (threshold, share, counts, pool) in SETTINGS.items():
            probs = make_probs(seed)
            probs = pool_by_patient(probs, GROUPS) if pool else probs
            unlabelled = LABELS < 0
            confident = int((unlabelled & (probs.max(1).values >= threshold)).sum())
            got = reference_pseudo_labels(probs, LABELS, threshold, share, counts)
            kept = sum(a != b for a, b in zip(LABELS.tolist(), got, strict=True))
            seen.setdefault(name, []).append((confident, kept))
    assert all(kept == 6 for _, kept in seen["all_confident_no_cap"])
    assert any(confident < 6 for confident, _ in seen["threshold"])
    assert all(kept == confident // 2 for confident, kept in seen["ramp_half"])
    assert all(kept == 0 for _, kept in seen["ramp_zero"])
    for name in ("balanced", "balanced_ramp", "balanced_unknown_counts", "pooled_balanced"):
        assert any(0 < kept < confident for confident, kept in seen[name]), name


def test_true_labels_are_never_overridden() -> None:
    """The head is sure every image is class 2: the labelled ones keep their label."""
    probs = torch.tensor([[0.0, 0.0, 1.0]] * N, dtype=torch.float64)
    chosen = select_pseudo_labels(probs, LABELS, threshold=0.5, share=1.0, class_counts=None)
    labelled = LABELS >= 0
    assert torch.equal(chosen.labels[labelled], LABELS[labelled])
    assert (chosen.labels[~labelled] == 2).all() and not chosen.kept[labelled].any()


def test_balance_caps_each_class_at_its_labelled_share() -> None:
    """Six confident candidates, all of class 0, whose labelled share is 1/4: ⌊6/4⌋ = 1 is kept,
    the most confident; with balance off all six."""
    labels = torch.tensor([-1] * 6 + [0, 1, 1, 2])
    conf = torch.tensor([0.91, 0.97, 0.93, 0.99, 0.95, 0.92], dtype=torch.float64)
    probs = torch.zeros(10, 3, dtype=torch.float64)
    probs[:6, 0] = conf
    probs[:6, 1] = 1 - conf
    probs[6:, 0] = 1.0
    counts = torch.tensor([1, 2, 1])
    chosen = select_pseudo_labels(probs, labels, threshold=0.9, share=1.0, class_counts=counts)
    assert chosen.kept.tolist() == [False, False, False, True] + [False] * 6
    assert chosen.labels.tolist() == [-1, -1, -1, 0, -1, -1, 0, 1, 1, 2]
    free = select_pseudo_labels(probs, labels, threshold=0.9, share=1.0, class_counts=None)
    assert free.kept[:6].all() and free.confident[:6].all()
    half = select_pseudo_labels(probs, labels, threshold=0.9, share=0.5, class_counts=None)
    assert half.kept.nonzero().flatten().tolist() == [1, 3, 4]  # the 3 most confident


def test_pooling_averages_a_patients_images() -> None:
    probs = make_probs(3)
    pooled = pool_by_patient(probs, GROUPS)
    for b in range(N):
        mates = [k for k in range(N) if GROUPS[k] == GROUPS[b]]
        torch.testing.assert_close(pooled[b], probs[mates].mean(0))
