"""The reference interpreter: close to the float model, rank semantics, input checks."""

import numpy as np
import pytest

from stapes.errors import UserError
from stapes.fixed.quantize import dequantize_output, dequantize_state, quantize_graph, quantize_input
from stapes.fixed.reference import run_reference
from stapes.host.random_models import random_graph


@pytest.mark.parametrize("kind", ["rnn", "mgu"])
@pytest.mark.parametrize("weights,tol", [("int16", 0.01), ("int8", 0.15)])
def test_tracks_the_float_model(kind, weights, tol):
    g = random_graph(5, kind=kind, hidden=16, inputs=3, rank=6)
    x = np.random.default_rng(1).uniform(-1, 1, size=(4, 60, 3))
    q = quantize_graph(g, x, weights=weights)
    ref = run_reference(q, quantize_input(q, x))
    y, states = g.run(x)
    assert np.abs(dequantize_state(ref.states) - states).max() < tol
    assert np.abs(dequantize_output(q, ref.outputs) - y).max() < 4 * tol
    assert ref.states.dtype == np.int16 and ref.outputs.shape == y.shape


def test_rank_prefix_tracks_truncated_float():
    g = random_graph(6, kind="rnn", hidden=12, inputs=2, rank=8)
    x = np.random.default_rng(2).uniform(-1, 1, size=(2, 40, 2))
    q = quantize_graph(g, x)
    xq = quantize_input(q, x)
    full = run_reference(q, xq)
    assert np.array_equal(run_reference(q, xq, rank=8).states, full.states)
    low = run_reference(q, xq, rank=2)
    g2 = g.replace_cell(type(g.cell)(g.cell.w, g.cell.u.truncate(2), g.cell.b))
    assert np.abs(dequantize_state(low.states) - g2.run(x)[1]).max() < 0.01
    assert low.ops["mac"] < full.ops["mac"]


def test_input_and_rank_errors():
    g = random_graph(7, kind="rnn", hidden=4, inputs=2)
    q = quantize_graph(g, None)
    with pytest.raises(UserError, match="int16"):
        run_reference(q, np.zeros((1, 3, 2), dtype=np.int32))
    with pytest.raises(UserError, match="expected int16"):
        run_reference(q, np.zeros((1, 3, 5), dtype=np.int16))
    with pytest.raises(UserError, match="dense"):
        run_reference(q, np.zeros((1, 3, 2), dtype=np.int16), rank=1)
