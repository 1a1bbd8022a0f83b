"""Malformed and unsupported ONNX files: each gets its own one-line error, exit code 2, no traceback,
and no output folder. The files are generated here; the CLI runs in subprocesses (in parallel)."""

import subprocess
import sys

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

N, I, O = 4, 2, 1
RNG = np.random.default_rng(7)


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def _weights(op="RNN", gates=None):
    g = gates or (1 if op == "RNN" else 3)
    w = RNG.standard_normal((1, g * N, I))
    r = RNG.standard_normal((1, g * N, N)) * 0.3
    if op == "GRU":  # tied: z = -r
        w[0, :N], r[0, :N] = -w[0, N : 2 * N], -r[0, N : 2 * N]
    return {"W": w, "R": r, "B": np.zeros((1, 2 * g * N))}


def model(
    op="RNN",
    attrs=None,
    weights=None,
    rec_inputs=None,
    readout=("MatMul",),
    extra_nodes=(),
    extra_inputs=(),
    skip_inits=(),
    domain_ops=(),
    opset=17,
):
    """x (T,B,I) -> op -> Squeeze -> readout -> y, with knobs for breaking each part."""
    weights = weights if weights is not None else _weights(op)
    attrs = {"hidden_size": N, **({"activations": ["Tanh"]} if op == "RNN" else {}), **(attrs or {})}
    ins = rec_inputs or ["x", "W", "R", "B"]
    nodes = [
        helper.make_node(op, ins, ["Y", "Y_h"], name="rec", **attrs),
        helper.make_node("Squeeze", ["Y", "ax1"], ["states"], name="squeeze"),
        *extra_nodes,
    ]
    inits = [_init(k, v) for k, v in weights.items() if k not in skip_inits and k != "V"]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "ax1"))
    last = "states"
    for kind in readout:
        out = f"after_{kind}"
        if kind == "MatMul":
            nodes.append(helper.make_node("MatMul", [last, "V"], [out], name="readout"))
            inits.append(
                _init(
                    "V",
                    readout_weight if (readout_weight := weights.get("V")) is not None else RNG.standard_normal((N, O)),
                )
            )
        elif kind == "Transpose":  # swaps time and features: same size, other values
            nodes.append(helper.make_node(kind, [last], [out], name="transpose_node", perm=[2, 1, 0]))
        else:
            nodes.append(helper.make_node(kind, [last], [out], name=f"{kind.lower()}_node"))
        last = out
    nodes.append(helper.make_node("Identity", [last], ["y"], name="out"))
    nodes.extend(domain_ops)
    graph = helper.make_graph(
        nodes,
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "B", I]), *extra_inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", "B", "O"])],
        initializer=inits,
    )
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.example", 1)] if domain_ops else [])
    m = helper.make_model(graph, opset_imports=opsets)
    m.ir_version = 9
    return m.SerializeToString()


def _untied_gru():
    w = _weights("GRU")
    w["W"][0, 0, 0] += 0.5
    return model("GRU", weights=w)


def _with(key, value, op="RNN"):
    w = _weights(op)
    w[key] = value
    return w


def _nan_w():
    w = _weights()
    w["W"][0, 1, 1] = np.nan
    return w


def _truncated_initializer():
    m = onnx.load_model_from_string(model())
    r = next(t for t in m.graph.initializer if t.name == "R")
    r.raw_data = r.raw_data[:-8]  # two floats short of its dims
    return m.SerializeToString()


def _stacked():
    w = _weights()
    second = helper.make_node("RNN", ["states", "W2", "R", "B"], ["Y2", "Y2_h"], name="rec2", hidden_size=N)
    return model(extra_nodes=[second], weights={**w, "W2": RNG.standard_normal((1, N, N))})


def _unrolled():
    nodes = [helper.make_node("Tanh", ["x"], ["t1"], name="t1"), helper.make_node("Tanh", ["t1"], ["t2"], name="t2")]
    graph = helper.make_graph(
        nodes,
        "unrolled",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("t2", TensorProto.FLOAT, [2, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _no_recurrent():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


CASES = {  # name: (file bytes, a phrase the one-line message must contain)
    "empty": (lambda: b"", "empty file"),
    "garbage": (lambda: bytes(np.random.default_rng(3).integers(0, 256, 300, dtype=np.uint8)), "protobuf parse failed"),
    "no_graph": (lambda: onnx.ModelProto(ir_version=9).SerializeToString(), "no nodes found"),
    "lstm": (
        lambda: model("LSTM", attrs={"activations": ["Sigmoid", "Tanh", "Tanh"]}, weights=_weights(gates=4)),
        "operator LSTM (node 'rec') is not supported",
    ),
    "bidirectional": (
        lambda: model(attrs={"direction": "bidirectional"}),
        "direction 'bidirectional' is not supported",
    ),
    "relu_activation": (lambda: model(attrs={"activations": ["Relu"]}), "activations ['Relu'] are not supported"),
    "untied_gru": (_untied_gru, "GRU gates are not tied"),
    "linear_before_reset": (lambda: model("GRU", attrs={"linear_before_reset": 1}), "linear_before_reset = 1"),
    "missing_initializer": (lambda: model(skip_inits=("R",)), "input 'R' of node 'rec' (RNN) is not an initializer"),
    "nan_weight": (lambda: model(weights=_nan_w()), "RNN input W ('W') contains NaN or Inf"),
    "inf_readout": (
        lambda: model(weights=_with("V", np.full((N, O), np.inf))),
        "readout MatMul weight ('V') contains NaN or Inf",
    ),
    "truncated_initializer": (_truncated_initializer, "(tensor name: R) raw_data size (56 bytes) is too small"),
    "wrong_shape_r": (lambda: model(weights=_with("R", np.zeros((1, N, N + 1)))), "input R has shape (1, 4, 5)"),
    "stacked": (_stacked, "found 2 recurrent operators"),
    "clip": (lambda: model(attrs={"clip": 3.0}), "attribute 'clip' is not supported"),
    "sequence_lens": (
        lambda: model(
            rec_inputs=["x", "W", "R", "B", "lens"],
            extra_inputs=[helper.make_tensor_value_info("lens", TensorProto.INT32, ["B"])],
        ),
        "sequence_lens is not supported",
    ),
    "weights_as_input": (
        lambda: model(
            skip_inits=("W",), extra_inputs=[helper.make_tensor_value_info("W", TensorProto.FLOAT, [1, N, I])]
        ),
        "must be a constant initializer, but it is a graph input",
    ),
    "relu_readout": (
        lambda: model(readout=("Relu", "MatMul")),
        "operator Relu (node 'relu_node') between the RNN and output 'y'",
    ),
    "computes_else": (lambda: model(readout=("Transpose",)), "computes something else than the recognised cell"),
    "no_recurrent": (_no_recurrent, "no RNN, GRU or Scan operator found (operators: Relu)"),
    "unrolled": (_unrolled, "re-export with torch.onnx.export(..., dynamo=False)"),
    "custom_domain": (
        lambda: model(domain_ops=[helper.make_node("Foo", ["y"], ["z"], name="foo", domain="com.example")]),
        "operator com.example::Foo (node 'foo') is not supported",
    ),
    "extra_input": (
        lambda: model(extra_inputs=[helper.make_tensor_value_info("unused", TensorProto.FLOAT, [1])]),
        "graph inputs ['unused'] are not used by the recurrence",
    ),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Run every case through `stapes import-onnx` at once (two cores: keep the wall time short)."""
    root = tmp_path_factory.mktemp("bad_onnx")
    procs = {}
    for name, (make, _) in CASES.items():
        path = root / f"{name}.onnx"
        path.write_bytes(make())
        out = root / f"{name}_out"
        procs[name] = (
            out,
            subprocess.Popen(
                [sys.executable, "-m", "stapes", "import-onnx", str(path), "--out", str(out)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
    missing = root / "missing_out"
    procs["missing_file"] = (
        missing,
        subprocess.Popen(
            [sys.executable, "-m", "stapes", "import-onnx", str(root / "nope.onnx"), "--out", str(missing)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
    )
    res = {}
    for name, (out, p) in procs.items():
        stdout, stderr = p.communicate(timeout=120)
        res[name] = (p.returncode, stdout, stderr, out)
    return res


@pytest.mark.parametrize("name", [*CASES, "missing_file"])
def test_bad_file_is_a_clear_user_error(results, name):
    code, stdout, stderr, out = results[name]
    phrase = CASES[name][1] if name in CASES else "no such file"
    assert code == 2, (stdout, stderr)
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stapes import-onnx: error: "), stderr
    assert phrase in lines[0], lines[0]
    assert not out.exists()
    assert not any(p.name.startswith(f".{out.name}") for p in out.parent.iterdir())  # no temp folder left


def test_messages_are_distinct(results):
    messages = [results[n][2].split(": error: ", 1)[-1].split(": ", 1)[-1] for n in results]
    assert len(set(messages)) == len(messages)


def test_valid_base_model_imports(tmp_path):
    """The generator above makes valid files when nothing is broken (so each case tests one defect)."""
    from stapes.frontend.onnx_import import import_onnx

    for op in ("RNN", "GRU"):
        (tmp_path / f"{op}.onnx").write_bytes(model(op))
        graph = import_onnx(tmp_path / f"{op}.onnx")
        assert graph.kind == ("rnn" if op == "RNN" else "mgu")
        assert graph.provenance["input_layout"] == "time_first" and graph.provenance["state_input"] is None


BASE = {"RNN": model("RNN"), "GRU": model("GRU")}


@settings(max_examples=80)
@given(
    op=st.sampled_from(sorted(BASE)),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_corrupted_bytes_import_or_fail_cleanly(tmp_path_factory, op, flips):
    """Byte corruption anywhere in a valid file: the import succeeds (and is self-checked) or is a
    UserError, never another exception."""
    from stapes.errors import UserError
    from stapes.frontend.onnx_import import import_onnx

    data = bytearray(BASE[op])
    for where, value in flips:
        data[int(where * len(data))] = value
    path = tmp_path_factory.mktemp("fuzz") / "m.onnx"
    path.write_bytes(bytes(data))
    try:
        import_onnx(path)
    except UserError as e:
        assert "\n" not in str(e)


def _mutate(m, kind: str, a: int, b: int) -> None:
    """One structural defect: drop a node or initializer, retype a node, swap inputs, resize a tensor."""
    g = m.graph
    node, init = g.node[a % len(g.node)], g.initializer[a % len(g.initializer)]
    if kind == "drop_node":
        g.node.remove(node)
    elif kind == "drop_initializer":
        g.initializer.remove(init)
    elif kind == "retype":
        node.op_type = ["Relu", "Tanh", "Sigmoid", "Identity", "Add", "MatMul", "Gemm", "GRU", "RNN"][b % 9]
    elif kind == "swap_inputs" and len(node.input) > 1:
        i, j = b % len(node.input), (b + 1) % len(node.input)
        node.input[i], node.input[j] = node.input[j], node.input[i]
    elif kind == "resize":
        arr = numpy_helper.to_array(init).reshape(-1)
        if arr.dtype.kind == "f":
            init.CopyFrom(numpy_helper.from_array(np.resize(arr, max(1, arr.size + (b % 5) - 2)), init.name))


@settings(max_examples=60)
@given(
    op=st.sampled_from(sorted(BASE)),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["drop_node", "drop_initializer", "retype", "swap_inputs", "resize"]),
            st.integers(0, 50),
            st.integers(0, 50),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_structural_defects_import_or_fail_cleanly(tmp_path_factory, op, edits):
    from stapes.errors import UserError
    from stapes.frontend.onnx_import import import_onnx

    m = onnx.load_model_from_string(BASE[op])
    for kind, a, b in edits:
        _mutate(m, kind, a, b)
    path = tmp_path_factory.mktemp("defect") / "m.onnx"
    path.write_bytes(m.SerializeToString())
    try:
        import_onnx(path)
    except UserError as e:
        assert "\n" not in str(e)
