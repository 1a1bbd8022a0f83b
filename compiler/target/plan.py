"""Pick the deployment (rank per recurrent matrix, weight bits) that fits a board and keeps the
most accuracy.

Every candidate is first costed by the budget (no build, no run); only those within the flash,
RAM and time limits are then measured: the candidate is compressed (truncated SVD), quantized
(calibrated on the task's data) and run through the bit-exact integer reference on the task's
validation split, so the accuracy is that of the very integers the board would run. The winner
is the most accurate; within `tie` of it, the cheapest in cycles.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass

import numpy as np

from stapes.errors import UserError
from stapes.ir.float_graph import FloatGraph, LowRank, dense
from stapes.ir.lowrank import svd_factors
from stapes.target.budget import ModelShape, budget, shape_of_graph
from stapes.target.profile import Board


def parse_size(text: str) -> int:
    """'32k' -> 32768, '1M' -> 1048576, '4096' -> 4096."""
    t = str(text).strip().lower()
    mult = {"k": 1024, "m": 1024 * 1024}.get(t[-1:], 1)
    num = t[:-1] if t[-1:] in "km" else t
    try:
        value = float(num) * mult
    except ValueError:
        raise UserError(f"bad size {text!r}: use bytes, or a number with k or M (e.g. 32k)") from None
    if value <= 0:
        raise UserError(f"size must be positive, got {text!r}")
    return int(value)


def rank_grid(n: int) -> list[int | None]:
    """Dense, then N/2, N/4, ... down to 2 (None = keep dense; rank >= N/2 saves nothing)."""
    out: list[int | None] = [None]
    r = n // 2
    while r >= 2:
        out.append(r)
        r //= 2
    return out


@dataclass
class Candidate:
    ranks: dict
    weight_bits: int
    flash: int
    ram: int
    share: float
    cycles: float
    macs: int
    fits: bool
    why_not: str
    metric: float | None = None


def candidates(
    graph: FloatGraph,
    board: Board,
    frame_ms: float,
    max_flash: int,
    max_ram: int,
    max_share: float = 1.0,
    bits=(8, 16),
    clock_hz: int | None = None,
) -> list[Candidate]:
    """Every (rank per matrix, bits) combination with its budget and whether it fits."""
    base = shape_of_graph(graph)
    names = base.matrices
    grids = [rank_grid(base.hidden_size)] * len(names)
    combos = [[]]
    for grid in grids:
        combos = [c + [r] for c in combos for r in grid]
    out = []
    for b in bits:
        for combo in combos:
            shape = ModelShape(
                base.cell,
                base.input_size,
                base.hidden_size,
                base.output_size,
                dict(zip(names, combo)),
                b,
                base.readout_mode,
                base.readout_activation,
            )
            est = budget(shape, board, frame_ms, clock_hz)
            flash, ram = est.flash["total"], est.ram["total"]
            why = []
            if flash > max_flash:
                why.append(f"flash {flash} > {max_flash}")
            if ram > max_ram:
                why.append(f"RAM {ram} > {max_ram}")
            if est.core_share > max_share:
                why.append(f"core {100 * est.core_share:.1f} % > {100 * max_share:.0f} %")
            out.append(
                Candidate(
                    shape.ranks, b, flash, ram, est.core_share, est.cycles, est.counts["macs"], not why, "; ".join(why)
                )
            )
    return out


def realize(graph: FloatGraph, ranks: dict) -> FloatGraph:
    """The graph with each recurrent matrix truncated to its rank (None keeps it dense)."""
    fields = {k: getattr(graph.cell, k) for k in graph.cell.__dataclass_fields__}
    for name, m in graph.cell.recurrent().items():
        r = ranks.get(name)
        fields[name] = dense(m) if r is None else svd_factors(dense(m), r)
    return graph.replace_cell(type(graph.cell)(**fields))


def measure_metric(graph: FloatGraph, ranks: dict, bits: int, data) -> float:
    """The task metric of the integer model (reference interpreter) for this configuration."""
    from stapes.fixed.quantize import dequantize_output, quantize_graph, quantize_input
    from stapes.fixed.reference import run_reference

    task, calib, batch = data
    q = quantize_graph(realize(graph, ranks), calib_x=calib, weights=f"int{bits}")
    res = run_reference(q, quantize_input(q, batch.x))
    return float(task.metrics(dequantize_output(q, res.outputs), batch)[task.primary_metric])


def _energy_kept(graph: FloatGraph, ranks: dict) -> float:
    """Share of the recurrent matrices' squared singular values kept (no data needed)."""
    kept = total = 0.0
    for name, m in graph.cell.recurrent().items():
        s = np.linalg.svd(dense(m), compute_uv=False) ** 2
        r = ranks.get(name)
        kept += s.sum() if r is None else s[:r].sum()
        total += s.sum()
    return kept / total if total > 0 else 1.0


@dataclass
class Plan:
    board: str
    frame_ms: float
    limits: dict
    metric_name: str
    baseline: float | None
    chosen: Candidate | None
    reason: str
    table: list

    def to_json(self) -> dict:
        return asdict(self)


def make_plan(
    graph: FloatGraph,
    board: Board,
    frame_ms: float,
    max_flash: int,
    max_ram: int,
    max_share: float = 1.0,
    tie: float = 0.005,
    n_eval: int = 256,
    seed: int = 4321,
    clock_hz: int | None = None,
    progress: bool = False,
) -> Plan:
    if any(isinstance(m, LowRank) for m in graph.cell.recurrent().values()):
        graph = realize(graph, {})  # plan from the full matrices
    cands = candidates(graph, board, frame_ms, max_flash, max_ram, max_share, clock_hz=clock_hz)
    fitting = [c for c in cands if c.fits]
    limits = {"max_flash": max_flash, "max_ram": max_ram, "max_core_share": max_share}
    if graph.task is not None:
        from stapes.tasks import make_task

        task = make_task(**graph.task)
        batch = task.sample("val", n_eval, seed)
        calib = np.concatenate([task.sample("train", n_eval, seed + 1).x, batch.x], axis=0)
        data = (task, calib, batch)
        metric_name = f"{task.primary_metric} (validation split, {n_eval} sequences, integer reference)"
        baseline = measure_metric(graph, {k: None for k in graph.cell.recurrent()}, 16, data)
        from tqdm import tqdm

        for c in tqdm(fitting, desc="plan", unit="config", disable=not progress, file=sys.stderr, leave=False):
            c.metric = measure_metric(graph, c.ranks, c.weight_bits, data)
    else:
        metric_name, baseline = "energy_kept (no task: singular-value energy, weight bits ignored)", None
        for c in fitting:
            c.metric = _energy_kept(graph, c.ranks) - (1e-6 if c.weight_bits == 8 else 0.0)
    if not fitting:
        smallest = min(cands, key=lambda c: (c.flash, c.cycles))
        return Plan(
            board.name,
            frame_ms,
            limits,
            metric_name,
            baseline,
            None,
            f"nothing fits; the smallest configuration ({_describe(smallest)}) needs: {smallest.why_not}",
            [asdict(c) for c in cands],
        )
    best = max(c.metric for c in fitting)
    near = [c for c in fitting if c.metric >= best - tie]
    chosen = min(near, key=lambda c: (c.cycles, c.flash))
    excluded = len(cands) - len(fitting)
    reason = (
        f"{len(fitting)} of {len(cands)} configurations fit ({excluded} exceed flash, RAM or time); "
        f"the best {metric_name.split()[0]} among them is {best:.4f}"
        + (f" (uncompressed int16: {baseline:.4f})" if baseline is not None else "")
        + f"; {_describe(chosen)} reaches {chosen.metric:.4f}, and is the cheapest within {tie:g} "
        f"of the best: {chosen.macs} MACs/frame, {100 * chosen.share:.2f} % of the core, "
        f"flash {chosen.flash} B, RAM {chosen.ram} B"
    )
    return Plan(board.name, frame_ms, limits, metric_name, baseline, chosen, reason, [asdict(c) for c in cands])


def _describe(c: Candidate) -> str:
    ranks = ", ".join(f"{k} {'dense' if r is None else f'rank {r}'}" for k, r in c.ranks.items())
    return f"{ranks}, int{c.weight_bits} weights"


def format_plan(p: Plan) -> str:
    lines = [
        f"plan for {p.board}, one frame every {p.frame_ms:g} ms; limits: flash {p.limits['max_flash']} B, "
        f"RAM {p.limits['max_ram']} B, core {100 * p.limits['max_core_share']:.0f} %",
        "",
        f"{'configuration':<40}{'flash':>8}{'RAM':>7}{'core %':>8}{'MACs':>7}  {p.metric_name.split()[0][:12]:>12}  verdict",
    ]
    for row in sorted(p.table, key=lambda r: (not r["fits"], -(r["metric"] or 0.0), r["cycles"])):
        c = Candidate(**row)
        metric = f"{c.metric:.4f}" if c.metric is not None else "-"
        lines.append(
            f"{_describe(c):<40}{c.flash:>8}{c.ram:>7}{100 * c.share:>8.2f}{c.macs:>7}  {metric:>12}  "
            f"{'fits' if c.fits else c.why_not}"
        )
    lines += [
        f"metric: {p.metric_name}",
        "",
        ("chosen: " + _describe(p.chosen)) if p.chosen else "chosen: none",
        f"why: {p.reason}",
    ]
    return "\n".join(lines)
