"""Acquisition ranking (uncertainty + k-center diversity) against hand-computed references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medcl.app.acquisition import distance_to_set, rank_for_labelling, uncertainty_scores

THIRD = 1 / 3
# three candidates: maximally uncertain, two-way tie, certain
PROBA = np.array([[THIRD, THIRD, THIRD], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
# candidates on the unit circle at 0°, 90° and 45°; the one labelled image at 0°
VECTORS = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
LABELLED = np.array([[2.0, 0.0]])
H2 = math.log(2) / math.log(3)  # normalised entropy of (0.5, 0.5, 0)
D45 = 1 - math.cos(math.pi / 4)  # cosine distance at 45°


def test_uncertainty_entropy_and_margin_by_hand() -> None:
    np.testing.assert_allclose(uncertainty_scores(PROBA, "entropy"), [1.0, H2, 0.0], atol=1e-12)
    np.testing.assert_allclose(uncertainty_scores(PROBA, "margin"), [1.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(uncertainty_scores(np.array([[0.5, 0.3, 0.2]]), "margin"), [0.8])
    with pytest.raises(ValueError, match="unknown uncertainty"):
        uncertainty_scores(PROBA, "variance")


def test_distance_to_set_is_cosine_distance_to_nearest() -> None:
    np.testing.assert_allclose(distance_to_set(VECTORS, LABELLED), [0.0, 1.0, D45], atol=1e-6)
    assert np.isinf(distance_to_set(VECTORS, np.zeros((0, 2)))).all()


def test_ranking_matches_hand_computed_reference() -> None:
    # D = (0, 1, D45), D* = 1.  beta = 0.5:
    #   step 1: s = (0.5, 0.5 H2 + 0.5, 0.5 D45) -> pick 1 (score 0.5 H2 + 0.5)
    #   D after adding candidate 1 (90°): (0, 0, D45)  [45° is D45 from 90° too]
    #   step 2: s = (0.5, -, 0.5 D45) -> pick 0 (0.5); step 3: pick 2 (0.5 D45)
    r = rank_for_labelling(PROBA, VECTORS, LABELLED, budget=3, beta=0.5)
    assert r.order.tolist() == [1, 0, 2]
    np.testing.assert_allclose(r.score, [0.5 * H2 + 0.5, 0.5, 0.5 * D45], atol=1e-6)
    np.testing.assert_allclose(r.uncertainty, [H2, 1.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(r.diversity, [1.0, 0.0, D45], atol=1e-6)
    assert np.all(np.diff(r.score) <= 1e-12), "scores never increase down the list"


def test_beta_extremes() -> None:
    only_u = rank_for_labelling(PROBA, VECTORS, LABELLED, budget=3, beta=0.0)
    assert only_u.order.tolist() == [0, 1, 2]
    np.testing.assert_allclose(only_u.score, [1.0, H2, 0.0], atol=1e-9)
    # pure k-center: farthest from the labelled image (90°), then 45° (D45 from both), then 0°
    only_d = rank_for_labelling(PROBA, VECTORS, LABELLED, budget=3, beta=1.0)
    assert only_d.order.tolist() == [1, 2, 0]
    np.testing.assert_allclose(only_d.score, [1.0, D45, 0.0], atol=1e-6)


def test_k_center_diversity_spreads_picks_over_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    # 20 near-duplicates in cluster 0 that are the most uncertain, 5 in each other cluster
    cluster = np.array([0] * 20 + [1] * 5 + [2] * 5)
    vectors = centres[cluster] + rng.normal(0, 0.02, (30, 3))
    proba = np.where(cluster[:, None] == 0, [0.34, 0.33, 0.33], [0.6, 0.3, 0.1])
    greedy_u = rank_for_labelling(proba, vectors, np.zeros((0, 3)), budget=3, beta=0.0)
    assert set(cluster[greedy_u.order]) == {0}, "uncertainty alone picks near-duplicates"
    diverse = rank_for_labelling(proba, vectors, np.zeros((0, 3)), budget=3, beta=0.7)
    assert set(cluster[diverse.order]) == {0, 1, 2}, "k-center covers every cluster"
    # with the only labelled image in cluster 1, the first diverse picks avoid cluster 1
    labelled = centres[[1]]
    r = rank_for_labelling(proba, vectors, labelled, budget=2, beta=1.0)
    assert 1 not in set(cluster[r.order])


def test_budget_and_validation() -> None:
    r = rank_for_labelling(PROBA, VECTORS, LABELLED, budget=10)
    assert sorted(r.order.tolist()) == [0, 1, 2]
    assert len(rank_for_labelling(PROBA[:0], VECTORS[:0], LABELLED, budget=5).order) == 0
    with pytest.raises(ValueError, match="beta"):
        rank_for_labelling(PROBA, VECTORS, LABELLED, budget=1, beta=1.5)
    with pytest.raises(ValueError, match="embeddings"):
        rank_for_labelling(PROBA, VECTORS[:2], LABELLED, budget=1)
