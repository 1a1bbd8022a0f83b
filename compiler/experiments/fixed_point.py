"""The fixed-point rows (R7) and the on-the-fly rank (OTF) call the quantizer (`stapes.fixed.quantize`),
its bit-exact integer reference (`stapes.fixed.reference`) and the generated C (compiled by the cffi
host harness `stapes.host`, with op counters) through this one adapter, so the suite depends on the
fixed-point API in one place only."""

from __future__ import annotations

CALIBRATION_SEED = 99


def _quantized_run(graph, bits: int, n: int, rank: int | None) -> dict:
    from stapes.fixed.quantize import dequantize_output, quantize_graph, quantize_input
    from stapes.fixed.reference import run_reference
    from stapes.tasks.evaluate import eval_batch, metrics_from_outputs

    task, batch = eval_batch(graph.task, "test", n)
    calib = task.sample("val", n, seed=CALIBRATION_SEED)  # ranges from validation data, never test
    q = quantize_graph(graph, calib_x=calib.x, weights=f"int{bits}")
    result = run_reference(q, quantize_input(q, batch.x), rank=rank)
    outputs = dequantize_output(q, result.outputs)
    frames = batch.x.shape[0] * batch.x.shape[1]
    return {
        "metric_name": task.primary_metric,
        "metric": metrics_from_outputs(task, outputs, batch)[task.primary_metric],
        "macs": result.ops["mac"] / frames,
    }


def fixed_point_metric(graph, bits: int, n: int) -> float:
    """The task metric of `graph` quantized with int`bits` weights, run by the bit-exact reference."""
    return _quantized_run(graph, bits, n, rank=None)["metric"]


def run_c_at_ranks(lowrank_graph, ranks: list[int], n: int, bits: int = 16) -> list[dict]:
    """The generated C of `lowrank_graph` (quantized and compiled once, all its σ-sorted factors, with
    op counters) run at each run-time rank: per rank {"rank", "metric_name", "metric", "macs" per frame
    from the C counters, "bit_exact" (outputs and every state equal to the integer reference)}."""
    import numpy as np

    from stapes.fixed.quantize import dequantize_output, quantize_graph, quantize_input
    from stapes.fixed.reference import run_reference
    from stapes.host import build, run_c
    from stapes.tasks.evaluate import eval_batch, metrics_from_outputs

    task, batch = eval_batch(lowrank_graph.task, "test", n)
    calib = task.sample("val", n, seed=CALIBRATION_SEED)
    q = quantize_graph(lowrank_graph, calib_x=calib.x, weights=f"int{bits}")
    x_q = quantize_input(q, batch.x)
    module = build(q, count_ops=True)
    frames = batch.x.shape[0] * batch.x.shape[1]
    rows = []
    for r in ranks:
        y, states, ops = run_c(q, x_q, rank=r, module=module)
        ref = run_reference(q, x_q, rank=r)
        rows.append(
            {
                "rank": r,
                "metric_name": task.primary_metric,
                "metric": metrics_from_outputs(task, dequantize_output(q, y), batch)[task.primary_metric],
                "macs": ops["mac"] / frames,
                "bit_exact": bool(np.array_equal(y, ref.outputs) and np.array_equal(states, ref.states)),
            }
        )
    return rows
