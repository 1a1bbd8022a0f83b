"""The fixed-point rows (R7) and the on-the-fly rank (OTF) call C's quantizer and its bit-exact
integer reference (the spec the C runtime is tested against, op counts included) through this one
adapter, so the suite depends on C's API in one place only."""

from __future__ import annotations

from .registry import Unavailable, missing_requirements

FIXED_POINT = ("stapes.quantize:quantize_graph (C)", "stapes.quantize:quantize_input (C)",
               "stapes.quantize:dequantize_output (C)", "stapes.reference:run_reference (C)",
               "stapes.evaluate:eval_batch (A)", "stapes.evaluate:metrics_from_outputs (A)")
ON_THE_FLY = FIXED_POINT
CALIBRATION_SEED = 99


def fixed_point_available() -> bool:
    return not missing_requirements(FIXED_POINT)


def _quantized_run(graph, bits: int, n: int, rank: int | None) -> dict:
    missing = missing_requirements(FIXED_POINT)
    if missing:
        raise Unavailable("needs " + ", ".join(missing))
    from ..evaluate import eval_batch, metrics_from_outputs
    from ..quantize import dequantize_output, quantize_graph, quantize_input
    from ..reference import run_reference

    task, batch = eval_batch(graph.task, "test", n)
    calib = task.sample("val", n, seed=CALIBRATION_SEED)       # ranges from validation data, never test
    q = quantize_graph(graph, calib_x=calib.x, weights=f"int{bits}")
    result = run_reference(q, quantize_input(q, batch.x), rank=rank)
    outputs = dequantize_output(q, result.outputs)
    frames = batch.x.shape[0] * batch.x.shape[1]
    return {"metric_name": task.primary_metric,
            "metric": metrics_from_outputs(task, outputs, batch)[task.primary_metric],
            "macs": result.ops["mac"] / frames}


def fixed_point_metric(graph, bits: int, n: int) -> float:
    """The task metric of `graph` quantized with int`bits` weights, run by the bit-exact reference."""
    return _quantized_run(graph, bits, n, rank=None)["metric"]


def run_at_rank(lowrank_graph, rank: int, n: int, bits: int = 16) -> dict:
    """{"metric_name", "metric", "macs" per frame} of the fixed-point model of `lowrank_graph`
    (quantized once, all its factors) run at the run-time `rank`."""
    return _quantized_run(lowrank_graph, bits, n, rank=rank)
