"""`stapes verify QMODEL [--sequences K]`: the generated C against the reference, bit for bit."""

from __future__ import annotations

NAME = "verify"
HELP = "build the generated C, run it against the integer reference, count mismatches and ops"
DESCRIPTION = (HELP + ". Prints 'mismatches: 0' (exit 0) or the first mismatch (exit 1), op counts "
               "per frame (C counters, reference, analytic), and when the graph has a task its metric "
               "for the float / low-rank float / fixed-point model side by side. Without a task the "
               "inputs are seeded random values in the calibrated input range.")


def add_arguments(p) -> None:
    p.add_argument("qmodel", metavar="QMODEL", help="QModel folder (qgraph.json + qgraph.npz)")
    p.add_argument("--sequences", type=int, default=512, help="sequences to run (default 512)")
    p.add_argument("--steps", type=int, default=100, help="steps per random sequence without a task (default 100)")
    p.add_argument("--rank", type=int, default=None, help="run-time rank (low-rank models; default: stored rank)")
    p.add_argument("--seed", type=int, default=1234, help="seed of the test sample (default 1234)")


def _inputs(q, sequences: int, steps: int, seed: int):
    """(task, batch, int16 x_q): the task's test split, or seeded uniform inputs in the input range."""
    import numpy as np

    from stapes.fixed.quantize import quantize_input

    if q.task:
        from stapes.tasks.evaluate import eval_batch

        task, batch = eval_batch(q.task, "test", sequences, seed)
        return task, batch, quantize_input(q, batch.x)
    bound = float(q.provenance.get("ranges", {}).get("input_max", 1.0))
    limit = min(bound, 32767 / 2.0 ** q.input_fmt.frac)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-limit, limit, size=(sequences, steps, q.input_size))
    return None, None, quantize_input(q, x)


def verify_qmodel(folder, sequences: int = 512, steps: int = 100, rank: int | None = None,
                  seed: int = 1234) -> dict:
    """Build and run the C, compare with the reference. Returns a dict with "lines" (the report),
    "mismatches", "first_mismatch" (str or None), "ops_ok", "ops_per_frame", "metrics"."""
    from pathlib import Path

    from stapes.errors import UserError
    from stapes.host import build, first_mismatch, run_c
    from stapes.ir.qgraph import QGraph
    from stapes.fixed.reference import OP_KINDS, analytic_ops, run_reference

    if sequences < 1 or steps < 1:
        raise UserError("--sequences and --steps must be >= 1")
    q = QGraph.load(folder)
    rank = q.check_rank(rank) if rank is not None else None
    task, batch, x_q = _inputs(q, sequences, steps, seed)
    y, states, ops = run_c(q, x_q, rank=rank, module=build(q, count_ops=True))
    ref = run_reference(q, x_q, rank=rank)
    bsz, steps, _ = x_q.shape
    bad = int((states != ref.states).sum() + (y != ref.outputs).sum())
    analytic = analytic_ops(q, steps, bsz, rank)
    per_frame = {k: ops[k] / (bsz * steps) for k in OP_KINDS}
    lines = [f"{bsz} sequences x {steps} steps, {states.size + y.size} values compared "
             f"({q.kind}, N={q.hidden_size}, rank {rank or q.rank or 'dense'}, int{q.weight_bits} weights)",
             f"mismatches: {bad}",
             "ops per frame: " + "  ".join(f"{k} {v:.1f}" for k, v in per_frame.items()),
             f"op counts: C counters {'=' if ops == ref.ops else '!='} reference "
             f"{'=' if ref.ops == analytic else '!='} analytic"]
    metrics = _metrics(q, task, batch, y, Path(folder), rank) if task is not None else {}
    if metrics:
        lines.append(f"{task.primary_metric}: " + "  |  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    first = first_mismatch("states", states, ref.states) or first_mismatch("outputs", y, ref.outputs)
    return {"lines": lines, "mismatches": bad, "first_mismatch": first, "ops_ok": ops == ref.ops == analytic,
            "ops": (ops, ref.ops, analytic), "ops_per_frame": per_frame, "metrics": metrics,
            "metric_name": task.primary_metric if task is not None else None}


def _metrics(q, task, batch, y, folder, rank) -> dict:
    """Task metric of the float graph kept in the QModel folder (at the same rank) and of the
    fixed point; the dense float metric too when compress.json recorded it."""
    from stapes.tasks.evaluate import metrics_from_outputs
    from stapes.ir.float_graph import FloatGraph, LowRank, is_model_folder
    from stapes.fixed.quantize import dequantize_output

    name = task.primary_metric
    cols = {}
    dense = q.provenance.get("metric_dense")
    if dense and dense.get("name") == name:
        cols["float (dense, compress.json)"] = dense["value"]
    if is_model_folder(folder / "float"):
        g = FloatGraph.load(folder / "float")
        lowrank = any(isinstance(m, LowRank) for m in g.cell.recurrent().values())
        if rank is not None:   # the same prefix of the sigma-sorted factors the C runs
            cell = g.cell
            fields = {k: getattr(cell, k) for k in cell.__dataclass_fields__}
            fields.update({k: m.truncate(min(rank, m.rank)) for k, m in cell.recurrent().items()
                           if isinstance(m, LowRank)})
            g = g.replace_cell(type(cell)(**fields))
        out, _ = g.run(batch.x)
        cols["low-rank float" if lowrank else "float"] = metrics_from_outputs(task, out, batch)[name]
    cols[f"fixed point int{q.weight_bits}"] = metrics_from_outputs(task, dequantize_output(q, y), batch)[name]
    return cols


def run(args) -> int:
    from stapes.errors import CheckFailed

    result = verify_qmodel(args.qmodel, args.sequences, args.steps, args.rank, args.seed)
    for line in result["lines"]:
        print(line if line.startswith("mismatches") else f"verify: {line}")
    if result["mismatches"]:
        raise CheckFailed(result["first_mismatch"])
    if not result["ops_ok"]:
        c, ref, analytic = result["ops"]
        raise CheckFailed(f"op counts differ: C {c}, reference {ref}, analytic {analytic}")
    return 0


def stage_fixed_point(ctx) -> None:
    """`stapes demo` stage: quantize (int16, task calibration) -> emit -> build -> verify the
    compressed model (or the trained one when no compression stage ran)."""
    from stapes.emit.model_c import emit, summary
    from stapes.errors import CheckFailed
    from stapes.ir.float_graph import FloatGraph
    from stapes.cli.commands.quantize import quantize_folder

    source = ctx.artifacts.get("compressed", ctx.artifacts["model"])
    graph = FloatGraph.load(source)
    qdir = ctx.stage_dir("qmodel")
    ctx.log("quantizing (int16 weights), emitting C, building it and comparing with the reference")
    q = quantize_folder(graph, source, qdir, weights="int16", calibration=None, sequences=256, seed=0)
    cdir = ctx.stage_dir("c")
    for fname, text in emit(q, "model").items():
        (cdir / fname).write_text(text)
    result = verify_qmodel(qdir, sequences=256)
    ctx.artifacts["qmodel"] = qdir
    s = summary(q)
    ctx.summary["fixed_point"] = {"mismatches": result["mismatches"], "ops_per_frame": result["ops_per_frame"],
                                  "metrics": result["metrics"], "summary": s}
    if result["mismatches"] or not result["ops_ok"]:
        raise CheckFailed(result["first_mismatch"] or "op counts differ between C, reference and formula")
    ctx.section("fixed point (quantize -> emit -> verify)", [
        f"QGraph: input {q.input_fmt.describe()}, output {q.readout.out_fmt.describe()}, "
        f"int{q.weight_bits} weights, {s['macs_per_frame']} MACs/frame (all-dense {s['macs_per_frame_dense']})",
        f"C: {s['weight_bytes']} B weights + {s['table_bytes']} B tables, state {s['state_bytes']} B, "
        f"scratch {s['scratch_bytes']} B -> {ctx.final_path(cdir)}",
        *result["lines"],
    ])
