"""ONNX (or a torch.nn.RNN) -> FloatGraph.

What is recognised (everything else is a UserError naming the operator or attribute):

* exactly one recurrent operator, in the default ONNX domain:
  ``RNN`` with ``activations = [Tanh]``, or ``GRU`` with ``[Sigmoid, Tanh]``,
  ``linear_before_reset = 0`` and tied gates (``Wz = −Wr``, ``Rz = −Rr``,
  ``Wbz + Rbz = −(Wbr + Rbr)``: the MGU, see onnx_export.py); one layer, ``direction = forward``,
  no ``clip``, no ``sequence_lens``; ``W``, ``R``, ``B`` constant (initializers or Constant nodes);
  ``initial_h`` absent, zero, or a graph input (a state input, fed zeros);
* or the ``Scan`` that stapes writes for ``export-onnx --lowrank factors`` (input projections
  outside, one RNN or MGU step in the body with each recurrent matrix as one MatMul or two, the
  low-rank factors kept: they come back as σ-ordered balanced factors of the same product);
* its input ``X`` a graph input, directly (time-major) or through ``Transpose`` (batch-first);
* between it and each graph output only layout operators (Squeeze, Unsqueeze, Transpose, Reshape,
  Flatten, Identity), an optional step selection (Gather/Slice: the last step, a final readout)
  and an optional readout ``MatMul`` or ``Gemm`` with constant weights, ``Add`` with a constant
  bias, ``Sigmoid``. The output fed by ``Y_h`` or by a step selection is a final readout.

``torch.onnx.export(..., dynamo=False)`` of a ``torch.nn.RNN`` (+ ``nn.Linear``) produces exactly
this. The default exporter of torch ≥ 2.9 (``dynamo=True``) unrolls the recurrence into one
MatMul/Tanh per time step; that graph is rejected with a message saying how to re-export.

Every import ends with a check: onnxruntime runs the file on seeded random inputs and the
FloatGraph must give the same outputs (float32 tolerance ``VERIFY_TOL``), so a structure that
was recognised but computes something else cannot slip through.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stapes.errors import UserError
from stapes.fsutil import atomic_dir
from stapes.ir.float_graph import FloatGraph, LowRank, MGUCell, Readout, RNNCell

SUPPORTED = (
    "supported: one ONNX RNN (tanh, forward, one layer) or GRU with tied gates "
    "(r = f, z = 1 - f, linear_before_reset = 0), or the Scan of a stapes '--lowrank factors' export, "
    "then an optional MatMul/Gemm + Add (+ Sigmoid) readout"
)
LAYOUT_OPS = ("Squeeze", "Unsqueeze", "Transpose", "Reshape", "Flatten", "Identity")
STEP_SELECT_OPS = ("Gather", "Slice")
UNSUPPORTED_RECURRENT = ("LSTM", "Loop", "If")
VERIFY_TOL = 1e-4  # |onnxruntime - FloatGraph| <= tol * (1 + |value|), both in float32 inputs
TIE_TOL = 1e-6  # relative: GRU z weights must be the negated r weights to this precision
MAX_ONNX_BYTES = 1 << 30  # the model file, and its external weight data together


@dataclass
class _Readout:
    output: str
    w: np.ndarray | None  # (O, N) or None for the identity readout (output = the state)
    b: np.ndarray | None
    activation: str
    final: bool


def _fail(msg: str):
    raise UserError(msg)


# ---- reading and validating the file ----------------------------------------------------------
def load_model(path: str | Path):
    """Read and validate an ONNX file; every failure is a one-line UserError."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        _fail(f"{path}: no such file")
    try:
        size = path.stat().st_size
        if size > MAX_ONNX_BYTES:
            _fail(f"{path}: {size} bytes; an ONNX model here is at most {MAX_ONNX_BYTES >> 20} MiB")
        data = path.read_bytes()
    except OSError as e:
        _fail(f"{path}: cannot read ({e.strerror or e})")
    if not data:
        _fail(f"{path}: empty file, not an ONNX model")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        _fail(f"{path}: not an ONNX model (protobuf parse failed: {why})")
    if not model.HasField("graph") or len(model.graph.node) == 0:
        _fail(f"{path}: not an ONNX model with a graph (no nodes found)")
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        _check_external_size(path, external)
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except Exception as e:  # OSError, ValueError, onnx's ValidationError (a path outside the folder), ...
            why = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            _fail(f"{path}: external weight data cannot be read ({why})")
    return model


def _check_external_size(path: Path, tensors) -> None:
    """The external data files together stay below MAX_ONNX_BYTES (checked before reading them)."""
    files = set()
    for t in tensors:
        location = next((kv.value for kv in t.external_data if kv.key == "location"), None)
        if location:
            files.add(path.parent / location)
    total = 0
    for f in files:
        try:
            total += f.stat().st_size if f.is_file() else 0
        except (OSError, ValueError):
            continue  # onnx names the problem when it opens the file
    if total > MAX_ONNX_BYTES:
        _fail(f"{path}: {total} bytes of external weight data; at most {MAX_ONNX_BYTES >> 20} MiB are read")


def _check_model(model, name: str) -> None:
    opsets = {o.domain: o.version for o in model.opset_import}
    if "" not in opsets and "ai.onnx" not in opsets:
        _fail(f"{name}: no default-domain opset import (the model declares {sorted(opsets) or 'none'})")
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            _fail(f"{name}: operator {node.domain}::{node.op_type} (node {node.name!r}) is not supported; {SUPPORTED}")
        if node.op_type in UNSUPPORTED_RECURRENT:
            _fail(f"{name}: operator {node.op_type} (node {node.name!r}) is not supported; {SUPPORTED}")
    known = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        for inp in node.input:
            if inp and inp not in known:
                _fail(
                    f"{name}: input {inp!r} of node {node.name or node.op_type!r} ({node.op_type}) is not an "
                    "initializer, a graph input or an earlier node's output (missing initializer?)"
                )
        known.update(node.output)
    _run_checker(model, name, full=False)


def _run_checker(model, name: str, full: bool) -> None:
    """onnx.checker; `full` adds shape inference (run after stapes' own, more specific checks)."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=full)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, UnicodeError, ValueError) as e:
        first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        _fail(f"{name}: invalid ONNX model ({first.strip()})")


# ---- graph analysis ---------------------------------------------------------------------------
class _Graph:
    """Producers, constants and attributes of one ONNX graph."""

    def __init__(self, model, name: str):
        from onnx import helper

        self.name = name
        self.g = model.graph
        self.producer = {o: n for n in self.g.node for o in n.output if o}
        self.inputs = {i.name for i in self.g.input} - {t.name for t in self.g.initializer}
        self.consts: dict[str, np.ndarray] = {}
        for t in self.g.initializer:
            self.consts[t.name] = _tensor(t, f"{name}: initializer {t.name!r}")
        for n in self.g.node:
            if n.op_type == "Constant" and n.attribute:
                a = n.attribute[0]
                val = (
                    _tensor(a.t, f"{name}: Constant node {n.name!r}")
                    if a.name == "value"
                    else np.asarray(helper.get_attribute_value(a))
                )
                self.consts[n.output[0]] = val

    def attrs(self, node) -> dict:
        from onnx import helper

        out = {}
        for a in node.attribute:
            v = helper.get_attribute_value(a)
            if isinstance(v, bytes):  # a corrupt string shows as U+FFFD in the error that follows
                v = v.decode(errors="replace")
            elif isinstance(v, list):
                v = [x.decode(errors="replace") if isinstance(x, bytes) else x for x in v]
            out[a.name] = v
        return out

    def const(self, value: str, what: str) -> np.ndarray:
        if value not in self.consts:
            src = self.producer.get(value)
            how = f"computed by {src.op_type} node {src.name!r}" if src else "a graph input"
            _fail(f"{self.name}: {what} ({value!r}) must be a constant initializer, but it is {how}")
        arr = self.consts[value]
        if arr.dtype.kind != "f":
            _fail(f"{self.name}: {what} ({value!r}) has element type {arr.dtype}, expected float")
        if not np.all(np.isfinite(arr)):
            _fail(f"{self.name}: {what} ({value!r}) contains NaN or Inf")
        return arr.astype(np.float64)

    def state_input(self, value: str) -> str | None:
        """The graph input that `value` is (through layout operators only), or None."""
        while value not in self.inputs:
            node = self.producer.get(value)
            if node is None or node.op_type not in LAYOUT_OPS:
                return None
            value = node.input[0]
        return value

    def is_zero(self, value: str) -> bool:
        """True if `value` is provably all zeros (a zero constant, possibly expanded or reshaped)."""
        if value in self.consts:
            return bool(np.all(self.consts[value] == 0))
        node = self.producer.get(value)
        if node is None:
            return False
        if node.op_type == "ConstantOfShape":
            v = self.attrs(node).get("value")
            return v is None or bool(np.all(_tensor(v, f"{self.name}: ConstantOfShape {node.name!r}") == 0))
        if node.op_type in ("Expand", "Tile", *LAYOUT_OPS):
            return self.is_zero(node.input[0])
        return False


def _tensor(t, what: str) -> np.ndarray:
    """A TensorProto's values; a tensor whose data does not match its shape is a UserError."""
    from onnx import numpy_helper

    try:
        return numpy_helper.to_array(t)
    except (ValueError, TypeError, KeyError) as e:
        _fail(f"{what} is malformed: its data does not match its type and shape {list(t.dims)} ({e})")


def _find_recurrent(gr: _Graph):
    rec = [n for n in gr.g.node if n.op_type in ("RNN", "GRU", "Scan")]
    if len(rec) > 1:
        _fail(
            f"{gr.name}: found {len(rec)} recurrent operators ({', '.join(n.op_type for n in rec)}): "
            "stapes imports one layer; " + SUPPORTED
        )
    if not rec:
        if sum(n.op_type == "Tanh" for n in gr.g.node) > 1:
            return None  # perhaps an RNN unrolled over time: see _unrolled_rnn
        ops = sorted({n.op_type for n in gr.g.node})
        _fail(f"{gr.name}: no RNN, GRU or Scan operator found (operators: {', '.join(ops)}); {SUPPORTED}")
    return rec[0]


def _check_attributes(gr: _Graph, node) -> dict:
    op = node.op_type
    a = gr.attrs(node)
    where = f"{gr.name}: {op} node {node.name!r}"
    direction = a.get("direction", "forward")
    if direction != "forward":
        _fail(f"{where}: direction {direction!r} is not supported (only 'forward')")
    want = ["tanh"] if op == "RNN" else ["sigmoid", "tanh"]
    acts = [s.lower() for s in a.get("activations", want)]
    if acts != want:
        _fail(f"{where}: activations {a['activations']} are not supported (only {[s.capitalize() for s in want]})")
    for attr in ("activation_alpha", "activation_beta", "clip"):
        if attr in a:
            _fail(f"{where}: attribute {attr!r} is not supported")
    if a.get("layout", 0) not in (0, 1):
        _fail(f"{where}: layout {a['layout']} is not supported (0 or 1)")
    if op == "GRU" and a.get("linear_before_reset", 0) != 0:
        _fail(
            f"{where}: linear_before_reset = {a['linear_before_reset']} is not supported "
            "(only 0, the GRU form that is an MGU with tied gates)"
        )
    return a


def _cell_from_node(gr: _Graph, node, attrs: dict):
    op = node.op_type
    gates = 1 if op == "RNN" else 3
    ins = list(node.input) + [""] * (6 - len(node.input))
    w = gr.const(ins[1], f"{op} input W")
    r = gr.const(ins[2], f"{op} input R")
    if w.ndim != 3 or w.shape[0] != 1 or w.shape[1] % gates:
        _fail(f"{gr.name}: {op} input W has shape {w.shape}, expected (1, {gates}*hidden, input)")
    n = w.shape[1] // gates
    if "hidden_size" in attrs and attrs["hidden_size"] != n:
        _fail(
            f"{gr.name}: {op} hidden_size = {attrs['hidden_size']} but W has {w.shape[1]} rows "
            f"(expected {gates}*hidden_size)"
        )
    if r.shape != (1, gates * n, n):
        _fail(f"{gr.name}: {op} input R has shape {r.shape}, expected {(1, gates * n, n)}")
    b = gr.const(ins[3], f"{op} input B") if ins[3] else np.zeros((1, 2 * gates * n))
    if b.shape != (1, 2 * gates * n):
        _fail(f"{gr.name}: {op} input B has shape {b.shape}, expected {(1, 2 * gates * n)}")
    if ins[4]:
        _fail(f"{gr.name}: {op} input sequence_lens is not supported (all sequences run to the end)")
    if ins[5] and not (gr.state_input(ins[5]) or gr.is_zero(ins[5])):
        _fail(f"{gr.name}: {op} input initial_h must be absent, zero or a graph input (a state input)")
    w, r, bias = w[0], r[0], b[0, : gates * n] + b[0, gates * n :]
    if op == "RNN":
        return RNNCell(w, r, bias)
    (wz, wr, wh), (rz, rr, rh), (bz, br, bh) = (np.split(m, 3) for m in (w, r, bias))
    for what, z, rg in (("W", wz, wr), ("R", rz, rr), ("B (Wb + Rb)", bz, br)):
        gap = float(np.max(np.abs(z + rg))) if z.size else 0.0
        if gap > TIE_TOL * max(1.0, float(np.max(np.abs(rg)))):
            _fail(
                f"{gr.name}: GRU gates are not tied (update gate z must equal 1 - reset gate r: "
                f"{what} of z = -{what} of r; max difference {gap:.3g}); a general GRU is not supported"
            )
    return MGUCell(wr, rr, br, wh, rh, bh)


def _scan_cell(gr: _Graph, scan):
    """The cell of a Scan written like stapes' ``--lowrank factors`` export (onnx_export.py): input
    projections ``X Wᵀ + b`` (one per gate) outside the loop, scanned over axis 1 (batch-first);
    the body adds to each a recurrent term, one MatMul by ``Uᵀ`` (dense) or two, ``(h Bᵀ) Aᵀ``
    (low rank ``U = A B``). One scanned input is an Elman RNN, two an MGU. Only the structure
    the cell is read from is checked here; what the body computes is checked by `_verify`.
    Returns (cell, input name, state input or None, terminals)."""
    from stapes.ir.lowrank import rebalanced

    a = gr.attrs(scan)
    where = f"{gr.name}: Scan node {scan.name!r}"
    k = a.get("num_scan_inputs", 0)
    if k not in (1, 2) or len(scan.input) != 1 + k or len(scan.output) != 2:
        _fail(
            f"{where}: expected one state input, 1 (RNN) or 2 (MGU) scanned inputs and two outputs "
            f"(final state, states); found {len(scan.input)} inputs ({k} scanned), {len(scan.output)} outputs"
        )
    for attr, want in (("scan_input_axes", [1] * k), ("scan_output_axes", [1])):
        if list(a.get(attr, [0] * len(want))) != want:
            _fail(f"{where}: {attr} = {list(a.get(attr, []))}; only {want} (batch-first, over time) is supported")
    for attr in ("scan_input_directions", "scan_output_directions"):
        if any(a.get(attr, [])):
            _fail(f"{where}: {attr} = {list(a[attr])}; only forward scans are supported")
    state = scan.input[0]
    state_input = gr.state_input(state)
    if not (state_input or gr.is_zero(state)):
        _fail(f"{where}: the initial state must be zero or a graph input (a state input)")
    xs, ws, bs = set(), [], []
    for v in scan.input[1:]:
        add = gr.producer.get(v)
        ins = list(add.input) if add is not None and add.op_type == "Add" else []
        bias = [i for i in ins if i in gr.consts]
        matmul = [gr.producer.get(i) for i in ins if i not in gr.consts]
        if len(ins) != 2 or len(bias) != 1 or matmul[0] is None or matmul[0].op_type != "MatMul":
            _fail(f"{where}: scanned input {v!r} must be Add(MatMul(x, Wᵀ), b), the input projection of a gate")
        bs.append(gr.const(bias[0], "Scan input projection bias"))
        ws.append(gr.const(matmul[0].input[1], "Scan input projection weight").T)
        xs.add(matmul[0].input[0])
    if len(xs) != 1 or not xs <= gr.inputs:
        _fail(f"{where}: the input projections must all read one graph input (found {sorted(xs)})")
    body = a["body"]
    producer = {o: n for n in body.node for o in n.output}
    if len(body.input) != 1 + k:
        _fail(f"{where}: the body has {len(body.input)} inputs, expected {1 + k}")
    h = body.input[0].name

    def recurrent_matrix(x_t: str):
        add = next((n for n in body.node if n.op_type == "Add" and x_t in n.input), None)
        if add is None:
            _fail(f"{where}: the body does not add a recurrent term to its scanned input {x_t!r}")
        value = add.input[1] if add.input[0] == x_t else add.input[0]
        mats = []
        while (p := producer.get(value)) is not None and p.op_type == "MatMul":
            mats.append(gr.const(p.input[1], f"Scan body MatMul {p.name!r} weight"))
            value = p.input[0]
        if len(mats) == 1:
            return value, mats[0].T
        if len(mats) == 2:  # (v Bᵀ) Aᵀ: walked back from Aᵀ
            at, bt = mats
            return value, rebalanced(at.T, bt.T)
        _fail(
            f"{where}: the recurrent term added to {x_t!r} is {len(mats)} MatMuls; expected 1 (dense) or 2 (low rank)"
        )

    terms = [recurrent_matrix(i.name) for i in body.input[1:]]
    if terms[0][0] != h:
        _fail(f"{where}: the first recurrent term must multiply the state {h!r}, not {terms[0][0]!r}")
    if k == 1:
        cell = RNNCell(ws[0], terms[0][1], bs[0])
    else:
        cell = MGUCell(ws[0], terms[0][1], bs[0], ws[1], terms[1][1], bs[1])
    return cell, xs.pop(), state_input, {scan.output[1]: False, scan.output[0]: True}


def _trace_input(gr: _Graph, value: str, what: str, batch_first: bool = False) -> tuple[str, bool]:
    """The graph input feeding `value` (the time-major input sequence) and whether the model
    takes batch-first input."""
    while value not in gr.inputs:
        p = gr.producer.get(value)
        if p is None or p.op_type not in ("Transpose", "Identity"):
            how = f"{p.op_type} node {p.name!r}" if p else "a constant"
            _fail(f"{gr.name}: the {what} input comes from {how}; it must be a graph input, optionally transposed")
        if p.op_type == "Transpose":
            perm = list(gr.attrs(p).get("perm", []))
            if perm != [1, 0, 2]:
                _fail(
                    f"{gr.name}: Transpose {p.name!r} with perm {perm} before the {what} is not supported "
                    "(only [1, 0, 2], batch-first input)"
                )
            batch_first = not batch_first
        value = p.input[0]
    return value, batch_first


def _unrolled_rnn(gr: _Graph):
    """An Elman RNN unrolled over time, as torch.onnx.export's dynamo exporter writes nn.RNN:
    ``P = X Wᵀ (+ b_ih)`` for all steps, then per step ``tanh(slice_t(P) + c_t)`` with
    ``c_0`` a constant (the zero initial state's term) and ``c_t = h_{t-1} Uᵀ (+ b_hh)``; the
    states concatenated over time. Returns (cell, input name, batch_first, terminals, steps)."""
    hint = (
        "; re-export with torch.onnx.export(..., dynamo=False) to keep the ONNX RNN operator, "
        "or see docs/onnx.md for what is supported"
    )
    tanhs = [n for n in gr.g.node if n.op_type == "Tanh"]
    where = f"{gr.name}: no RNN or GRU operator; the {len(tanhs)} Tanh nodes look like an RNN unrolled over time"

    def unrolled_fail(reason: str):
        _fail(f"{where}, but {reason}{hint}")

    def const_operand(node):
        k = next((j for j in (0, 1) if node.input[j] in gr.consts), None)
        return (None, None) if k is None else (node.input[k], node.input[1 - k])

    u_names, b_hh, c0, proj = set(), [], None, set()
    for k, tn in enumerate(tanhs):
        add = gr.producer.get(tn.input[0])
        if add is None or add.op_type != "Add":
            unrolled_fail(f"the input of Tanh {tn.name!r} is not an Add")
        rec_term = in_term = None
        for j in (0, 1):
            v, p = add.input[j], gr.producer.get(add.input[j])
            if k == 0 and v in gr.consts:
                rec_term, c0 = v, gr.const(v, "the first step's recurrent term")
                continue
            bias_node = None
            if p is not None and p.op_type == "Add" and const_operand(p)[0] is not None:
                bias_node, p = p, gr.producer.get(const_operand(p)[1])
            if k > 0 and p is not None and p.op_type == "MatMul" and p.input[0] == tanhs[k - 1].output[0]:
                rec_term = v
                u_names.add(p.input[1])
                b_hh.append(None if bias_node is None else const_operand(bias_node)[0])
            else:
                in_term = v
        if rec_term is None or in_term is None:
            unrolled_fail(f"step {k} (Tanh {tn.name!r}) has no {'recurrent' if rec_term is None else 'input'} term")
        while (p := gr.producer.get(in_term)) is not None and p.op_type in (*LAYOUT_OPS, *STEP_SELECT_OPS):
            in_term = p.input[0]
        proj.add(in_term)
    if len(tanhs) < 2 or not u_names:
        unrolled_fail("a single step does not contain the recurrent weights")
    mats = [gr.const(nm, "the recurrent MatMul weight") for nm in sorted(u_names)]
    biases = [np.zeros(mats[0].shape[1]) if nm is None else gr.const(nm, "the recurrent bias") for nm in b_hh]
    if any(m.shape != mats[0].shape or not np.array_equal(m, mats[0]) for m in mats) or mats[0].ndim != 2:
        unrolled_fail("the steps use different recurrent weights")
    if any(not np.array_equal(b, biases[0]) for b in biases):
        unrolled_fail("the steps use different recurrent biases")
    u, bhh = mats[0].T, biases[0]
    if bhh.size not in (1, u.shape[0]):
        unrolled_fail(f"the recurrent bias does not have the hidden size {u.shape[0]}")
    bhh = np.broadcast_to(bhh.reshape(-1), (u.shape[0],))
    if c0 is None or c0.shape[-1:] != bhh.shape or not np.allclose(c0, bhh, rtol=0, atol=1e-7):
        unrolled_fail("the first step's recurrent term is not the recurrent bias (a nonzero initial state)")
    if len(proj) != 1:
        unrolled_fail("the steps take their inputs from different projections")
    p = gr.producer.get(proj.pop())
    b_ih = None
    if p is not None and p.op_type == "Add" and const_operand(p)[0] is not None:
        b_ih = gr.const(const_operand(p)[0], "the input bias")
        p = gr.producer.get(const_operand(p)[1])
    if p is None or p.op_type != "MatMul" or p.input[1] not in gr.consts:
        unrolled_fail("the input projection is not a MatMul with constant weights")
    w = gr.const(p.input[1], "the input MatMul weight").T
    n = u.shape[0]
    if w.shape[0] != n or u.shape != (n, n):
        unrolled_fail(f"the weights have inconsistent shapes (input {w.T.shape}, recurrent {u.T.shape})")
    if b_ih is not None and b_ih.size not in (1, n):
        unrolled_fail(f"the input bias does not have the hidden size {n}")
    bias = bhh + (np.zeros(n) if b_ih is None else np.broadcast_to(b_ih.reshape(-1), (n,)))
    x_name, batch_first = _trace_input(gr, p.input[0], "unrolled RNN")
    outs = [t.output[0] for t in tanhs]
    terminals = {outs[-1]: True}
    for node in gr.g.node:
        if node.op_type == "Concat" and list(node.input) == outs and gr.attrs(node).get("axis") == 0:
            terminals[node.output[0]] = False
    return RNNCell(w, u, bias), x_name, batch_first, terminals, len(tanhs)


def _trace_output(gr: _Graph, out: str, terminals: dict[str, bool], what: str) -> _Readout:
    """Walk back from a graph output to the recurrence, collecting the readout. `terminals` maps
    the recurrence's values to True if they are the last state (a final readout), False for all
    steps' states."""
    value, act, w, b, final = out, "linear", None, None, False

    def producer(v):
        p = gr.producer.get(v)
        if p is None:
            _fail(f"{gr.name}: output {out!r} does not depend on the {what}")
        return p

    def skip_layout(v):
        while (p := producer(v)).op_type in LAYOUT_OPS:
            v = p.input[0]
        return v, p

    value, p = skip_layout(value)
    if p.op_type == "Sigmoid":
        act = "sigmoid"
        value, p = skip_layout(p.input[0])
    if p.op_type == "Add":
        k = 0 if p.input[0] in gr.consts else 1
        b, value = gr.const(p.input[k], "readout bias"), p.input[1 - k]
        p = producer(value)
    if p.op_type == "MatMul":
        w, value = gr.const(p.input[1], "readout MatMul weight").T, p.input[0]
    elif p.op_type == "Gemm":
        a = gr.attrs(p)
        if a.get("transA", 0):
            _fail(f"{gr.name}: Gemm {p.name!r} with transA = 1 is not supported as a readout")
        wb = gr.const(p.input[1], "readout Gemm weight")
        w = (wb if a.get("transB", 0) else wb.T) * a.get("alpha", 1.0)
        if len(p.input) > 2 and p.input[2]:
            c = gr.const(p.input[2], "readout Gemm bias") * a.get("beta", 1.0)
            b = c if b is None else b + c
        value = p.input[0]
    elif b is not None:
        _fail(f"{gr.name}: Add before output {out!r} without a MatMul/Gemm readout is not supported")
    if w is not None:
        if w.ndim != 2:
            _fail(f"{gr.name}: readout weight has shape {w.T.shape}, expected (hidden, outputs)")
        if b is None:
            b = np.zeros(w.shape[0])
        if b.size not in (1, w.shape[0]):
            _fail(f"{gr.name}: readout bias has shape {b.shape}, expected ({w.shape[0]},)")
        b = np.broadcast_to(b.reshape(-1), (w.shape[0],))
    while value not in terminals:
        p = producer(value)
        if p.op_type in STEP_SELECT_OPS:
            final = True
        elif p.op_type not in LAYOUT_OPS:
            _fail(
                f"{gr.name}: operator {p.op_type} (node {p.name!r}) between the {what} and output "
                f"{out!r} is not supported; {SUPPORTED}"
            )
        value = p.input[0]
    final = final or terminals[value]
    return _Readout(out, w, b, act, final)


def analyse(model, name: str = "model") -> tuple[FloatGraph, dict]:
    """FloatGraph + facts about the ONNX graph (layout, inputs, outputs) for `model`."""
    _check_model(model, name)
    gr = _Graph(model, name)
    rec = _find_recurrent(gr)
    if rec is None:
        cell, x_name, batch_first, terminals, steps = _unrolled_rnn(gr)
        state_input, what, operator = None, "unrolled RNN", f"RNN unrolled over {steps} steps (Tanh chain)"
    elif rec.op_type == "Scan":
        cell, x_name, state_input, terminals = _scan_cell(gr, rec)
        batch_first, what = True, "Scan"
        operator = f"Scan ({cell.kind.upper()}, recurrent matrices as {_matrix_forms(cell)})"
    else:
        attrs = _check_attributes(gr, rec)
        cell = _cell_from_node(gr, rec, attrs)
        what = operator = rec.op_type
        x_name, batch_first = _trace_input(gr, rec.input[0], what, attrs.get("layout", 0) == 1)
        state_input = gr.state_input(rec.input[5]) if len(rec.input) > 5 and rec.input[5] else None
        terminals = {rec.output[0]: False, **({rec.output[1]: True} if len(rec.output) > 1 else {})}
    extra = gr.inputs - {x_name} - ({state_input} if state_input else set())
    if extra:
        _fail(
            f"{name}: graph inputs {sorted(extra)} are not used by the recurrence; stapes models take one "
            "input sequence (and optionally the initial state)"
        )
    if not gr.g.output:
        _fail(f"{name}: the graph has no outputs")
    readouts = [_trace_output(gr, o.name, terminals, what) for o in gr.g.output]
    main = next((r for r in readouts if r.w is not None), readouts[0])
    n = cell.hidden_size
    if main.w is None:
        w, b = np.eye(n), np.zeros(n)
    else:
        w, b = main.w, main.b
        if w.shape[1] != n:
            _fail(f"{name}: readout weight has {w.shape[1]} inputs, the hidden size is {n}")
    readout = Readout(w, b, "final" if main.final else "per_step", main.activation)
    _run_checker(model, name, full=True)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    facts = {
        "operator": operator,
        "opset": int(opset),
        "input": x_name,
        "state_input": state_input,
        "input_layout": "batch_first" if batch_first else "time_first",
        "output": main.output,
        "ignored_outputs": [r.output for r in readouts if r is not main],
        "producer": f"{model.producer_name} {model.producer_version}".strip() or "unknown",
    }
    return FloatGraph(cell, readout, None, {}), facts


def _matrix_forms(cell) -> str:
    return ", ".join(
        f"{k} rank {m.rank}" if isinstance(m, LowRank) else f"{k} dense" for k, m in cell.recurrent().items()
    )


def _verify(model, graph: FloatGraph, facts: dict, name: str, seed: int = 0) -> float:
    """Run the ONNX model with onnxruntime on seeded inputs; the FloatGraph must agree."""
    from stapes.frontend.onnx_export import make_session

    try:
        sess = make_session(model)
    except Exception as e:  # onnxruntime raises its own exception types
        _fail(f"{name}: onnxruntime cannot load the model ({str(e).splitlines()[0][:200]})")
    feeds_meta = {i.name: i for i in sess.get_inputs()}
    dims = [d if isinstance(d, int) and d > 0 else None for d in feeds_meta[facts["input"]].shape]
    if len(dims) != 3:
        _fail(f"{name}: input {facts['input']!r} has rank {len(dims)}, expected 3 (time, batch, features)")
    bf = facts["input_layout"] == "batch_first"
    batch = dims[0 if bf else 1] or 2
    steps = dims[1 if bf else 0] or 7
    rng = np.random.default_rng(seed)
    dtype = lambda inp: np.float64 if feeds_meta[inp].type == "tensor(double)" else np.float32  # noqa: E731
    x = rng.standard_normal((batch, steps, graph.input_size)).astype(np.float32)
    feeds = {facts["input"]: (x if bf else x.transpose(1, 0, 2)).astype(dtype(facts["input"]))}
    if facts["state_input"]:
        shape = [d if isinstance(d, int) and d > 0 else batch for d in feeds_meta[facts["state_input"]].shape]
        feeds[facts["state_input"]] = np.zeros(shape, dtype=dtype(facts["state_input"]))
    try:
        got = sess.run([facts["output"]], feeds)[0]
    except Exception as e:
        _fail(f"{name}: onnxruntime failed to run the model ({str(e).splitlines()[0][:200]})")
    with np.errstate(over="ignore"):  # huge weights saturate the sigmoid; that is not an error
        want, _ = graph.run(x.astype(np.float64))
    if not bf and want.ndim == 3:
        want = want.transpose(1, 0, 2)
    if got.size != want.size:
        _fail(f"{name}: output {facts['output']!r} has shape {got.shape}, expected {want.shape}")
    got = got.reshape(want.shape).astype(np.float64)
    err = float(np.max(np.abs(got - want) / (1.0 + np.abs(want))))
    if not err <= VERIFY_TOL:
        _fail(
            f"{name}: the graph around the {facts['operator']} computes something else than the recognised "
            f"cell and readout (max relative difference {err:.3g} on random inputs); {SUPPORTED}"
        )
    return err


def import_onnx(path: str | Path) -> FloatGraph:
    """An ONNX file -> FloatGraph (task None), verified against onnxruntime."""
    path = Path(path)
    model = load_model(path)
    try:
        graph, facts = analyse(model, str(path))
    except UserError as e:  # the IR's own checks (e.g. a size limit) do not know the file
        if str(path) in str(e):
            raise
        raise UserError(f"{path}: {e}") from None
    err = _verify(model, graph, facts, str(path))
    provenance = {
        "source": str(path),
        "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "importer": "stapes import-onnx",
        "verify_max_rel_diff": err,
        **facts,
    }
    return FloatGraph(graph.cell, graph.readout, None, provenance)


def from_torch_rnn(rnn, linear=None, readout_mode: str = "per_step", readout_activation: str = "linear") -> FloatGraph:
    """A `torch.nn.RNN` (tanh, one layer, forward) and an optional `torch.nn.Linear` readout ->
    FloatGraph (task None). Without `linear`, the readout is the identity (outputs = states)."""
    import torch

    if not isinstance(rnn, torch.nn.RNN):
        _fail(f"from_torch_rnn: expected a torch.nn.RNN, got {type(rnn).__name__}; {SUPPORTED}")
    if rnn.nonlinearity != "tanh":
        _fail(f"torch.nn.RNN nonlinearity {rnn.nonlinearity!r} is not supported (only 'tanh')")
    if rnn.num_layers != 1 or rnn.bidirectional:
        _fail(
            f"torch.nn.RNN with num_layers={rnn.num_layers}, bidirectional={rnn.bidirectional} is not "
            "supported (one forward layer)"
        )
    arr = lambda t: t.detach().to(torch.float64).cpu().numpy()  # noqa: E731
    n = rnn.hidden_size
    b = arr(rnn.bias_ih_l0) + arr(rnn.bias_hh_l0) if rnn.bias else np.zeros(n)
    cell = RNNCell(arr(rnn.weight_ih_l0), arr(rnn.weight_hh_l0), b)
    if linear is None:
        readout = Readout(np.eye(n), np.zeros(n), readout_mode, readout_activation)
    else:
        if not isinstance(linear, torch.nn.Linear) or linear.in_features != n:
            _fail(f"from_torch_rnn: the readout must be a torch.nn.Linear with in_features={n}")
        lb = arr(linear.bias) if linear.bias is not None else np.zeros(linear.out_features)
        readout = Readout(arr(linear.weight), lb, readout_mode, readout_activation)
    return FloatGraph(
        cell,
        readout,
        None,
        {
            "source": "torch.nn.RNN",
            "importer": "stapes.frontend.onnx_import.from_torch_rnn",
            "torch": torch.__version__,
        },
    )


def write_model_folder(graph: FloatGraph, out: str | Path) -> Path:
    """Save `graph` as a model folder, atomically."""
    with atomic_dir(out) as tmp:
        graph.save(tmp)
    return Path(out)
