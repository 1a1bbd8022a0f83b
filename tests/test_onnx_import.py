"""ONNX -> stapes: round trips, torch.onnx.export files, torch.nn.RNN modules."""

import subprocess
import sys

import numpy as np
import pytest
from test_onnx_export import ATOL, RTOL, inputs, random_graph

from stapes.frontend.onnx_export import export_onnx, make_session, run_onnxruntime, save_onnx
from stapes.frontend.onnx_import import from_torch_rnn, import_onnx
from stapes.ir.float_graph import FloatGraph, dense

torch = pytest.importorskip("torch")


def _assert_same_weights(got: FloatGraph, want: FloatGraph):
    assert got.kind == want.kind
    assert (got.readout.mode, got.readout.activation) == (want.readout.mode, want.readout.activation)
    for f in want.cell.__dataclass_fields__:
        np.testing.assert_array_equal(
            dense(getattr(got.cell, f)), np.float32(dense(getattr(want.cell, f))).astype(np.float64), err_msg=f
        )
    np.testing.assert_array_equal(got.readout.w, want.readout.w)
    np.testing.assert_array_equal(got.readout.b, want.readout.b)


@pytest.mark.parametrize("kind,rank", [("rnn", None), ("mgu", None), ("mgu", 4), ("rnn", 3)])
@pytest.mark.parametrize("mode,act", [("per_step", "linear"), ("final", "sigmoid")])
def test_export_import_is_the_same_model(tmp_path, kind, rank, mode, act):
    graph = random_graph(kind, rank=rank, mode=mode, act=act)
    save_onnx(export_onnx(graph, lowrank="dense"), tmp_path / "m.onnx")
    back = import_onnx(tmp_path / "m.onnx")
    _assert_same_weights(back, graph)  # an MGU exported as a tied GRU comes back as that MGU
    assert back.task is None
    p = back.provenance
    assert (p["operator"], p["opset"], p["producer"]) == ("RNN" if kind == "rnn" else "GRU", 17, "stapes 0.1.0")
    assert p["state_input"] == "h0" and p["input_layout"] == "batch_first"
    x = inputs(b=2, t=9)
    ort_y = run_onnxruntime(tmp_path / "m.onnx", x)[0]
    np.testing.assert_allclose(back.run(x)[0], ort_y, atol=ATOL, rtol=RTOL)
    from stapes.frontend.extract import from_graph  # ONNX -> stapes -> torch equals onnxruntime

    with torch.no_grad():
        torch_y = from_graph(back)(torch.tensor(x, dtype=torch.float32))[0].numpy()
    np.testing.assert_allclose(torch_y, ort_y, atol=ATOL, rtol=RTOL)


class RNNWithReadout(torch.nn.Module):
    def __init__(self, batch_first=True, final=False, sigmoid=False, linear=True):
        super().__init__()
        self.rnn = torch.nn.RNN(4, 10, batch_first=batch_first)
        self.lin = torch.nn.Linear(10, 3) if linear else None
        self.batch_first, self.final, self.sigmoid = batch_first, final, sigmoid

    def forward(self, x):
        y, _ = self.rnn(x)
        if self.final:
            y = y[:, -1] if self.batch_first else y[-1]
        if self.lin is not None:
            y = self.lin(y)
        return torch.sigmoid(y) if self.sigmoid else y


@pytest.mark.filterwarnings("ignore")  # the legacy exporter warns about itself and its tracing
@pytest.mark.parametrize(
    "batch_first,final,sigmoid,linear",
    [
        (True, False, False, True),
        (False, False, True, True),
        (True, True, True, True),
        (False, True, False, True),
        (True, False, False, False),
    ],
)
def test_torch_onnx_export_imports(tmp_path, batch_first, final, sigmoid, linear):
    torch.manual_seed(1)
    module = RNNWithReadout(batch_first, final, sigmoid, linear).eval()
    x = torch.randn(2, 6, 4) if batch_first else torch.randn(6, 2, 4)
    path = tmp_path / "torch.onnx"
    torch.onnx.export(
        module,
        (x,),
        str(path),
        dynamo=False,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "a", 1: "b"}},
    )
    graph = import_onnx(path)
    assert graph.readout.mode == ("final" if final else "per_step")
    assert graph.readout.activation == ("sigmoid" if sigmoid else "linear")
    assert graph.provenance["input_layout"] == ("batch_first" if batch_first else "time_first")
    xb = inputs(b=3, t=11, i=4, seed=5)  # other batch and length than exported
    feed = xb if batch_first else xb.transpose(1, 0, 2).copy()
    got = make_session(path).run(None, {"x": feed.astype(np.float32)})[0]
    want = graph.run(xb)[0]
    if not final and not batch_first:
        want = want.transpose(1, 0, 2)
    np.testing.assert_allclose(want, got, atol=ATOL, rtol=RTOL)  # stapes == onnxruntime
    with torch.no_grad():
        ref = module(torch.tensor(feed, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(want, ref, atol=ATOL, rtol=RTOL)  # == torch
    # the module itself gives the same model
    direct = from_torch_rnn(module.rnn, module.lin, graph.readout.mode, graph.readout.activation)
    np.testing.assert_allclose(direct.run(xb)[0], graph.run(xb)[0], atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
def test_from_torch_rnn_equals_torch(bias):
    torch.manual_seed(4)
    rnn, lin = torch.nn.RNN(3, 7, bias=bias, batch_first=True), torch.nn.Linear(7, 2, bias=bias)
    x = inputs(b=2, t=12)
    with torch.no_grad():
        seq, h = rnn(torch.tensor(x, dtype=torch.float32))
        per_step, final = lin(seq).numpy(), torch.sigmoid(lin(h[0])).numpy()
    np.testing.assert_allclose(from_torch_rnn(rnn, lin).run(x)[0], per_step, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(from_torch_rnn(rnn, lin, "final", "sigmoid").run(x)[0], final, atol=ATOL, rtol=RTOL)
    identity = from_torch_rnn(rnn)  # no readout: the outputs are the states
    np.testing.assert_allclose(identity.run(x)[0], seq.numpy(), atol=ATOL, rtol=RTOL)
    assert identity.task is None and identity.provenance["source"] == "torch.nn.RNN"


def test_from_torch_rnn_rejects_other_modules():
    from stapes.errors import UserError

    with pytest.raises(UserError, match="nonlinearity 'relu'"):
        from_torch_rnn(torch.nn.RNN(2, 3, nonlinearity="relu"))
    with pytest.raises(UserError, match="num_layers=2"):
        from_torch_rnn(torch.nn.RNN(2, 3, num_layers=2))
    with pytest.raises(UserError, match="expected a torch.nn.RNN, got LSTM"):
        from_torch_rnn(torch.nn.LSTM(2, 3))
    with pytest.raises(UserError, match="in_features=3"):
        from_torch_rnn(torch.nn.RNN(2, 3), torch.nn.Linear(4, 1))


def test_cli_writes_model_folder(tmp_path):
    graph = random_graph("mgu", rank=4, mode="final", act="sigmoid")
    save_onnx(export_onnx(graph, lowrank="dense"), tmp_path / "m.onnx")
    out = tmp_path / "imported"
    r = subprocess.run(
        [sys.executable, "-m", "stapes", "import-onnx", str(tmp_path / "m.onnx"), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stdout
    back = FloatGraph.load(out)
    _assert_same_weights(back, graph)
    assert back.provenance["source"] == str(tmp_path / "m.onnx")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep")
    r = subprocess.run(
        [sys.executable, "-m", "stapes", "import-onnx", str(tmp_path / "m.onnx"), "--out", str(precious)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "refusing to replace it" in r.stderr
    assert (precious / "notes.txt").read_text() == "keep"


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("batch_first,final", [(True, False), (False, True)])
def test_torch_dynamo_export_imports(tmp_path, batch_first, final):
    """torch >= 2.9 exports nn.RNN with the dynamo exporter by default, unrolled over the traced
    length (one MatMul + Tanh per step, fixed batch): stapes recognises the unrolled chain."""
    import contextlib
    import io

    torch.manual_seed(2)
    module = RNNWithReadout(batch_first, final, sigmoid=True).eval()
    x = torch.randn(2, 5, 4) if batch_first else torch.randn(5, 2, 4)
    path = tmp_path / "dynamo.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(module, (x,), str(path), dynamo=True, input_names=["x"], output_names=["y"])
    import onnx

    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "RNN" not in ops and "Tanh" in ops  # really unrolled
    graph = import_onnx(path)
    assert graph.provenance["operator"] == "RNN unrolled over 5 steps (Tanh chain)"
    assert graph.readout.mode == ("final" if final else "per_step")
    direct = from_torch_rnn(module.rnn, module.lin, graph.readout.mode, "sigmoid")
    xb = inputs(b=2, t=30, i=4, seed=6)  # a longer sequence than was traced
    np.testing.assert_allclose(graph.run(xb)[0], direct.run(xb)[0], atol=1e-6)


@pytest.mark.filterwarnings("ignore")
def test_torch_rnn_onnx_compiles_to_c_and_verifies(tmp_path):
    """torch.nn.RNN -> torch.onnx.export -> import-onnx -> quantize (no task: analytic bounds, or
    --calibration) -> verify: the generated C equals the integer reference bit for bit."""
    torch.manual_seed(3)
    module = RNNWithReadout(batch_first=True).eval()
    torch.onnx.export(
        module,
        (torch.randn(1, 8, 4),),
        str(tmp_path / "t.onnx"),
        dynamo=False,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "b", 1: "t"}},
    )
    np.save(tmp_path / "calib.npy", inputs(b=4, t=30, i=4, seed=9))
    stapes = [sys.executable, "-m", "stapes"]
    steps = [
        ["import-onnx", str(tmp_path / "t.onnx"), "--out", str(tmp_path / "m")],
        ["quantize", str(tmp_path / "m"), "--out", str(tmp_path / "q")],
        ["verify", str(tmp_path / "q"), "--sequences", "4", "--steps", "40"],
        ["quantize", str(tmp_path / "m"), "--calibration", str(tmp_path / "calib.npy"), "--out", str(tmp_path / "qc")],
        ["verify", str(tmp_path / "qc"), "--sequences", "4", "--steps", "40"],
    ]
    for cmd in steps:
        r = subprocess.run(stapes + cmd, capture_output=True, text=True)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
        if cmd[0] == "verify":
            assert "mismatches: 0" in r.stdout
    assert FloatGraph.load(tmp_path / "m").task is None


@pytest.mark.parametrize("kind", ["rnn", "mgu"])
@pytest.mark.parametrize("mode,act", [("per_step", "linear"), ("final", "sigmoid")])
def test_lowrank_factors_export_imports_with_its_ranks(tmp_path, kind, mode, act):
    """`export-onnx --lowrank factors` writes a Scan; importing it keeps each matrix low rank."""
    from stapes.ir.float_graph import LowRank

    graph = random_graph(kind, rank=3, mode=mode, act=act)
    save_onnx(export_onnx(graph, lowrank="factors"), tmp_path / "m.onnx")
    back = import_onnx(tmp_path / "m.onnx")
    for name, m in graph.cell.recurrent().items():
        got = back.cell.recurrent()[name]
        assert isinstance(got, LowRank) and got.rank == m.rank, name
        np.testing.assert_allclose(dense(got), dense(m), atol=1e-6, err_msg=name)  # float32 factors
        np.testing.assert_allclose(got.sigma, m.sigma, rtol=1e-5, err_msg=name)  # σ-ordered again
    assert back.provenance["operator"].startswith(f"Scan ({kind.upper()}")
    assert (back.readout.mode, back.readout.activation) == (mode, act)
    x = inputs(b=2, t=9)
    np.testing.assert_allclose(back.run(x)[0], run_onnxruntime(tmp_path / "m.onnx", x)[0], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize(
    "attr,value,message",
    [
        ("scan_input_axes", [0, 0], "only \\[1, 1\\] \\(batch-first, over time\\)"),
        ("scan_input_directions", [1, 0], "only forward scans are supported"),
    ],
)
def test_other_scans_are_refused_by_name(tmp_path, attr, value, message):
    import onnx
    from onnx import helper

    from stapes.errors import UserError

    model = export_onnx(random_graph("mgu", rank=2), lowrank="factors")
    scan = next(n for n in model.graph.node if n.op_type == "Scan")
    kept = [a for a in scan.attribute if a.name != attr]
    del scan.attribute[:]
    scan.attribute.extend(kept + [helper.make_attribute(attr, value)])
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(UserError, match=f"Scan node 'Scan': {attr} = .*{message}"):
        import_onnx(tmp_path / "m.onnx")


def test_scan_with_an_unrecognised_input_projection_is_refused(tmp_path):
    import onnx

    from stapes.errors import UserError

    model = export_onnx(random_graph("rnn", rank=2), lowrank="factors")
    add = next(n for n in model.graph.node if n.op_type == "Add" and n.output[0] == "rnn_xwb")
    add.input[1] = add.input[0]  # x Wᵀ + x Wᵀ: no constant bias
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(UserError, match="scanned input 'rnn_xwb' must be Add\\(MatMul\\(x, Wᵀ\\), b\\)"):
        import_onnx(tmp_path / "m.onnx")
