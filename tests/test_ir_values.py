"""Both IRs are values: == and hash by content, read-only arrays and gates, copies as frozen as the original."""

import copy
import dataclasses
import pickle

import numpy as np
import pytest

from stapes.errors import UserError
from stapes.host.random_models import random_graph, random_qgraph
from stapes.ir.arrays import frozen_array
from stapes.ir.float_graph import FloatGraph
from stapes.ir.qgraph import QFormat, QGraph, QTensor

KW = dict(kind="mgu", hidden=5, inputs=3, outputs=2, rank=2)


def _parts(q: QGraph) -> list:
    g = q.gates["h"]
    return [q, g, g.w, g.u, g.u.b, q.readout, q.readout.w]


def test_equal_graphs_compare_equal_with_equal_hashes():
    a, b = random_qgraph(1, **KW), random_qgraph(1, **KW)
    for x, y in zip(_parts(a), _parts(b)):
        assert x is not y and x == y and hash(x) == hash(y)
    fa, fb = random_graph(1, **KW), random_graph(1, **KW)
    assert fa == fb and hash(fa) == hash(fb)
    assert fa.cell == fb.cell and fa.cell.u_f == fb.cell.u_f and fa.readout == fb.readout
    assert len({a, b}) == 1 and {fa: 1}[fb] == 1
    assert a != random_qgraph(2, **KW) and fa != random_graph(2, **KW)
    assert a != fa and a.gates["h"] != a.gates["f"]


def test_a_changed_weight_compares_unequal():
    q = random_qgraph(1, **KW)
    w = q.gates["h"].w
    data = w.data.copy()
    data[0, 0] += 1 if data[0, 0] < 0 else -1
    changed = dataclasses.replace(w, data=data)
    assert changed != w
    gate = dataclasses.replace(q.gates["h"], w=changed)
    other = dataclasses.replace(q, gates={**q.gates, "h": gate})
    assert other != q and other.gates["f"] == q.gates["f"]
    g = random_graph(1, **KW)
    b = g.cell.b_h.copy()
    b[-1] = np.nextafter(b[-1], np.inf)
    assert g.replace_cell(dataclasses.replace(g.cell, b_h=b)) != g
    assert dataclasses.replace(g, provenance={"note": "another"}) != g  # every field counts


def test_arrays_compare_by_dtype_shape_and_values():
    a = QTensor("t", np.array([[1, -2]]), QFormat(16, 3))
    same_values_int32 = dataclasses.replace(a, fmt=dataclasses.replace(a.fmt, bits=32))
    assert a.data.dtype == np.int16 and same_values_int32 != a
    assert dataclasses.replace(a, data=np.array([1, -2])) != a  # shape (2,) vs (1, 2)
    g = random_graph(1, **KW)
    zero = g.cell.b_f.copy()
    zero[0] = 0.0
    minus = zero.copy()
    minus[0] = -0.0
    x, y = g.replace_cell(dataclasses.replace(g.cell, b_f=zero)), g.replace_cell(dataclasses.replace(g.cell, b_f=minus))
    assert x == y and hash(x) == hash(y)  # -0.0 == 0.0, as numbers


def test_gates_mapping_cannot_be_mutated():
    q = random_qgraph(1, **KW)
    with pytest.raises(TypeError):
        q.gates["f"] = q.gates["h"]
    with pytest.raises(TypeError):
        del q.gates["f"]
    with pytest.raises(AttributeError):
        q.gates.clear()
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.gates = {}
    source = dict(q.gates)
    built = QGraph(q.kind, q.input_fmt, source, q.readout)
    source["f"] = source["h"]  # the caller's dict is not the graph's
    assert built.gates["f"].activation == "sigmoid"


def test_arrays_cannot_be_mutated():
    q, g = random_qgraph(1, **KW), random_graph(1, **KW)
    arrays = [
        q.gates["h"].w.data,
        q.gates["h"].x_shift,
        q.gates["f"].u.z_shift,
        q.gates["f"].u.sigma,
        q.readout.shift,
        g.cell.w_f,
        g.cell.u_h.a,
        g.cell.u_h.sigma,
        g.readout.b,
    ]
    for a in arrays:
        with pytest.raises(ValueError):
            a[(0,) * a.ndim] = 1
        with pytest.raises(ValueError):
            a.setflags(write=True)
        with pytest.raises(ValueError):
            a.ravel()[0] = 1
    src = np.arange(6.0).reshape(2, 3)
    frozen = frozen_array("x", src, np.float64, 2)
    src[0, 0] = 99.0  # a copy, not a view of the input
    assert frozen[0, 0] == 0.0


def test_frozen_array_checks():
    with pytest.raises(UserError, match="2-d"):
        frozen_array("m", np.zeros(3), np.float64, 2)
    with pytest.raises(UserError, match="NaN"):
        frozen_array("m", [np.nan], np.float64, 1)
    with pytest.raises(UserError, match="integers"):
        frozen_array("m", [1.5], np.int16, 1)
    with pytest.raises(UserError, match="outside int8"):
        frozen_array("m", [128], np.int8, 1)
    assert frozen_array("m", [-128, 127], np.int8, 1).dtype == np.int8


@pytest.mark.parametrize("how", ["pickle", "deepcopy", "copy"])
def test_copies_are_equal_and_as_frozen(how):
    q, g = random_qgraph(3, **KW), random_graph(3, **KW)
    copier = {"pickle": lambda v: pickle.loads(pickle.dumps(v)), "deepcopy": copy.deepcopy, "copy": copy.copy}[how]
    for original in (q, g):
        dup = copier(original)
        assert dup == original and hash(dup) == hash(original)
    dup = copier(q)
    with pytest.raises(TypeError):
        dup.gates["f"] = dup.gates["h"]
    with pytest.raises(ValueError):
        dup.gates["h"].w.data[0, 0] = 0
    with pytest.raises(ValueError):
        copier(g).cell.u_f.b[0, 0] = 0.0


def test_replace_revalidates_and_save_load_round_trips(tmp_path):
    q, g = random_qgraph(3, **KW), random_graph(3, **KW)
    with pytest.raises(UserError, match="gates"):
        dataclasses.replace(q, gates={"h": q.gates["h"]})  # an MGU needs both gates
    assert dataclasses.replace(q, task={"name": "x"}).gates == q.gates
    for name, graph in (("q", q), ("g", g)):
        (tmp_path / name).mkdir()
        graph.save(tmp_path / name)
    assert QGraph.load(tmp_path / "q") == q and FloatGraph.load(tmp_path / "g") == g
