"""The ``degradation`` rank policy: the smallest rank whose *predicted* task metric drop is small enough.

It joins truncated SVD (:mod:`stapes.compress.svd`) and the first-order perturbation model
(:mod:`stapes.compress.perturbation`), so it sits above both and neither imports it.
:func:`compress_with_policy` takes every :class:`~stapes.compress.svd.RankPolicy`, this one
included; callers that may be handed a ``degradation`` policy use it rather than ``compress_graph``.
"""

from __future__ import annotations

from stapes.compress import perturbation
from stapes.compress.svd import RankPolicy, compress_graph
from stapes.ir.float_graph import FloatGraph


def rank_for_degradation(graph: FloatGraph, max_drop: float, *, joint: bool = False, data=None) -> int:
    """The smallest common rank whose first-order predicted metric drop is ≤ `max_drop`.

    The prediction linearises the cell along the uncompressed trajectory
    (:func:`stapes.compress.perturbation.predicted_metric`), so no compressed model is ever run.
    Ranks are scanned by bisection, assuming the predicted drop shrinks as rank grows. `data` (a
    task Batch) defaults to the task's validation split.
    """
    task, batch = perturbation.task_and_batch(graph, data)
    base = perturbation.metric_of(task, graph, batch)

    def drop(r: int) -> float:
        deltas = perturbation.svd_delta(graph, r, joint=joint)
        return base - perturbation.predicted_metric(graph, deltas, batch, task)

    lo, hi = 1, graph.hidden_size
    while lo < hi:
        mid = (lo + hi) // 2
        if drop(mid) <= max_drop:
            hi = mid
        else:
            lo = mid + 1
    return lo


def compress_with_policy(
    graph: FloatGraph, policy: RankPolicy, *, joint: bool = False, balanced: bool = True, data=None
) -> FloatGraph:
    """:func:`~stapes.compress.svd.compress_graph` for any policy: a ``degradation`` policy first
    becomes the fixed rank :func:`rank_for_degradation` picks (on `data`, default the validation split)."""
    if policy.kind == "degradation":
        rank = rank_for_degradation(graph, policy.value, joint=joint, data=data)
        policy = RankPolicy("rank", rank)
    return compress_graph(graph, policy, joint=joint, balanced=balanced)
