"""The report `stapes compress` writes: compression, optional fine-tuning, and the task metric
of the dense, the compressed and the fine-tuned graph."""

from __future__ import annotations

from stapes.compress.svd import RankPolicy, compress_graph, recurrent_cost
from stapes.frontend.finetune import finetune_graph
from stapes.ir.float_graph import FloatGraph
from stapes.tasks.evaluate import evaluate_metric


def compress_report(graph: FloatGraph, policy: RankPolicy, *, joint: bool = False, balanced: bool = True,
                    finetune_steps: int = 0, seed: int = 0) -> tuple[FloatGraph, dict]:
    """Compress (and optionally fine-tune) `graph`; return the result and a JSON-able report:
    policy, ranks and truncation errors, cost dense vs low rank, and the task metric of the
    dense, the compressed and the fine-tuned graph (None where there is no task)."""
    compressed = compress_graph(graph, policy, joint=joint, balanced=balanced)
    report: dict = {"compression": compressed.provenance["compress"], "metric_name": None,
                    "metric_dense": None, "metric_compressed": None, "metric_finetuned": None}
    base = evaluate_metric(graph)
    if base is not None:
        report["metric_name"], report["metric_dense"] = base
        report["metric_compressed"] = evaluate_metric(compressed)[1]
    if finetune_steps:
        compressed = finetune_graph(compressed, finetune_steps, seed=seed)
        report["metric_finetuned"] = evaluate_metric(compressed)[1]
        report["finetune_steps"] = finetune_steps
    report["cost"] = recurrent_cost(compressed)
    return compressed, report
