"""`verify` reports how far the fixed point is from the float model, not only that it is bit-exact."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stapes.fixed.quantize import quantize_graph
from stapes.ir.float_graph import FloatGraph, MGUCell, Readout
from stapes.studies.verify import FLOAT_ERROR_WARN_LSB, verify


def _graph(seed: int = 3, n: int = 16, i: int = 2) -> FloatGraph:
    rng = np.random.default_rng(seed)

    def m(rows, cols):
        return rng.standard_normal((rows, cols)) / np.sqrt(cols)

    cell = MGUCell(m(n, i), m(n, n), 0.1 * rng.standard_normal(n), m(n, i), m(n, n), 0.1 * rng.standard_normal(n))
    return FloatGraph(cell, Readout(m(1, n), np.zeros(1), "per_step", "linear"))


def _inputs(seed: int = 0):
    return np.random.default_rng(seed).uniform(-1, 1, (8, 20, 2))


@pytest.mark.quality
def test_int16_model_is_close_to_its_float_model():
    g = _graph()
    res = verify(quantize_graph(g, weights="int16"), _inputs(), float_graph=g)
    assert res.ok and res.float_error is not None
    # float-vs-fixed quality, a tolerance by nature: int16 weights keep states within ~1/1000
    assert res.float_error.state_max_lsb < 64 and not res.float_error.large, res.float_error
    assert any(line.startswith("float vs fixed") for line in res.lines)
    assert not any(line.startswith("warning") for line in res.lines)


def test_a_fixed_point_far_from_its_float_model_is_reported_with_a_warning():
    g = _graph()
    q = quantize_graph(g, weights="int16")
    # The float model the fixed point is compared with has a different candidate bias: the C is
    # still bit-exact with the reference, but far from this float model, and verify must say so.
    other = g.replace_cell(dataclasses.replace(g.cell, b_h=g.cell.b_h + 0.5))
    res = verify(q, _inputs(), float_graph=other)
    assert res.ok, "bit-exactness does not depend on the float model"
    assert res.float_error.state_max_lsb > FLOAT_ERROR_WARN_LSB and res.float_error.large
    assert any(line.startswith("warning: a state differs") for line in res.lines), res.lines


def test_without_a_float_model_there_is_no_float_error():
    res = verify(quantize_graph(_graph(), weights="int16"), _inputs())
    assert res.ok and res.float_error is None
