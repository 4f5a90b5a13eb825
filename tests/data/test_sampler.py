"""Mixed labelled/unlabelled batches: shares, ranks, epochs, whole patients."""

from __future__ import annotations

import numpy as np
import pytest

from medcl.data.sampler import MixedBatchSampler, auto_labelled_share
from medcl.errors import MedclError


def test_labelled_share_per_batch():
    lab, unl = list(range(10)), list(range(10, 110))
    s = MixedBatchSampler(lab, unl, batch_size=16, labelled_share=0.25, seed=1)
    batches = list(s)
    assert len(batches) == len(s) == 110 // 16
    for b in batches:
        assert len(b) == 16
        assert sum(i < 10 for i in b) == 4
    # the small labelled pool is oversampled, each element about equally often
    counts = np.bincount([i for b in batches for i in b if i < 10], minlength=10)
    assert counts.max() - counts.min() <= 1


def test_unlabelled_pool_covered_without_repeats_in_an_epoch():
    s = MixedBatchSampler(
        list(range(4)), list(range(4, 100)), batch_size=12, labelled_share=1 / 3, seed=0
    )
    unl = [i for b in s for i in b if i >= 4]
    assert len(unl) == len(set(unl))


def test_ranks_get_disjoint_batches_and_same_length():
    lab, unl = list(range(20)), list(range(20, 200))
    a = MixedBatchSampler(lab, unl, 10, 0.5, num_replicas=2, rank=0, seed=3)
    b = MixedBatchSampler(lab, unl, 10, 0.5, num_replicas=2, rank=1, seed=3)
    one = MixedBatchSampler(lab, unl, 10, 0.5, num_replicas=1, rank=0, seed=3)
    assert len(a) == len(b) == 200 // 20
    ua = {i for bt in a for i in bt if i >= 20}
    ub = {i for bt in b for i in bt if i >= 20}
    assert not ua & ub
    # rank r takes every other global batch of the same stream
    whole = MixedBatchSampler(lab, unl, 10, 0.5, num_replicas=2, rank=0, seed=3)
    assert list(whole) == list(a)
    assert len(one) == 20


def test_epochs_reshuffle_deterministically():
    s = MixedBatchSampler(list(range(5)), list(range(5, 50)), 8, 0.25, seed=0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(0)
    assert list(s) == e0 and e0 != e1


def test_pool_edge_cases():
    only_unl = MixedBatchSampler([], list(range(20)), 4, 0.5)
    assert all(len(b) == 4 for b in only_unl)
    only_lab = MixedBatchSampler(list(range(20)), [], 4, 0.25)
    assert sorted(i for b in only_lab for i in b) == list(range(20))
    with pytest.raises(MedclError):
        MixedBatchSampler([], [], 4, 0.5)
    assert auto_labelled_share(0, 10) == 0 and auto_labelled_share(10, 0) == 1
    assert auto_labelled_share(5, 95) == 0.25 and auto_labelled_share(40, 60) == 0.4


def test_images_per_patient_puts_whole_patients_in_a_batch():
    # 30 patients with 4 images each, one patient with a single image; rows interleaved so that
    # a patient's images are not neighbours in the pool
    groups = np.array([i % 30 for i in range(120)] + [30])
    lab = list(range(0, 20))
    unl = list(range(20, 121))
    s = MixedBatchSampler(lab, unl, 12, 0.25, seed=4, groups=groups, images_per_patient=2)
    seen_single = 0
    for b in s:
        assert len(b) == 12
        assert sum(i < 20 for i in b) == 4  # round(0.25·12 / 2)·2, from the labelled pool
        for j in range(0, 12, 2):
            a, c = b[j], b[j + 1]
            assert groups[a] == groups[c]  # a run of two images of one patient
            if groups[a] == 30:
                seen_single += 1
                assert a == c == 120  # the one-image patient repeats its image
            elif (a < 20) == (c < 20):
                # same pool, patient with several images there: two different images
                pool = lab if a < 20 else unl
                if sum(groups[i] == groups[a] for i in pool) > 1:
                    assert a != c
    # every patient of the unlabelled pool comes once per pass before any repeats
    first = [groups[i] for b in s for i in b[4::2]][:31]
    assert len(set(first)) == 31
    assert seen_single >= 1


def test_images_per_patient_is_refused_without_groups_or_with_odd_batches():
    with pytest.raises(MedclError, match="patient group"):
        MixedBatchSampler([], list(range(8)), 4, 0.0, images_per_patient=2)
    with pytest.raises(MedclError, match="multiple of images_per_patient"):
        MixedBatchSampler([], list(range(8)), 5, 0.0, groups=[0] * 8, images_per_patient=2)


def test_the_sampler_keeps_copies_of_its_inputs() -> None:
    """The pretraining data module passes ``groups.numpy()``, a view of a dataset tensor whose
    storage is moved to shared memory (and the old one freed) when loader workers started by
    spawn receive the dataset: the batches must not read the caller's memory afterwards."""
    groups = np.repeat(np.arange(12), 3)
    lab, unl = np.arange(0, 12), np.arange(12, 36)
    kwargs = {"batch_size": 8, "labelled_share": 0.5, "seed": 3, "images_per_patient": 2}
    reference = list(MixedBatchSampler(lab.copy(), unl.copy(), groups=groups.copy(), **kwargs))
    g, la, un = groups.copy(), lab.copy(), unl.copy()
    sampler = MixedBatchSampler(la, un, groups=g, **kwargs)
    g[:] = g[::-1].copy()  # the caller's memory changes after the sampler was built
    la[:] = 0
    un[:] = 35
    assert list(sampler) == reference
