"""Exact comparison of integer results with the reference: equal, or the first mismatch named.

Bit-exact means equal. Every comparison of C (host or target) with ``run_reference`` goes
through here, so a failure always reads the same way: how many values differ, and the first one
by sequence, step and index, with the C and the reference value.
"""

from __future__ import annotations

import numpy as np

from stapes.errors import CheckFailed


def first_mismatch(what: str, c_values: np.ndarray, ref_values: np.ndarray) -> str | None:
    """None when equal, else "<what>: N mismatching values; first at sequence b, step t, index i:
    C v, reference w" (arrays (B, T, K) or (B, K))."""
    c_values, ref_values = np.asarray(c_values), np.asarray(ref_values)
    if c_values.shape != ref_values.shape:
        return f"{what}: C shape {c_values.shape} != reference shape {ref_values.shape}"
    bad = c_values != ref_values
    if not bad.any():
        return None
    where = tuple(int(i) for i in np.argwhere(bad)[0])
    pos = (
        f"sequence {where[0]}, step {where[1]}, index {where[2]}"
        if len(where) == 3
        else f"sequence {where[0]}, index {where[1]}"
    )
    return (
        f"{what}: {int(bad.sum())} mismatching values; first at {pos}: "
        f"C {int(c_values[where])}, reference {int(ref_values[where])}"
    )


def assert_bit_exact(c_outputs, c_states, ref) -> None:
    """Raise CheckFailed with the first mismatch (states first: they explain the outputs)."""
    for what, c_arr, r_arr in (("states", c_states, ref.states), ("outputs", c_outputs, ref.outputs)):
        msg = first_mismatch(what, c_arr, r_arr)
        if msg:
            raise CheckFailed(msg)
