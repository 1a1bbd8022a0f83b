"""The constants of the arithmetic contract that the IR's invariants are stated in.

They mirror ``runtime_c/include/stp_fixed.h`` (integer ranges, accepted shifts, table layout) and
``stp_cell.c`` (scratch layout); ``stapes.fixed.fixedpoint`` re-exports them beside its twins.
docs/architecture.md explains the contract they belong to.
"""

from __future__ import annotations

INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1
INT32_MAX = (1 << 31) - 1
Q15_ONE = 1 << 15

# Shifts the runtime accepts (stp_shift_round_s64): right up to 31, left up to 16. With
# |v| < 2^31 a left shift by 16 stays below 2^47, so the sum of three terms fits int64.
SHIFT_MIN, SHIFT_MAX = -16, 31

# Activation tables: an int16 pre-activation v indexes entry (v + 32768) >> LUT_STEP_BITS and
# interpolates linearly with the low LUT_STEP_BITS bits: 2^(16 - bits) + 1 entries.
LUT_STEP_BITS = 6
LUT_SIZE = (1 << (16 - LUT_STEP_BITS)) + 1
# The pre-activation format each table reads: tanh on Q3.12 covers ±8, where tanh is within
# 2^-22 of ±1; sigmoid on Q4.11 covers ±16, where sigmoid is within 2^-23 of 0 or 1.
TABLE_INPUT_FRAC = {"tanh": 12, "sigmoid": 11}


def scratch_elements(kind: str, hidden: int, max_rank: int) -> int:
    """int16 elements of caller-owned scratch one step needs (stp_model_scratch_size in C).

    Layouts (stp_cell.c): tanh RNN pre (N) | z (R); MGU f (N) | f ⊙ h (N) | pre (N) | z (R), where
    z = B·h is the low-rank intermediate (R = the largest rank, 0 when dense)."""
    return (3 * hidden if kind == "mgu" else hidden) + max_rank
