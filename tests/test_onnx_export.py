"""FloatGraph -> ONNX -> onnxruntime equals FloatGraph.run (and torch), both cells, dense and low-rank.

Tolerance: the exported model is float32 and the FloatGraph weights are float32 values, so the
only difference is float32 vs float64 arithmetic: |onnxruntime - reference| <= 1e-5 + 1e-5 |ref|.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stapes.frontend.onnx_export import export_onnx, run_onnxruntime
from stapes.ir.float_graph import FloatGraph, LowRank, MGUCell, Readout, RNNCell, dense

ATOL = RTOL = 1e-5


def f32(a):
    """Round to float32 values (kept as float64), so export loses nothing."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def random_lowrank(rng, n, r):
    p, s, q = np.linalg.svd(rng.standard_normal((n, n)) / np.sqrt(n))
    root = np.sqrt(s[:r])
    return LowRank(f32(p[:, :r] * root), f32(root[:, None] * q[:r]), s[:r])


def random_graph(kind="rnn", n=16, i=3, o=2, rank=None, mode="per_step", act="linear", seed=0):
    """A random FloatGraph with float32-representable weights (rank: low-rank recurrent matrices)."""
    rng = np.random.default_rng(seed)
    mat = lambda: random_lowrank(rng, n, rank) if rank else f32(rng.standard_normal((n, n)) / np.sqrt(n))  # noqa: E731
    w = lambda: f32(rng.standard_normal((n, i)))  # noqa: E731
    b = lambda: f32(0.3 * rng.standard_normal(n))  # noqa: E731
    cell = RNNCell(w(), mat(), b()) if kind == "rnn" else MGUCell(w(), mat(), b(), w(), mat(), b())
    readout = Readout(f32(rng.standard_normal((o, n))), f32(rng.standard_normal(o)), mode, act)
    return FloatGraph(cell, readout)


def inputs(b=3, t=20, i=3, seed=1):
    return f32(np.random.default_rng(seed).standard_normal((b, t, i)))


CASES = [
    (kind, rank, lowrank)
    for kind in ("rnn", "mgu")
    for rank, lowrank in ((None, "factors"), (4, "factors"), (4, "dense"))
]


@pytest.mark.parametrize("kind,rank,lowrank", CASES)
@pytest.mark.parametrize("mode,act", [("per_step", "linear"), ("final", "sigmoid")])
def test_onnxruntime_equals_floatgraph(kind, rank, lowrank, mode, act):
    graph = random_graph(kind, rank=rank, mode=mode, act=act)
    model = export_onnx(graph, lowrank=lowrank)
    onnx.checker.check_model(model, full_check=True)
    x = inputs()
    want, states = graph.run(x)
    y, h_n = run_onnxruntime(model, x)
    np.testing.assert_allclose(y, want, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(h_n, states[:, -1], atol=ATOL, rtol=RTOL)


@settings(max_examples=12)
@given(
    kind=st.sampled_from(["rnn", "mgu"]),
    n=st.integers(1, 12),
    i=st.integers(1, 5),
    o=st.integers(1, 4),
    rank_fraction=st.sampled_from([None, 0.3, 1.0]),
    lowrank=st.sampled_from(["factors", "dense"]),
    mode=st.sampled_from(["per_step", "final"]),
    act=st.sampled_from(["linear", "sigmoid"]),
    steps=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_any_shape_exports_exactly(kind, n, i, o, rank_fraction, lowrank, mode, act, steps, seed):
    rank = None if rank_fraction is None else max(1, int(rank_fraction * n))
    graph = random_graph(kind, n=n, i=i, o=o, rank=rank, mode=mode, act=act, seed=seed)
    x = inputs(b=2, t=steps, i=i, seed=seed)
    y, h_n = run_onnxruntime(export_onnx(graph, lowrank=lowrank), x)
    want, states = graph.run(x)
    np.testing.assert_allclose(y, want, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(h_n, states[:, -1], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kind", ["rnn", "mgu"])
@pytest.mark.parametrize("lowrank", ["factors", "dense"])
def test_streaming_one_frame_per_call_equals_whole_sequence(kind, lowrank):
    graph = random_graph(kind, rank=3)
    model = export_onnx(graph, lowrank=lowrank)
    x = inputs(b=2, t=12)
    y_all, _ = run_onnxruntime(model, x)
    h = np.zeros((2, graph.hidden_size), np.float32)
    frames = []
    for t in range(x.shape[1]):
        y, h = run_onnxruntime(model, x[:, t : t + 1], h)
        frames.append(y)
    np.testing.assert_allclose(np.concatenate(frames, axis=1), y_all, atol=1e-6, rtol=1e-6)


def test_operators_and_metadata_say_which_mode():
    graph = random_graph("mgu", rank=4)
    ops = lambda m: [nd.op_type for nd in m.graph.node]  # noqa: E731
    props = lambda m: {p.key: p.value for p in m.metadata_props}  # noqa: E731
    factors, dense_model = export_onnx(graph, "factors"), export_onnx(graph, "dense")
    assert "Scan" in ops(factors) and "GRU" not in ops(factors)
    body = next(a.g for nd in factors.graph.node if nd.op_type == "Scan" for a in nd.attribute if a.name == "body")
    assert [nd.op_type for nd in body.node].count("MatMul") == 4  # two per low-rank matrix
    assert "GRU" in ops(dense_model) and "Scan" not in ops(dense_model)
    assert props(factors)["stapes.lowrank"] == "factors" and "factors" in factors.doc_string
    assert props(dense_model)["stapes.lowrank"] == "dense" and "reconstructed dense" in dense_model.doc_string
    assert props(export_onnx(random_graph("rnn"), "dense"))["stapes.lowrank"] == "none"
    assert factors.opset_import[0].version == 17


def test_gru_weights_are_the_tied_mgu_gates():
    graph = random_graph("mgu", n=5, i=2)
    model = export_onnx(graph, lowrank="dense")
    t = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    c = graph.cell
    wz, wr, wh = np.split(t["GRU.W"][0], 3)
    rz, rr, rh = np.split(t["GRU.R"][0], 3)
    wb, rb = np.split(t["GRU.B"][0], 2)
    np.testing.assert_array_equal(wr, c.w_f)
    np.testing.assert_array_equal(wz, -c.w_f)
    np.testing.assert_array_equal(wh, c.w_h)
    np.testing.assert_array_equal(rr, dense(c.u_f))
    np.testing.assert_array_equal(rz, -dense(c.u_f))
    np.testing.assert_array_equal(rh, dense(c.u_h))
    np.testing.assert_array_equal(wb, np.concatenate([-c.b_f, c.b_f, c.b_h]))
    np.testing.assert_array_equal(rb, 0)


def _torch_mgu(graph, x):
    """The MGU equations written out in torch (float32), independently of stapes."""
    import torch

    c = graph.cell
    t = lambda a: torch.tensor(dense(a), dtype=torch.float32)  # noqa: E731
    xs = torch.tensor(x, dtype=torch.float32)
    h = torch.zeros(x.shape[0], graph.hidden_size)
    for step in range(x.shape[1]):
        xt = xs[:, step]
        f = torch.sigmoid(xt @ t(c.w_f).T + h @ t(c.u_f).T + t(c.b_f))
        cand = torch.tanh(xt @ t(c.w_h).T + (f * h) @ t(c.u_h).T + t(c.b_h))
        h = (1 - f) * h + f * cand
    return h.numpy()


def test_torch_models_equal_onnxruntime():
    torch = pytest.importorskip("torch")
    from stapes.frontend.onnx_import import from_torch_rnn

    torch.manual_seed(0)
    rnn, lin = torch.nn.RNN(3, 12, batch_first=True), torch.nn.Linear(12, 2)
    graph = from_torch_rnn(rnn, lin)
    x = inputs(b=2, t=15)
    with torch.no_grad():
        want = lin(rnn(torch.tensor(x, dtype=torch.float32))[0]).numpy()
    np.testing.assert_allclose(run_onnxruntime(export_onnx(graph), x)[0], want, atol=ATOL, rtol=RTOL)
    mgu = random_graph("mgu", rank=4)
    for lowrank in ("factors", "dense"):
        h_n = run_onnxruntime(export_onnx(mgu, lowrank), inputs())[1]
        np.testing.assert_allclose(h_n, _torch_mgu(mgu, inputs()), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("opset", [14, 21])
def test_other_opsets(opset):
    graph = random_graph("mgu", rank=3)
    for lowrank in ("factors", "dense"):
        model = export_onnx(graph, lowrank, opset=opset)
        assert model.opset_import[0].version == opset
        np.testing.assert_allclose(run_onnxruntime(model, inputs())[0], graph.run(inputs())[0], atol=ATOL, rtol=RTOL)
    from stapes.errors import UserError

    with pytest.raises(UserError, match="opset 13 is not supported"):
        export_onnx(graph, opset=13)
    with pytest.raises(UserError, match="--lowrank 'svd' is not one of"):
        export_onnx(graph, lowrank="svd")


def test_cli_writes_file(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    random_graph("mgu", rank=4).save(model)
    out = tmp_path / "m.onnx"
    r = subprocess.run(
        [sys.executable, "-m", "stapes", "export-onnx", str(model), "--out", str(out), "--lowrank", "dense"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "lowrank dense" in r.stdout
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    bad = subprocess.run(
        [sys.executable, "-m", "stapes", "export-onnx", str(tmp_path / "none"), "--out", str(tmp_path / "n.onnx")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "not a stapes model folder" in bad.stderr
    assert not (tmp_path / "n.onnx").exists()


def test_benchmark_script_runs(tmp_path):
    """The onnxruntime-vs-C benchmark on a tiny model (the real sizes are a manual run): it checks
    itself that onnxruntime, the C model and float64 agree, and writes its JSON."""
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [
            sys.executable,
            str(root / "benchmarks" / "bench_vs_onnxruntime.py"),
            "--sizes",
            "8",
            "--cells",
            "rnn",
            "--frames",
            "20",
            "--repeats",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "worst ratio per frame" in r.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [(row["cell"], row["rank"]) for row in rows] == [("rnn", None), ("rnn", 1)]
    assert all(row["ort_max_err"] < 1e-5 and row["stapes_max_err"] < 0.01 for row in rows)
