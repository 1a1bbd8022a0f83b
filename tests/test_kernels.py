"""Hypothesis-drawn random models: the C runtime equals the reference, every step, every value.

Models are filled into the runtime's structs at run time (stapes.host.run_runtime), so each
example costs no compilation; tests/test_model_c.py covers the generated code end to end.
"""

import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stapes.fixed.reference import run_reference
from stapes.host import assert_bit_exact, run_runtime, run_runtime_sanitized
from stapes.host.random_models import random_inputs, random_qgraph


@st.composite
def models(draw):
    kind = draw(st.sampled_from(["rnn", "mgu"]))
    hidden = draw(st.integers(1, 12))
    lowrank = draw(st.booleans())
    rank = draw(st.integers(1, hidden)) if lowrank else None
    q = random_qgraph(
        draw(st.integers(0, 2**31 - 1)),
        weights=draw(st.sampled_from(["int8", "int16"])),
        kind=kind,
        hidden=hidden,
        inputs=draw(st.integers(1, 4)),
        outputs=draw(st.integers(1, 3)),
        rank=rank,
        scale=draw(st.sampled_from([0.5, 1.0, 3.0, 50.0])),
        readout_mode=draw(st.sampled_from(["per_step", "final"])),
        readout_activation=draw(st.sampled_from(["linear", "sigmoid"])),
    )
    run_rank = draw(st.integers(1, q.rank)) if q.lowrank and draw(st.booleans()) else None
    return q, run_rank


@settings(max_examples=60)
@given(models(), st.integers(0, 2**31 - 1), st.booleans(), st.integers(100, 140))
def test_runtime_equals_reference(model, seed, extreme, steps):
    q, rank = model
    x = random_inputs(seed, q, batch=2, steps=steps, extreme=extreme)
    ref = run_reference(q, x, rank=rank)
    y, states, _ = run_runtime(q, x, rank=rank)
    assert_bit_exact(y, states, ref)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not found")
@settings(max_examples=20)
@given(models(), st.integers(0, 2**31 - 1), st.booleans())
def test_sanitizer_build_equals_reference(model, seed, extreme):
    """The same equivalence under ASan + UBSan (-fno-sanitize-recover): no UB, no bad access."""
    q, rank = model
    x = random_inputs(seed, q, batch=2, steps=100, extreme=extreme)
    y, states = run_runtime_sanitized(q, x, rank=rank)
    assert_bit_exact(y, states, run_reference(q, x, rank=rank))


def test_full_scale_int16_weights_and_inputs():
    """Weights quantized at the edge of the overflow proof, inputs at the int16 limits."""
    q = random_qgraph(7, weights="int16", kind="mgu", hidden=6, inputs=3, scale=1000.0)
    worst = max(int(np.abs(t.data.astype(np.int64)).sum(1).max()) for g in q.gate_list() for t in g.tensors()[:-1])
    assert worst * 32768 <= 2**31 - 1 and worst * 32768 > 2**29
    x = np.full((2, 120, 3), -32768, dtype=np.int16)
    x[1, ::2] = 32767
    ref = run_reference(q, x)
    y, states, _ = run_runtime(q, x)
    assert_bit_exact(y, states, ref)


def test_mixed_recurrent_matrices():
    """An MGU whose U_f is low-rank (r=2) and U_h dense or of another rank (per-matrix policies)."""
    from stapes.fixed.quantize import quantize_graph
    from stapes.host.random_models import random_graph
    from stapes.ir.float_graph import LowRank, MGUCell

    g = random_graph(4, kind="mgu", hidden=6, inputs=2, rank=4)
    c = g.cell
    for u_h in (c.u_h.dense(), c.u_h.truncate(3)):
        cell = MGUCell(c.w_f, LowRank(c.u_f.a[:, :2], c.u_f.b[:2], c.u_f.sigma[:2]), c.b_f, c.w_h, u_h, c.b_h)
        q = quantize_graph(g.replace_cell(cell), None, weights="int8")
        x = random_inputs(5, q, batch=2, steps=100)
        for rank in (None, 1, q.rank):
            ref = run_reference(q, x, rank=rank)
            y, states, _ = run_runtime(q, x, rank=rank)
            assert_bit_exact(y, states, ref)
