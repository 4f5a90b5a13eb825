"""The seed-mixing rule: fixed strides, so every stream keeps its values."""

from __future__ import annotations

from medcl.seeding import RANK_STRIDE, SEED_STRIDE, STEP_STRIDE, mix_seed


def test_strides_and_values_are_pinned():
    # changing a stride changes every augmentation draw at a given seed
    assert (SEED_STRIDE, STEP_STRIDE, RANK_STRIDE) == (1_000_003, 7_919, 104_729)
    assert mix_seed((3, SEED_STRIDE), (5, STEP_STRIDE), (1, RANK_STRIDE), (2, 1)) == 3_144_335
    assert mix_seed((2, STEP_STRIDE), (11, 1)) == 15_849
    assert mix_seed() == 0


def test_the_result_is_a_valid_generator_seed():
    big = mix_seed((2**70, SEED_STRIDE), (1, 1))
    assert 0 <= big < 2**63 - 1
    assert 0 <= mix_seed((-1, SEED_STRIDE)) < 2**63 - 1
