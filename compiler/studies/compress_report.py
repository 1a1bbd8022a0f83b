"""The report `stapes compress` writes: compression, optional fine-tuning, and the task metric
of the dense, the compressed and the fine-tuned graph."""

from __future__ import annotations

from stapes.compress.degradation import compress_with_policy
from stapes.compress.svd import RankPolicy, recurrent_cost
from stapes.errors import UserError
from stapes.frontend.finetune import finetune_graph
from stapes.ir.float_graph import FloatGraph
from stapes.tasks.evaluate import evaluate_metric


def rank_policy(
    rank: int | None = None,
    energy: float | None = None,
    max_error: float | None = None,
    max_drop: float | None = None,
    error_norm: str = "spectral",
) -> RankPolicy:
    """The one rank policy named by exactly one of `rank`, `energy` (fraction of the squared
    singular values kept), `max_error` (relative truncation error in `error_norm`) or `max_drop`
    (largest predicted drop of the task metric)."""
    given = {
        k: v
        for k, v in (("rank", rank), ("energy", energy), ("max_error", max_error), ("max_drop", max_drop))
        if v is not None
    }
    if len(given) != 1:
        raise UserError("give exactly one of rank, energy, max_error, max_drop; got " + (", ".join(given) or "none"))
    if rank is not None:
        return RankPolicy("rank", rank)
    if energy is not None:
        return RankPolicy("energy", energy)
    if max_error is not None:
        return RankPolicy(error_norm, max_error)
    return RankPolicy("degradation", max_drop)


def compress_report(
    graph: FloatGraph,
    policy: RankPolicy,
    *,
    joint: bool = False,
    balanced: bool = True,
    finetune_steps: int = 0,
    seed: int = 0,
    progress: bool = False,
) -> tuple[FloatGraph, dict]:
    """Compress (and optionally fine-tune) `graph`; return the result and a JSON-able report:
    policy, ranks and truncation errors, cost dense vs low rank, and the task metric of the
    dense, the compressed and the fine-tuned graph (None where there is no task)."""
    compressed = compress_with_policy(graph, policy, joint=joint, balanced=balanced)
    report: dict = {
        "compression": compressed.provenance["compress"],
        "metric_name": None,
        "metric_dense": None,
        "metric_compressed": None,
        "metric_finetuned": None,
    }
    base = evaluate_metric(graph)
    if base is not None:
        report["metric_name"], report["metric_dense"] = base
        report["metric_compressed"] = evaluate_metric(compressed)[1]
    if finetune_steps:
        compressed = finetune_graph(compressed, finetune_steps, seed=seed, progress=progress)
        report["metric_finetuned"] = evaluate_metric(compressed)[1]
        report["finetune_steps"] = finetune_steps
    report["cost"] = recurrent_cost(compressed)
    return compressed, report
