"""FloatGraph -> ONNX (numpy + onnx only; no torch).

The exported model computes exactly ``FloatGraph.run`` in float32:

* inputs  ``x``  (batch, time, input) and ``h0`` (batch, hidden), the state to start from
  (zeros for a fresh sequence; feed ``h_n`` back to stream frame by frame);
* outputs ``y``  (batch, time, output) for a per-step readout, (batch, output) for a final one,
  and ``h_n`` (batch, hidden), the state after the last step.

Cells map onto the standard recurrent operators (opset ``OPSET``):

* Elman RNN -> ``RNN`` (activations ``Tanh``), ``W = w``, ``R = u``, ``B = [b, 0]``.
* MGU -> ``GRU`` with tied gates, gate order ``[z, r, h]``, ``linear_before_reset = 0``:
  ONNX computes ``z = σ(Wz x + Rz h + Wbz + Rbz)``, ``r = σ(Wr x + Rr h + Wbr + Rbr)``,
  ``h̃ = tanh(Wh x + Rh (r ⊙ h) + Wbh + Rbh)``, ``h' = (1 − z) ⊙ h̃ + z ⊙ h``.
  With ``r = f`` (``Wr = w_f, Rr = u_f, Wbr = b_f``) and ``z = 1 − f = σ(−pre_f)``
  (``Wz = −w_f, Rz = −u_f, Wbz = −b_f``) this is ``h' = f ⊙ h̃ + (1 − f) ⊙ h``: the MGU.
  All biases go into ``Wb``; ``Rb`` is zero.

A low-rank recurrent matrix ``U = A B`` is exported in one of two modes (``LOWRANK_MODES``):

* ``factors``: the factors are kept. The input projections ``x Wᵀ + b`` of all steps are one
  MatMul outside the loop; a ``Scan`` over time runs the recurrence, two MatMuls per low-rank
  matrix (``(h Bᵀ) Aᵀ``): 2·N·r multiply-adds per matrix and step instead of N².
* ``dense``: ``A B`` is multiplied out (in float64, then rounded to float32) and the cell uses
  the standard ``RNN``/``GRU`` operator, which host tools understand and ``import-onnx`` reads back.

The mode, the cell, the ranks and the readout are written in the model's ``doc_string`` and
``metadata_props`` (keys ``stapes.*``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stapes._version import __version__
from stapes.errors import UserError
from stapes.fsutil import atomic_write_bytes
from stapes.ir.float_graph import FloatGraph, LowRank, RNNCell, dense

OPSET = 17
LOWRANK_MODES = ("factors", "dense")
INPUT_NAME, STATE_NAME = "x", "h0"
OUTPUT_NAME, STATE_OUT_NAME = "y", "h_n"


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


class _Builder:
    """Collects the nodes and initializers of one graph; a node is named after its output."""

    def __init__(self):
        from onnx import helper

        self.helper = helper
        self.nodes: list = []
        self.inits: list = []

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=output, **attrs))
        return output


def _recurrent_operator(g: _Builder, cell, x_tbi: str, h0_1bn: str) -> tuple[str, str]:
    """The cell as one ONNX RNN/GRU node; returns (Y (T,1,B,N), Y_h (1,B,N))."""
    n = cell.hidden_size
    if isinstance(cell, RNNCell):
        w = cell.w[None]
        r = dense(cell.u)[None]
        b = np.concatenate([cell.b, np.zeros(n)])[None]
        op, attrs = "RNN", {"activations": ["Tanh"]}
    else:
        u_f, u_h = dense(cell.u_f), dense(cell.u_h)
        w = np.concatenate([-cell.w_f, cell.w_f, cell.w_h])[None]  # gates [z, r, h]
        r = np.concatenate([-u_f, u_f, u_h])[None]
        b = np.concatenate([-cell.b_f, cell.b_f, cell.b_h, np.zeros(3 * n)])[None]  # [Wb, Rb]
        op, attrs = "GRU", {"activations": ["Sigmoid", "Tanh"], "linear_before_reset": 0}
    g.const(f"{op}.W", _f32(w))
    g.const(f"{op}.R", _f32(r))
    g.const(f"{op}.B", _f32(b))
    g.nodes.append(
        g.helper.make_node(
            op,
            [x_tbi, f"{op}.W", f"{op}.R", f"{op}.B", "", h0_1bn],
            ["Y", "Y_h"],
            name=op,
            hidden_size=n,
            direction="forward",
            **attrs,
        )
    )
    return "Y", "Y_h"


def _body_matvec(body: _Builder, name: str, m, h: str) -> str:
    """h (B,N) @ mᵀ inside the Scan body: two MatMuls for a LowRank, one for a dense matrix."""
    if isinstance(m, LowRank):
        bt = f"{name}.B_T"  # (N, r): outer-scope initializers, visible inside the body
        at = f"{name}.A_T"  # (r, N)
        z = body.node("MatMul", [h, bt], f"{name}_z")
        return body.node("MatMul", [z, at], f"{name}_Az")
    return body.node("MatMul", [h, f"{name}.U_T"], f"{name}_Uh")


def _factor_inits(g: _Builder, name: str, m) -> None:
    if isinstance(m, LowRank):
        g.const(f"{name}.B_T", _f32(m.b.T))
        g.const(f"{name}.A_T", _f32(m.a.T))
    else:
        g.const(f"{name}.U_T", _f32(np.asarray(m).T))


def _scan_recurrence(g: _Builder, cell) -> tuple[str, str]:
    """The recurrence as a Scan over time with the factors kept; returns (states (B,T,N), h_n)."""
    from onnx import TensorProto

    helper = g.helper
    n = cell.hidden_size
    # Input projections of all steps at once, outside the loop: (B,T,I) @ (I,N) + b.
    pre_names = []
    if isinstance(cell, RNNCell):
        pairs = [("rnn", cell.w, cell.b)]
        _factor_inits(g, "rnn.u", cell.u)
    else:
        pairs = [("mgu.f", cell.w_f, cell.b_f), ("mgu.h", cell.w_h, cell.b_h)]
        _factor_inits(g, "mgu.u_f", cell.u_f)
        _factor_inits(g, "mgu.u_h", cell.u_h)
    for name, w, b in pairs:
        xw = g.node("MatMul", [INPUT_NAME, g.const(f"{name}.W_T", _f32(w.T))], f"{name}_xw")
        pre_names.append(g.node("Add", [xw, g.const(f"{name}.b", _f32(b))], f"{name}_xwb"))

    body = _Builder()
    vec = lambda nm: helper.make_tensor_value_info(nm, TensorProto.FLOAT, ["batch", n])  # noqa: E731
    if isinstance(cell, RNNCell):
        ins = [vec("h"), vec("xw_t")]
        pre = body.node("Add", [_body_matvec(body, "rnn.u", cell.u, "h"), "xw_t"], "pre")
        h_new = body.node("Tanh", [pre], "h_new")
    else:
        ins = [vec("h"), vec("xf_t"), vec("xh_t")]
        pre_f = body.node("Add", [_body_matvec(body, "mgu.u_f", cell.u_f, "h"), "xf_t"], "pre_f")
        f = body.node("Sigmoid", [pre_f], "f")
        fh = body.node("Mul", [f, "h"], "fh")
        pre_h = body.node("Add", [_body_matvec(body, "mgu.u_h", cell.u_h, fh), "xh_t"], "pre_h")
        c = body.node("Tanh", [pre_h], "c")
        blend = body.node("Mul", [f, body.node("Sub", [c, "h"], "c_minus_h")], "f_c_minus_h")
        h_new = body.node("Add", ["h", blend], "h_new")
    body.node("Identity", [h_new], "h_out")
    body.node("Identity", [h_new], "state_t")
    body_graph = helper.make_graph(body.nodes, "step", ins, [vec("h_out"), vec("state_t")])
    k = len(pre_names)
    g.nodes.append(
        helper.make_node(
            "Scan",
            [STATE_NAME, *pre_names],
            [STATE_OUT_NAME, "states"],
            name="Scan",
            body=body_graph,
            num_scan_inputs=k,
            scan_input_axes=[1] * k,
            scan_output_axes=[1],
        )
    )
    return "states", STATE_OUT_NAME


def _metadata(graph: FloatGraph, mode: str) -> dict[str, str]:
    ranks = {k: (m.rank if isinstance(m, LowRank) else None) for k, m in graph.cell.recurrent().items()}
    lowrank = any(r is not None for r in ranks.values())
    return {
        "stapes.version": __version__,
        "stapes.cell": graph.kind,
        "stapes.lowrank": mode if lowrank else "none",
        "stapes.ranks": json.dumps(ranks, sort_keys=True),
        "stapes.readout_mode": graph.readout.mode,
        "stapes.readout_activation": graph.readout.activation,
        "stapes.io": "x (batch,time,input), h0 (batch,hidden) -> y, h_n (batch,hidden)",
    }


def _doc_string(graph: FloatGraph, mode: str) -> str:
    cell = {
        "rnn": "Elman RNN as ONNX RNN (tanh)",
        "mgu": "MGU as ONNX GRU with tied gates (r = f, z = 1 - f, linear_before_reset = 0)",
    }[graph.kind]
    lowrank = any(isinstance(m, LowRank) for m in graph.cell.recurrent().values())
    if lowrank and mode == "factors":
        cell = (
            f"{graph.kind.upper()} with low-rank recurrent matrices kept as factors "
            "(Scan over time, two MatMuls per low-rank matrix)"
        )
    elif lowrank:
        cell += "; low-rank recurrent matrices reconstructed dense (A @ B)"
    return (
        f"stapes {__version__}: {cell}; readout {graph.readout.mode} {graph.readout.activation}. "
        "Inputs x (batch,time,input), h0 (batch,hidden); outputs y, h_n (batch,hidden)."
    )


def export_onnx(graph: FloatGraph, lowrank: str = "factors", opset: int = OPSET):
    """The ONNX model (float32) of `graph`; `lowrank` chooses how low-rank matrices are written
    (see the module docstring). Returns an `onnx.ModelProto` that passed `onnx.checker`."""
    import onnx
    from onnx import TensorProto, helper

    if lowrank not in LOWRANK_MODES:
        raise UserError(f"--lowrank {lowrank!r} is not one of {LOWRANK_MODES}")
    newest = onnx.defs.onnx_opset_version()
    if not 14 <= opset <= newest:
        raise UserError(f"opset {opset} is not supported: stapes exports opsets 14..{newest} (default {OPSET})")
    cell, ro = graph.cell, graph.readout
    n, i, o = graph.hidden_size, graph.input_size, graph.output_size
    g = _Builder()
    has_factors = any(isinstance(m, LowRank) for m in cell.recurrent().values())
    if has_factors and lowrank == "factors":
        states, h_n = _scan_recurrence(g, cell)
    else:
        x_tbi = g.node("Transpose", [INPUT_NAME], "x_time_major", perm=[1, 0, 2])
        ax0 = g.const("axis0", np.array([0], dtype=np.int64))
        ax1 = g.const("axis1", np.array([1], dtype=np.int64))
        h0 = g.node("Unsqueeze", [STATE_NAME, ax0], "h0_1bn")
        y, y_h = _recurrent_operator(g, cell, x_tbi, h0)
        states_tbn = g.node("Squeeze", [y, ax1], "states_time_major")
        states = g.node("Transpose", [states_tbn], "states", perm=[1, 0, 2])
        h_n = g.node("Squeeze", [y_h, ax0], STATE_OUT_NAME)
    src = h_n if ro.mode == "final" else states
    lin = g.node("MatMul", [src, g.const("readout.W_T", _f32(ro.w.T))], "readout_matmul")
    logits_name = "readout_add" if ro.activation == "sigmoid" else OUTPUT_NAME
    logits = g.node("Add", [lin, g.const("readout.b", _f32(ro.b))], logits_name)
    if ro.activation == "sigmoid":
        g.node("Sigmoid", [logits], OUTPUT_NAME)

    y_shape = ["batch", o] if ro.mode == "final" else ["batch", "time", o]
    onnx_graph = helper.make_graph(
        g.nodes,
        f"stapes_{graph.kind}",
        [
            helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", "time", i]),
            helper.make_tensor_value_info(STATE_NAME, TensorProto.FLOAT, ["batch", n]),
        ],
        [
            helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, y_shape),
            helper.make_tensor_value_info(STATE_OUT_NAME, TensorProto.FLOAT, ["batch", n]),
        ],
        initializer=g.inits,
    )
    model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="stapes",
        producer_version=__version__,
        doc_string=_doc_string(graph, lowrank),
    )
    # The oldest IR version that carries this opset: readable by as many runtimes as possible.
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    helper.set_model_props(model, _metadata(graph, lowrank))
    onnx.checker.check_model(model, full_check=True)
    return model


def save_onnx(model, path: str | Path) -> None:
    """Write the model atomically (complete or not at all)."""
    atomic_write_bytes(path, model.SerializeToString())


def run_onnxruntime(model, x: np.ndarray, h0: np.ndarray | None = None, threads: int = 1):
    """Run an exported model with onnxruntime: x (B,T,I) -> (y, h_n) as float32 arrays."""
    sess = make_session(model, threads)
    x = _f32(x)
    if h0 is None:
        h0 = np.zeros((x.shape[0], sess.get_inputs()[1].shape[1]), dtype=np.float32)
    y, h_n = sess.run([OUTPUT_NAME, STATE_OUT_NAME], {INPUT_NAME: x, STATE_NAME: _f32(h0)})
    return y, h_n


def make_session(model, threads: int = 1):
    """An onnxruntime CPU session on a ModelProto, bytes or path, with `threads` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else model
    if isinstance(data, Path):
        data = str(data)
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
