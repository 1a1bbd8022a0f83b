"""The generated C against the integer reference, bit for bit, with op counts and task metrics.

One code path for `stapes verify`, the demo and :func:`stapes.verify`: build the model's C on the
host, run it on a batch of inputs, run the reference on the same int16 inputs, and compare every
state and output exactly. Op counts from the C counters, the reference and the analytic formula
must agree too. When the graph carries a task, the task metric of the float model, the low-rank
float model and the fixed-point C are reported side by side (bit-exact is not the same as accurate).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stapes.errors import UserError
from stapes.fixed.compare import first_mismatch
from stapes.fixed.quantize import dequantize_output, quantize_input
from stapes.fixed.reference import OP_KINDS, analytic_ops, run_reference
from stapes.host import build, run_c
from stapes.ir.float_graph import FloatGraph, LowRank, is_model_folder
from stapes.ir.qgraph import STATE_FRAC, QGraph
from stapes.tasks.evaluate import eval_batch, metrics_from_outputs

# The metric column of the dense float model as compression recorded it (on its own data).
RECORDED_DENSE = "dense float (recorded)"
# A state further than this from the float model's (LSB of Q15, on the same inputs) is worth a
# warning: 1/64 of full scale, well above rounding noise and below a visible change of behaviour.
FLOAT_ERROR_WARN_LSB = 512


@dataclass(frozen=True)
class FloatError:
    """How far the fixed point is from its float model on the same (quantized) inputs: bit-exact
    with the reference is not the same as close to the float model. States in LSB of Q15,
    outputs in LSB of the readout's output format."""

    state_max_lsb: float
    state_rms_lsb: float
    output_max_lsb: float
    output_rms_lsb: float

    @property
    def large(self) -> bool:
        return self.state_max_lsb > FLOAT_ERROR_WARN_LSB

    def lines(self, output_fmt: str) -> list[str]:
        text = [
            f"float vs fixed (same inputs): state max {self.state_max_lsb:.0f} / RMS {self.state_rms_lsb:.1f} "
            f"LSB of Q15, output max {self.output_max_lsb:.0f} / RMS {self.output_rms_lsb:.1f} LSB of {output_fmt}"
        ]
        if self.large:
            text.append(
                f"warning: a state differs from the float model by {self.state_max_lsb:.0f} LSB "
                f"(> {FLOAT_ERROR_WARN_LSB}); check the task metric above before deploying"
            )
        return text


@dataclass(frozen=True)
class VerifyResult:
    """What one verification measured. ``mismatches`` counts unequal values (states and outputs);
    ``first_mismatch`` names the first one (step, index, C value, reference value) or is None."""

    mismatches: int
    first_mismatch: str | None
    values_compared: int
    ops_c: dict
    ops_reference: dict
    ops_analytic: dict
    ops_per_frame: dict
    metric_name: str | None = None
    metrics: dict = field(default_factory=dict)
    float_error: FloatError | None = None
    lines: tuple[str, ...] = ()

    @property
    def ops_agree(self) -> bool:
        return self.ops_c == self.ops_reference == self.ops_analytic

    @property
    def ok(self) -> bool:
        return self.mismatches == 0 and self.ops_agree

    def failure(self) -> str | None:
        """Why the check failed (one line), or None when it passed."""
        if self.mismatches:
            return self.first_mismatch
        if not self.ops_agree:
            return f"op counts differ: C {self.ops_c}, reference {self.ops_reference}, analytic {self.ops_analytic}"
        return None


def verification_inputs(q: QGraph, x=None, sequences: int = 512, steps: int = 100, seed: int = 1234):
    """(task, batch, int16 inputs): the given float inputs `x` (B, T, I); else the task's test
    split; else seeded uniform inputs within the calibrated input range."""
    if sequences < 1 or steps < 1:
        raise UserError(f"sequences and steps must be >= 1, got {sequences} and {steps}")
    if x is not None:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 3 or x.shape[2] != q.input_size:
            raise UserError(f"inputs must have shape (batch, steps, {q.input_size}), got {x.shape}")
        return None, None, quantize_input(q, x)
    if q.task:
        task, batch = eval_batch(q.task, "test", sequences, seed)
        return task, batch, quantize_input(q, batch.x)
    bound = float(q.provenance.get("ranges", {}).get("input_max", 1.0))
    limit = min(bound, 32767 / 2.0**q.input_fmt.frac)
    rng = np.random.default_rng(seed)
    return None, None, quantize_input(q, rng.uniform(-limit, limit, size=(sequences, steps, q.input_size)))


def verify(
    q: QGraph,
    x=None,
    *,
    sequences: int = 512,
    steps: int = 100,
    rank: int | None = None,
    seed: int = 1234,
    float_graph: FloatGraph | None = None,
) -> VerifyResult:
    """Build and run the C of `q`, compare it with the reference, and measure the task metric.

    `x`: float inputs (B, T, I); without them the task's test split (``sequences`` sequences) or
    seeded random inputs (``sequences`` x ``steps``). `rank`: the run-time rank of a low-rank
    model (default: the stored rank). `float_graph`: the float model `q` came from, for the
    float-vs-fixed metric comparison.
    """
    rank = q.check_rank(rank) if rank is not None else None
    task, batch, x_q = verification_inputs(q, x, sequences, steps, seed)
    y, states, ops = run_c(q, x_q, rank=rank, module=build(q, count_ops=True))
    ref = run_reference(q, x_q, rank=rank)
    bsz, steps, _ = x_q.shape
    bad = int((states != ref.states).sum() + (y != ref.outputs).sum())
    analytic = analytic_ops(q, steps, bsz, rank)
    per_frame = {k: ops[k] / (bsz * steps) for k in OP_KINDS}
    compared = int(states.size + y.size)
    lines = [
        f"{bsz} sequences x {steps} steps, {compared} values compared "
        f"({q.kind}, N={q.hidden_size}, rank {rank or q.rank or 'dense'}, int{q.weight_bits} weights)",
        f"mismatches: {bad}",
        "ops per frame: " + "  ".join(f"{k} {_count(v)}" for k, v in per_frame.items()),
        f"op counts: C counters {'=' if ops == ref.ops else '!='} reference "
        f"{'=' if ref.ops == analytic else '!='} analytic",
    ]
    metrics = task_metrics(q, task, batch, y, float_graph, rank) if task is not None else {}
    if metrics:
        same = {k: v for k, v in metrics.items() if k != RECORDED_DENSE}
        lines.append(
            f"{task.primary_metric} on {bsz} test sequences: " + "  |  ".join(f"{k} {v:.4f}" for k, v in same.items())
        )
        if RECORDED_DENSE in metrics:
            lines.append(
                f"{task.primary_metric} of the dense float model (recorded at compression): {metrics[RECORDED_DENSE]:.4f}"
            )
    error = None
    if float_graph is not None:
        error = float_error(q, at_rank(float_graph, rank), x_q, states, y)
        lines += error.lines(q.readout.out_fmt.describe())
    first = first_mismatch("states", states, ref.states) or first_mismatch("outputs", y, ref.outputs)
    return VerifyResult(
        mismatches=bad,
        first_mismatch=first,
        values_compared=compared,
        ops_c=ops,
        ops_reference=ref.ops,
        ops_analytic=analytic,
        ops_per_frame=per_frame,
        metric_name=task.primary_metric if task is not None else None,
        metrics=metrics,
        float_error=error,
        lines=tuple(lines),
    )


def _count(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"


def float_error(q: QGraph, graph: FloatGraph, x_q: np.ndarray, states: np.ndarray, y: np.ndarray) -> FloatError:
    """The fixed-point states and outputs against the float graph run on the dequantized int16
    inputs (so only the arithmetic differs, not the input rounding)."""
    out, h = graph.run(np.ldexp(x_q.astype(np.float64), -int(q.input_fmt.frac)))
    ds = (states.astype(np.float64) - np.ldexp(h, STATE_FRAC)).ravel()
    dy = (y.astype(np.float64) - np.ldexp(out, int(q.readout.out_fmt.frac))).ravel()
    return FloatError(
        float(np.abs(ds).max(initial=0.0)),
        float(np.sqrt(np.mean(ds**2))) if ds.size else 0.0,
        float(np.abs(dy).max(initial=0.0)),
        float(np.sqrt(np.mean(dy**2))) if dy.size else 0.0,
    )


def at_rank(graph: FloatGraph, rank: int | None) -> FloatGraph:
    """`graph` truncated to the run-time rank the C runs (the same prefix of the sigma-sorted
    factors); unchanged without a rank."""
    if rank is None:
        return graph
    cell = dataclasses.replace(
        graph.cell,
        **{k: m.truncate(min(rank, m.rank)) for k, m in graph.cell.recurrent().items() if isinstance(m, LowRank)},
    )
    return graph.replace_cell(cell)


def verify_folder(folder, **kwargs) -> VerifyResult:
    """:func:`verify` of a QModel folder, with the float graph it keeps in ``float/`` (if any)."""
    q = QGraph.load(folder)
    float_dir = Path(folder) / "float"
    graph = FloatGraph.load(float_dir) if is_model_folder(float_dir) else None
    return verify(q, float_graph=graph, **kwargs)


def task_metrics(q: QGraph, task, batch, y, graph: FloatGraph | None, rank: int | None) -> dict:
    """Task metric of the float graph (at the same rank) and of the fixed point; the dense float
    metric too when compression recorded it in the QGraph's provenance."""
    name = task.primary_metric
    cols = {}
    dense = q.provenance.get("metric_dense")
    if dense and dense.get("name") == name:
        cols[RECORDED_DENSE] = dense["value"]
    if graph is not None:
        lowrank = any(isinstance(m, LowRank) for m in graph.cell.recurrent().values())
        graph = at_rank(graph, rank)
        out, _ = graph.run(batch.x)
        cols["low-rank float" if lowrank else "float"] = metrics_from_outputs(task, out, batch)[name]
    cols[f"fixed point int{q.weight_bits}"] = metrics_from_outputs(task, dequantize_output(q, y), batch)[name]
    return cols
