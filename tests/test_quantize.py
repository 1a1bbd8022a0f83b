"""Quantization: formats, the overflow proof, named range errors, IR validation, persistence."""

import dataclasses

import numpy as np
import pytest

from stapes.errors import UserError
from stapes.fixed.quantize import dequantize_output, quantize_graph, quantize_input
from stapes.host.random_models import random_graph, random_qgraph
from stapes.ir.float_graph import FloatGraph, Readout, RNNCell
from stapes.ir.qgraph import QFormat, QGraph, QTensor, is_qmodel_folder, prove_no_overflow


def _rnn(w, u, b, v, c):
    return FloatGraph(RNNCell(np.array(w), np.array(u), np.array(b)), Readout(np.array(v), np.array(c)))


def test_formats_are_the_finest_that_fit():
    g = _rnn([[0.5, -0.25]], [[0.9]], [0.1], [[1.5]], [0.0])
    q = quantize_graph(g, None, weights="int8")
    gate = q.gates["h"]
    assert gate.w.fmt.frac == (7,) and gate.w.data.tolist() == [[64, -32]]  # 0.5 * 128 = 64
    assert gate.u.fmt.frac == (7,) and gate.u.data.tolist() == [[115]]  # round(0.9 * 128)
    assert q.input_fmt.frac == 14  # |x| <= 1 -> Q1.14
    assert gate.bias.fmt.frac == 12 and gate.bias.data.tolist() == [410]  # pre-activation Q3.12
    assert "analytic" in q.provenance["ranges_note"]


def test_overflow_proof_coarsens_int16_rows_and_says_so():
    g = random_graph(0, kind="rnn", hidden=64, inputs=2)
    q = quantize_graph(g, None, weights="int16")
    u = q.gates["h"].u
    assert (np.abs(u.data.astype(np.int64)).sum(1) * 32768 <= 2**31 - 1).all()
    assert max(np.abs(u.data).max(1)) < 32767 // 2  # rows gave up bits
    assert "rnn.u" in q.provenance["overflow_proof"]


def test_ir_rejects_a_tensor_that_could_overflow():
    t = QTensor("u", np.full((2, 2), -32768, dtype=np.int16), QFormat(16, 15))
    with pytest.raises(UserError, match="u: row 0 can overflow"):
        prove_no_overflow(t)
    q = random_qgraph(1, kind="rnn", hidden=2, inputs=1)
    gate = q.gates["h"]
    bad = dataclasses.replace(gate.u, data=np.full((2, 2), -32768, dtype=np.int16))
    with pytest.raises(UserError, match="overflow"):
        dataclasses.replace(gate, u=bad)


def test_out_of_range_values_raise_with_their_name():
    q = random_qgraph(1, kind="rnn", hidden=3, inputs=2)
    with pytest.raises(UserError, match="^input: value 2.5"):
        quantize_input(q, np.full((1, 2, 2), 2.5))
    g = _rnn([[0.5]], [[0.5]], [1e6], [[1.0]], [0.0])
    with pytest.raises(UserError, match="rnn.b"):
        quantize_graph(g, None)


def test_calibration_sets_input_and_output_formats():
    g = random_graph(2, kind="mgu", hidden=8, inputs=3, rank=3)
    x = np.random.default_rng(0).normal(size=(8, 30, 3)) * 3
    q = quantize_graph(g, x, weights="int8")
    assert q.provenance["ranges"]["source"] == "data"
    assert 32767 / 2**q.input_fmt.frac >= np.abs(x).max() * 1.25 > 16383 / 2**q.input_fmt.frac
    xq = quantize_input(q, x)
    assert np.abs(xq.astype(float) / 2**q.input_fmt.frac - x).max() <= 2.0**-q.input_fmt.frac / 2 + 1e-12
    assert dequantize_output(q, np.array([1 << q.readout.out_fmt.frac]))[0] == 1.0


def test_save_load_roundtrip(tmp_path):
    q = random_qgraph(3, kind="mgu", hidden=5, rank=2, weights="int8", readout_mode="final")
    q.save(tmp_path)
    assert is_qmodel_folder(tmp_path)
    back = QGraph.load(tmp_path)
    assert back.content_hash() == q.content_hash()
    assert back.provenance == q.provenance and back.rank == 2 and back.weight_bits == 8
    with pytest.raises(UserError, match="not a QModel folder"):
        QGraph.load(tmp_path / "missing")


def test_bad_policy_is_a_user_error():
    with pytest.raises(UserError, match="weights"):
        quantize_graph(random_graph(0), None, weights="int4")


# ---- quality: fixed point vs the float low-rank model on A's tasks (tolerances allowed) -------------
QUALITY_TASKS = {"memorization": dict(hidden=32, rank=12, steps=400), "frequency": dict(hidden=32, rank=8, steps=300)}


@pytest.fixture(scope="module")
def trained_lowrank():
    """task name -> (low-rank FloatGraph, task, test batch); small MGUs trained once per module."""
    import torch

    from stapes.compress.svd import with_rank
    from stapes.frontend.extract import to_graph
    from stapes.frontend.models import RecurrentModel
    from stapes.frontend.train import TrainConfig, model_config_for, train
    from stapes.tasks import make_task
    from stapes.tasks.evaluate import eval_batch

    torch.set_num_threads(1)
    out = {}
    for name, spec in QUALITY_TASKS.items():
        task = make_task(name)
        model = RecurrentModel(model_config_for(task, "mgu", spec["hidden"]), seed=0)
        train(model, task, TrainConfig(steps=spec["steps"], lr=1e-2, seed=0), progress=False)
        graph = with_rank(to_graph(model, task.config(), {}), spec["rank"])
        _, batch = eval_batch(task, "test", 512, 1234)
        out[name] = (graph, task, batch)
    return out


@pytest.mark.quality
@pytest.mark.parametrize("task_name", sorted(QUALITY_TASKS))
@pytest.mark.parametrize("weights,points", [("int16", 1.0), ("int8", 2.0)])
def test_fixed_point_tracks_lowrank_float(trained_lowrank, task_name, weights, points):
    from stapes.fixed.reference import run_reference
    from stapes.tasks.evaluate import metrics_from_outputs

    graph, task, batch = trained_lowrank[task_name]
    metric = task.primary_metric
    float_metric = metrics_from_outputs(task, graph.run(batch.x)[0], batch)[metric]
    q = quantize_graph(graph, task.sample("train", 256, 0).x, weights=weights)
    y = run_reference(q, quantize_input(q, batch.x)).outputs
    fixed_metric = metrics_from_outputs(task, dequantize_output(q, y), batch)[metric]
    print(f"{task_name} {weights}: low-rank float {float_metric:.4f}, fixed point {fixed_metric:.4f}")
    assert float_metric > 0.6, "the trained model is too weak for a meaningful comparison"
    assert abs(fixed_metric - float_metric) <= points / 100
