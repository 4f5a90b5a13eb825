"""``knn_predict`` against an explicit loop."""

from __future__ import annotations

import math

import pytest
import torch

from medcl.models.knn import knn_predict

# --------------------------------------------------------------------------------------------------
# Weighted cosine kNN
# --------------------------------------------------------------------------------------------------


def loop_knn(query, bank, bank_labels, n_classes, k, temperature):
    """Per query: cosines to every bank row, the k largest, class score += exp(cos / τ),
    then scores / their sum (Wu et al. 2018, as the knn module's docstring states)."""
    out = torch.zeros(query.shape[0], n_classes, dtype=torch.float64)
    k = min(k, bank.shape[0])
    for i in range(query.shape[0]):
        sims = []
        for j in range(bank.shape[0]):
            q, b = query[i].double(), bank[j].double()
            sims.append((float(q @ b / (q.norm() * b.norm())), j))
        sims.sort(reverse=True)
        for cos, j in sims[:k]:
            out[i, int(bank_labels[j])] += math.exp(cos / temperature)
        out[i] /= out[i].sum()
    return out


def knn_inputs(seed: int = 0, q: int = 7, m: int = 23, d: int = 6, classes: int = 4):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(q, d, generator=gen) * 5  # not normalised
    bank = torch.randn(m, d, generator=gen) * torch.rand(m, 1, generator=gen) * 3
    labels = torch.randint(0, classes, (m,), generator=gen)
    return query, bank, labels, classes


@pytest.mark.parametrize(
    ("k", "temperature", "chunk"),
    [(5, 0.07, 1024), (5, 0.5, 3), (1, 0.1, 2), (100, 0.2, 1024)],  # k > bank size: all of it
)
def test_knn_matches_loop(k, temperature, chunk):
    """Probabilities equal the loop reference (chunked or not, k clamped to the bank size)."""
    query, bank, labels, classes = knn_inputs()
    probs = knn_predict(query, bank, labels, classes, k=k, temperature=temperature, chunk=chunk)
    ref = loop_knn(query, bank, labels, classes, k, temperature)
    assert probs.shape == (query.shape[0], classes)
    torch.testing.assert_close(probs.double(), ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(probs.sum(1), torch.ones(query.shape[0]))


def test_knn_weighting_prefers_close_neighbours_over_many():
    """One very close neighbour of class 1 outweighs two distant ones of class 0 at small τ."""
    bank = torch.tensor([[1.0, 0.05], [0.2, 1.0], [0.1, 1.0]])
    labels = torch.tensor([1, 0, 0])
    query = torch.tensor([[1.0, 0.0]])
    probs = knn_predict(query, bank, labels, n_classes=2, k=3, temperature=0.1)
    assert probs.argmax(1).item() == 1
    torch.testing.assert_close(probs.double(), loop_knn(query, bank, labels, 2, 3, 0.1))


# --------------------------------------------------------------------------------------------------
# Per-finding vote
# --------------------------------------------------------------------------------------------------


def loop_findings(query, bank, states, k, temperature):
    """Per query and finding: over the k most similar bank rows, Σ w·1[present] / Σ w over the
    neighbours where the finding is known, w = exp(cos / τ); the bank's known prevalence when
    no neighbour knows it."""
    n_q, n_f = query.shape[0], states.shape[1]
    out = torch.zeros(n_q, n_f, dtype=torch.float64)
    k = min(k, bank.shape[0])
    for i in range(n_q):
        sims = []
        for j in range(bank.shape[0]):
            q, b = query[i].double(), bank[j].double()
            sims.append((float(q @ b / (q.norm() * b.norm())), j))
        sims.sort(reverse=True)
        for f in range(n_f):
            num = den = 0.0
            for cos, j in sims[:k]:
                if states[j, f] >= 0:
                    w = math.exp(cos / temperature)
                    num += w * float(states[j, f] == 1)
                    den += w
            if den > 0:
                out[i, f] = num / den
            else:
                known = [int(s) for s in states[:, f] if s >= 0]
                out[i, f] = sum(known) / len(known) if known else 0.5
    return out


def test_knn_findings_matches_a_loop():
    from medcl.models.knn import knn_findings

    g = torch.Generator().manual_seed(3)
    bank = torch.randn(12, 5, generator=g)
    query = torch.randn(6, 5, generator=g)
    states = torch.randint(-1, 2, (12, 4), generator=g)
    states[:, 3] = -1  # a finding the bank never knows: 0.5
    states[:4, 2] = -1
    for k in (1, 3, 50):
        got = knn_findings(query, bank, states, k, temperature=0.5)
        want = loop_findings(query, bank, states, k, 0.5)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    assert torch.all(knn_findings(query, bank, states, 3)[:, 3] == 0.5)
