"""Seeds of derived random streams: one rule for mixing a run seed with counters.

A derived seed is a linear combination of integer counters (run seed, optimiser step, rank, row,
...) with distinct prime strides, reduced modulo ``2**63 - 1`` so that it is a valid
:meth:`torch.Generator.manual_seed` value. Distinct strides keep nearby counters of different kinds
from landing on the same seed (step 1 of seed 0 is not step 0 of seed 1).

The strides are fixed: changing one changes every augmentation draw, hence every result at a given
seed.
"""

from __future__ import annotations

SEED_STRIDE = 1_000_003
"""Stride of the run seed when a stream also mixes in steps or rows."""
STEP_STRIDE = 7_919
"""Stride of the optimiser step (and of the run seed in fine-tuning's per-step streams)."""
RANK_STRIDE = 104_729
"""Stride of the distributed rank."""

_MODULUS = 2**63 - 1


def mix_seed(*terms: tuple[int, int]) -> int:
    """The seed ``Σ value · stride`` of ``(value, stride)`` pairs, modulo ``2**63 - 1``.

    Examples: ``mix_seed((seed, SEED_STRIDE), (step, STEP_STRIDE), (rank, RANK_STRIDE),
    (micro_step, 1))`` for a training step, ``mix_seed((seed, SEED_STRIDE), (row, 1))`` for the
    views of the ``row``-th image of a preview.

    Args:
        *terms: ``(value, stride)`` pairs of integers.

    Returns:
        A non-negative integer below ``2**63 - 1``.
    """
    return sum(int(value) * int(stride) for value, stride in terms) % _MODULUS
