"""Quantization: FloatGraph + ranges + policy -> QGraph, every format and shift derived here.

Policy (the arithmetic contract of docs/architecture.md):
* input: one int16 format from the calibrated max |x| (x INPUT_MARGIN headroom) or, without data,
  the assumed bound; the state is Q0.15; pre-activations use the tables' input formats;
* weights int8 or int16 with a per-row frac, the finest that holds the row's largest value,
  then made coarser until the overflow proof holds: Σ_j |q_ij| · 32768 <= 2^31 - 1 (every int16
  input, any summation order). The bits this costs are recorded in the provenance;
* low-rank z = B h in one int16 format from the bound max_k Σ_j |B_kj| (|h| <= 1);
* linear outputs: one int16 format from the calibrated max (x OUTPUT_HEADROOM) capped by the
  analytic bound Σ|V_oj| + |c_o|; sigmoid outputs are Q0.15;
* biases int32 in the pre-activation format; a value that does not fit raises with its name;
* the 32-bit requantisation rule (ir.qgraph.prove_combine32: per row the shifted accumulation bounds
  plus |bias| fit int32) needs no format of its own: a coarser weight format leaves a term's bound
  in the pre-activation format unchanged, so a row that breaks it (a pre-activation range beyond
  about ±2^18) is refused by the IR with its gate and row named.
"""

from __future__ import annotations

import numpy as np

from stapes._version import __version__
from stapes.errors import UserError
from stapes.fixed import fixedpoint as fx
from stapes.fixed.calibrate import Ranges, analytic_ranges, calibrate
from stapes.ir.float_graph import FloatGraph, LowRank
from stapes.ir.qgraph import STATE_FRAC, QFormat, QGate, QGraph, QLowRank, QReadout, QTensor

WEIGHT_POLICIES = {"int8": 8, "int16": 16}
INPUT_MARGIN = 1.25
OUTPUT_HEADROOM = 2.0
MAX_ACT_FRAC = 30  # finest activation format we pick (tiny ranges)
DEFAULT_INPUT_BOUND = 1.0  # assumed |x| without calibration data


def _to_user_error(fn, *args):
    try:
        return fn(*args)
    except ValueError as e:
        raise UserError(str(e)) from None


def quantize_rows(name: str, m: np.ndarray, bits: int, frac_max: int, frac_min: int, notes: dict) -> QTensor:
    """Per-row formats for a weight matrix: finest that fits, capped at frac_max (the largest
    shift the runtime takes), coarsened until the overflow proof holds. frac_min is the coarsest
    the shifts allow; a row needing less raises (its values are too large for this policy)."""
    m = np.asarray(m, dtype=np.float64)
    fracs = np.minimum(fx.frac_to_fit(np.abs(m).max(axis=1) if m.shape[1] else np.zeros(m.shape[0]), bits), frac_max)
    lost = 0
    rows = np.zeros(m.shape, dtype=np.int64)
    for i in range(m.shape[0]):
        while True:
            q = fx.quantize_array(name, m[i], fracs[i], bits) if fracs[i] >= frac_min else None
            if q is None:
                raise UserError(
                    f"{name}: row {i} needs a format coarser than frac {frac_min} "
                    f"(max |w| = {np.abs(m[i]).max():.6g}); the weights are too large for int{bits}"
                )
            if np.abs(q).sum() * (1 << 15) <= fx.INT32_MAX:
                break
            fracs[i] -= 1
            lost += 1
        rows[i] = q
    if lost:
        notes[name] = f"{lost} row-bits given up for the int32 overflow proof"
    return QTensor(name, rows, QFormat(bits, tuple(int(f) for f in fracs)))


def _bias(name: str, b: np.ndarray, frac: int) -> QTensor:
    return QTensor(name, _to_user_error(fx.quantize_array, name, b, frac, 32), QFormat(32, frac))


def _act_frac(bound: float) -> int:
    return int(min(fx.frac_to_fit(bound, 16)[0], MAX_ACT_FRAC))


def _gate(name: str, prefix: str, w, u, b, activation: str, in_frac: int, bits: int, notes: dict) -> QGate:
    pre = fx.TABLE_INPUT_FRAC[activation]
    qw = quantize_rows(
        f"{prefix}.w_{name}" if prefix == "mgu" else f"{prefix}.w",
        w,
        bits,
        pre + fx.SHIFT_MAX - in_frac,
        pre + fx.SHIFT_MIN - in_frac,
        notes,
    )
    uname = f"{prefix}.u_{name}" if prefix == "mgu" else f"{prefix}.u"
    if isinstance(u, LowRank):
        z_frac = _act_frac(float(np.abs(u.b).sum(axis=1).max()))
        qb = quantize_rows(
            f"{uname}.b", u.b, bits, z_frac - STATE_FRAC + fx.SHIFT_MAX, z_frac - STATE_FRAC + fx.SHIFT_MIN, notes
        )
        qa = quantize_rows(f"{uname}.a", u.a, bits, pre + fx.SHIFT_MAX - z_frac, pre + fx.SHIFT_MIN - z_frac, notes)
        qu = QLowRank(qb, qa, QFormat(16, z_frac), qb.row_fracs() + STATE_FRAC - z_frac, u.sigma)
        rec_frac = qa.row_fracs() + z_frac
    else:
        qu = quantize_rows(uname, u, bits, pre + fx.SHIFT_MAX - STATE_FRAC, pre + fx.SHIFT_MIN - STATE_FRAC, notes)
        rec_frac = qu.row_fracs() + STATE_FRAC
    bname = f"{prefix}.b_{name}" if prefix == "mgu" else f"{prefix}.b"
    return QGate(name, qw, qu, _bias(bname, b, pre), qw.row_fracs() + in_frac - pre, rec_frac - pre, activation)


def quantize_graph(
    graph: FloatGraph,
    calib_x: np.ndarray | None = None,
    weights: str = "int16",
    input_bound: float | None = None,
    ranges: Ranges | None = None,
    provenance: dict | None = None,
) -> QGraph:
    """FloatGraph -> QGraph. Ranges come from `ranges`, else `calib_x` (B, T, I) float inputs,
    else the analytic worst case with |x| <= input_bound (default 1.0), said so in the provenance."""
    if weights not in WEIGHT_POLICIES:
        raise UserError(f"weights must be one of {sorted(WEIGHT_POLICIES)}, got {weights!r}")
    bits = WEIGHT_POLICIES[weights]
    if ranges is None:
        if calib_x is not None:
            ranges = calibrate(graph, calib_x)
        else:
            ranges = analytic_ranges(graph, DEFAULT_INPUT_BOUND if input_bound is None else input_bound)
    in_bound = ranges.input_max * (INPUT_MARGIN if ranges.source == "data" else 1.0)
    in_frac = _act_frac(max(in_bound, 1e-9))
    notes: dict[str, str] = {}
    c = graph.cell
    if graph.kind == "rnn":
        gates = {"h": _gate("h", "rnn", c.w, c.u, c.b, "tanh", in_frac, bits, notes)}
    else:
        gates = {
            "f": _gate("f", "mgu", c.w_f, c.u_f, c.b_f, "sigmoid", in_frac, bits, notes),
            "h": _gate("h", "mgu", c.w_h, c.u_h, c.b_h, "tanh", in_frac, bits, notes),
        }
    ro = graph.readout
    if ro.activation == "sigmoid":
        out_fmt, pre = QFormat(16, STATE_FRAC), fx.TABLE_INPUT_FRAC["sigmoid"]
    else:
        analytic = float(np.max(np.abs(ro.w).sum(axis=1) + np.abs(ro.b)))
        bound = analytic if ranges.source != "data" else min(analytic, ranges.output_max * OUTPUT_HEADROOM)
        pre = _act_frac(max(bound, 1e-9))
        out_fmt = QFormat(16, pre)
    qv = quantize_rows("readout.w", ro.w, bits, pre + fx.SHIFT_MAX - STATE_FRAC, pre + fx.SHIFT_MIN - STATE_FRAC, notes)
    readout = QReadout(
        qv, _bias("readout.b", ro.b, pre), qv.row_fracs() + STATE_FRAC - pre, ro.mode, ro.activation, out_fmt
    )
    prov = {
        "generator": f"stapes {__version__}",
        "weights": weights,
        "ranges": ranges.to_json(),
        "ranges_note": (
            "calibrated on data"
            if ranges.source == "data"
            else f"analytic worst case (no calibration data): |x| <= {ranges.input_max:g}, |h| <= 1"
        ),
        "overflow_proof": notes or "every accumulation fits int32 at the finest formats",
        "float_provenance": graph.provenance,
        **(provenance or {}),
    }
    return QGraph(graph.kind, QFormat(16, in_frac), gates, readout, graph.task, prov)


# ---- inputs and outputs ------------------------------------------------------------------
def quantize_input(qgraph: QGraph, x: np.ndarray) -> np.ndarray:
    """Float inputs (B, T, I) -> int16 at the graph's input format; raises (naming "input")
    when a value is outside the format's range: never clipped silently."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[2] != qgraph.input_size:
        raise UserError(f"input: expected shape (batch, time, {qgraph.input_size}), got {x.shape}")
    return _to_user_error(fx.quantize_array, "input", x, qgraph.input_fmt.frac, 16).astype(np.int16)


def dequantize_output(qgraph: QGraph, y: np.ndarray) -> np.ndarray:
    """int16 outputs -> float (the readout's output format)."""
    return np.ldexp(np.asarray(y, dtype=np.float64), -int(qgraph.readout.out_fmt.frac))


def dequantize_state(states: np.ndarray) -> np.ndarray:
    return np.ldexp(np.asarray(states, dtype=np.float64), -STATE_FRAC)
