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
from stapes.ir.float_graph import FloatGraph, LowRank, matvec


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
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[2] != graph.input_size or x.shape[0] * x.shape[1] == 0:
        raise UserError(f"calibration data: expected shape (batch, time, {graph.input_size}), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise UserError("calibration data: contains NaN or Inf")
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
    if not input_bound > 0:
        raise UserError(f"input bound must be positive, got {input_bound}")
    pre_max, z_max = {}, {}
    for name, (w, u, b) in _gate_mats(graph).items():
        ud = u.dense() if isinstance(u, LowRank) else u
        pre_max[name] = float(np.max(np.abs(w).sum(1) * input_bound + np.abs(ud).sum(1) + np.abs(b)))
        if isinstance(u, LowRank):
            z_max[name] = float(np.max(np.abs(u.b).sum(1)))
    ro = graph.readout
    out = float(np.max(np.abs(ro.w).sum(1) + np.abs(ro.b)))
    return Ranges("analytic", float(input_bound), out, pre_max, z_max)
