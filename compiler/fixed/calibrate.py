"""Calibration: value ranges of a FloatGraph's inputs and intermediates, from data or analytic.

The quantizer uses the input and output ranges to pick their formats; pre-activations go to the
tables' fixed input formats, the state is Q0.15 by construction and the low-rank z format comes
from the bound Σ|B_kj| (the arithmetic contract, docs/architecture.md). The other ranges are
recorded in the QGraph provenance (e.g. how often a pre-activation saturates the table's range).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from stapes.errors import UserError
from stapes.ir.float_graph import FloatGraph, LowRank, as_real, matvec

# Calibration runs the float graph on every frame: frames x max(hidden, inputs) values at most.
MAX_CALIBRATION_VALUES = 1 << 27
# The largest magnitude an int16 format holds (frac >= -32, stapes.ir.qgraph.QFormat).
RANGE_MAX = 32767 * 2.0**32


@dataclass(frozen=True)
class Ranges:
    source: str  # "data" | "analytic"
    input_max: float  # max |x|
    output_max: float  # max |readout before the activation|
    pre_max: dict = field(default_factory=dict)  # gate -> max |pre-activation|
    z_max: dict = field(default_factory=dict)  # low-rank gate -> max |B h|
    frames: int = 0

    def to_json(self) -> dict:
        return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in asdict(self).items()}


def _gate_mats(graph: FloatGraph) -> dict:
    c = graph.cell
    if graph.kind == "rnn":
        return {"h": (c.w, c.u, c.b)}
    return {"f": (c.w_f, c.u_f, c.b_f), "h": (c.w_h, c.u_h, c.b_h)}


def calibrate(graph: FloatGraph, x: np.ndarray) -> Ranges:
    """Run the float graph on x (B, T, I) and record the max magnitudes the quantizer needs."""
    x = _calibration_array(graph, x)
    with np.errstate(all="ignore"):  # huge weights overflow to Inf: checked below, not warned about
        ranges = _data_ranges(graph, x)
    _check_ranges(graph, ranges, "on the calibration data")
    return ranges


def _calibration_array(graph: FloatGraph, x) -> np.ndarray:
    """The calibration inputs as float64 (B, T, I), or a UserError saying what is wrong with them."""
    arr = as_real("calibration data", x)
    if arr.ndim != 3 or arr.shape[2] != graph.input_size or arr.shape[0] * arr.shape[1] == 0:
        raise UserError(f"calibration data: expected shape (batch, time, {graph.input_size}), got {arr.shape}")
    frames = arr.shape[0] * arr.shape[1]
    if frames * max(graph.hidden_size, graph.input_size) > MAX_CALIBRATION_VALUES:
        raise UserError(
            f"calibration data: {frames} frames is too many for hidden size {graph.hidden_size} "
            f"(at most {MAX_CALIBRATION_VALUES // max(graph.hidden_size, graph.input_size)})"
        )
    x = arr.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise UserError("calibration data: contains NaN or Inf")
    if not np.any(x):
        raise UserError(
            "calibration data: every value is 0, so it says nothing about the input range "
            "(calibrate on real inputs, or quantize without calibration data and an input range)"
        )
    return x


def _check_ranges(graph: FloatGraph, r: Ranges, where: str) -> None:
    """Every range is finite, and the ranges that formats are made from fit an int16 format."""
    values = {"input": r.input_max, "output": r.output_max, **r.pre_max, **r.z_max}
    bad = [k for k, v in values.items() if not np.isfinite(v)]
    if bad:
        raise UserError(f"the range of {bad[0]} overflows float64 {where}: the weights are too large for fixed point")
    formats = {"input": r.input_max, **({"output": r.output_max} if graph.readout.activation == "linear" else {})}
    for name, v in formats.items():
        if v > RANGE_MAX:
            raise UserError(f"the {name} range {v:.3g} {where} is beyond any int16 format (at most {RANGE_MAX:.3g})")


def _data_ranges(graph: FloatGraph, x: np.ndarray) -> Ranges:
    _, states = graph.run(x)
    bsz, steps, n = states.shape
    prev = np.concatenate([np.zeros((bsz, 1, n)), states[:, :-1]], axis=1).reshape(-1, n)
    xs = x.reshape(-1, graph.input_size)
    pre_max, z_max = {}, {}
    mats = _gate_mats(graph)
    h_in = {"h": prev}
    if graph.kind == "mgu":
        w, u, b = mats["f"]
        f = 1.0 / (1.0 + np.exp(-(xs @ w.T + matvec(u, prev) + b)))
        h_in = {"f": prev, "h": f * prev}
    for name, (w, u, b) in mats.items():
        pre = xs @ w.T + matvec(u, h_in[name]) + b
        pre_max[name] = float(np.max(np.abs(pre)))
        if isinstance(u, LowRank):
            z_max[name] = float(np.max(np.abs(h_in[name] @ u.b.T)))
    ro = graph.readout
    out = states.reshape(-1, n) @ ro.w.T + ro.b
    return Ranges("data", float(np.max(np.abs(x))), float(np.max(np.abs(out))), pre_max, z_max, frames=int(bsz * steps))


def analytic_ranges(graph: FloatGraph, input_bound: float) -> Ranges:
    """Worst-case bounds with |x| <= input_bound and |h| <= 1 (no data: e.g. ONNX imports)."""
    if isinstance(input_bound, bool) or not isinstance(input_bound, (int, float, np.integer, np.floating)):
        raise UserError(f"input bound must be a number, got {input_bound!r}")
    if not 0 < input_bound < np.inf:
        raise UserError(f"input bound must be positive and finite, got {input_bound}")
    with np.errstate(all="ignore"):  # huge weights overflow to Inf: checked below, not warned about
        ranges = _analytic(graph, float(input_bound))
    _check_ranges(graph, ranges, f"for |x| <= {input_bound:g}")
    return ranges


def _analytic(graph: FloatGraph, input_bound: float) -> Ranges:
    pre_max, z_max = {}, {}
    for name, (w, u, b) in _gate_mats(graph).items():
        ud = u.dense() if isinstance(u, LowRank) else u
        pre_max[name] = float(np.max(np.abs(w).sum(1) * input_bound + np.abs(ud).sum(1) + np.abs(b)))
        if isinstance(u, LowRank):
            z_max[name] = float(np.max(np.abs(u.b).sum(1)))
    ro = graph.readout
    out = float(np.max(np.abs(ro.w).sum(1) + np.abs(ro.b)))
    return Ranges("analytic", float(input_bound), out, pre_max, z_max)
