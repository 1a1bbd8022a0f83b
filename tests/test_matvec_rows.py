"""The mat-vec rows in 32-bit arithmetic: the compiler's 32-bit requantisation rule, and the C rows
(portable, host SIMD, Cortex-M DSP kernels) equal to the reference on the paths the rule and the
kernels distinguish (left shifts, shift 1, odd input counts, int8 blocks with and without a tail)."""

from __future__ import annotations

import numpy as np
import pytest

from stapes.errors import UserError
from stapes.fixed import fixedpoint as fx
from stapes.fixed.quantize import quantize_graph
from stapes.fixed.reference import run_reference
from stapes.host import assert_bit_exact, run_runtime
from stapes.host.random_models import random_graph, random_inputs
from stapes.ir.float_graph import FloatGraph, MGUCell, Readout
from stapes.ir.lowrank import svd_factors
from stapes.ir.qgraph import QFormat, QGate, QTensor, shifted_bound
from stapes.target import profile, run, toolchain


def test_shifted_bound_is_the_largest_shifted_accumulation():
    """For every shift the runtime takes, the bound equals max |shift_round(acc, s)| over the
    accumulations the row proof allows (the extremes ±Σ|w|·32768 give it: shift_round is monotone)."""
    w = np.array([[3, -5, 7], [0, 0, 1], [127, -128, 127]], dtype=np.int64)
    t = QTensor("t", w.astype(np.int8), QFormat(8, (0, 0, 0)))
    for s in range(fx.SHIFT_MIN, fx.SHIFT_MAX + 1):
        bound = np.abs(w).sum(axis=1) * 32768
        accs = np.stack([bound, -bound, bound - 1, -bound + 1])
        expect = np.abs(fx.shift_round(accs, s)).max(axis=0)
        assert np.array_equal(shifted_bound(t, np.full(3, s)), expect), s


def test_the_ir_rejects_a_gate_beyond_the_32_bit_rule():
    q = quantize_graph(random_graph(1, kind="rnn", hidden=4, inputs=2), None, weights="int16")
    g = q.gates["h"]
    huge = QTensor(g.bias.name, np.full(4, 2**31 - 1, dtype=np.int64).astype(np.int32), g.bias.fmt)
    with pytest.raises(UserError, match=r"gate h: row \d+ can overflow the 32-bit requantisation"):
        QGate(g.name, g.w, g.u, huge, g.x_shift, g.h_shift, g.activation)
    QGate(g.name, g.w, g.u, g.bias, g.x_shift, g.h_shift, g.activation)  # the quantizer's own passes


def large_input_model(bits: int, seed: int = 3, rank: int | None = None, inputs: int = 3, hidden: int = 6):
    """int8/int16 weights with inputs up to ±3000: the input shifts go down to 0 and below (left
    shifts), the case the rows take the general (branching) form for."""
    g = random_graph(seed, kind="mgu", hidden=hidden, inputs=inputs, rank=rank, scale=3.0)
    return quantize_graph(g, None, weights=f"int{bits}", input_bound=3000.0)


@pytest.mark.parametrize("bits", [8, 16])
def test_left_shift_rows_equal_reference(bits):
    q = large_input_model(bits)
    if bits == 8:
        assert min(int(g.x_shift.min()) for g in q.gate_list()) <= 0
    for extreme in (False, True):
        x = random_inputs(4, q, batch=2, steps=60, extreme=extreme)
        ref = run_reference(q, x)
        y, states, _ = run_runtime(q, x)
        assert_bit_exact(y, states, ref)


def dsp_model(i: int, n: int, rank: int | None, bits: int, seed: int):
    rng = np.random.default_rng(seed)

    def rec():
        m = rng.standard_normal((n, n)) * (1.5 / np.sqrt(n))
        return m if rank is None else svd_factors(m, rank)

    cell = MGUCell(
        rng.standard_normal((n, i)),
        rec(),
        0.2 * rng.standard_normal(n),
        rng.standard_normal((n, i)),
        rec(),
        0.2 * rng.standard_normal(n),
    )
    ro = Readout(rng.standard_normal((5, n)) / np.sqrt(n), 0.1 * rng.standard_normal(5))
    return quantize_graph(FloatGraph(cell, ro), weights=f"int{bits}")


NO_TOOLCHAIN = toolchain.toolchain_missing()
DSP_CASES = [  # I, N, rank, bits: which kernel path each one reaches on the M4
    (7, 40, None, 16),  # odd input count (unaligned short rows), 40 columns = 16 k + 8
    (16, 64, 16, 16),  # 16-column passes, A z of 16 columns
    (9, 64, None, 8),  # int8 blocks with x repacked once; W x 9 columns: the pair kernel and a tail
    (3, 20, 9, 8),  # int8 A z of 9 columns (a tail), B h of 20 columns (odd 8), 3-column short rows
]


@pytest.mark.board
@pytest.mark.skipif(NO_TOOLCHAIN is not None, reason=f"no cross toolchain: {NO_TOOLCHAIN}")
@pytest.mark.parametrize("case", DSP_CASES, ids=lambda c: f"I{c[0]}-N{c[1]}-r{c[2]}-int{c[3]}")
def test_dsp_row_kernels_equal_reference(case, tmp_path):
    i, n, rank, bits = case
    q = dsp_model(i, n, rank, bits, seed=n + i)
    res = run.run_qgraph(q, profile.load_board("mps2-an386"), tmp_path, frames=6, seed=2)
    assert res.same_as_host and res.same_as_reference, res.first_mismatch


@pytest.mark.board
@pytest.mark.skipif(NO_TOOLCHAIN is not None, reason=f"no cross toolchain: {NO_TOOLCHAIN}")
@pytest.mark.parametrize("board", ["mps2-an386", "mps2-an385"])
def test_left_shift_rows_on_the_boards(board, tmp_path):
    """int8 with left input shifts: the DSP rows' general form (M4) and the portable one (M3)."""
    q = large_input_model(8, seed=5, inputs=7, hidden=12)
    assert min(int(g.x_shift.min()) for g in q.gate_list()) <= 0
    res = run.run_qgraph(q, profile.load_board(board), tmp_path, frames=6, seed=4)
    assert res.same_as_host and res.same_as_reference, res.first_mismatch
