"""Task metrics of a FloatGraph (numpy float64), or of any outputs computed on a task batch.

The fixed-point path uses the same two steps: take the batch from :func:`eval_batch`, run it
(C, reference, ...), dequantize the outputs and pass them to :func:`metrics_from_outputs`. The
default split, size and seed are the same everywhere, so the numbers compare directly.
"""

from __future__ import annotations

import numpy as np

from stapes.errors import UserError
from stapes.ir.float_graph import FloatGraph
from stapes.tasks import Batch, Task, make_task, task_from_config

DEFAULT_SEED = 1234


def _task(task_or_config: Task | dict | None) -> Task:
    return task_or_config if isinstance(task_or_config, Task) else task_from_config(task_or_config)


def eval_batch(
    task_or_config: Task | dict | None, split: str = "test", n: int | None = None, seed: int = DEFAULT_SEED
) -> tuple[Task, Batch]:
    """(task, batch) for evaluation; n defaults to the task's ``eval_size`` (512)."""
    task = _task(task_or_config)
    return task, task.sample(split, n if n is not None else getattr(task, "eval_size", 512), seed)


def metrics_from_outputs(task_or_config: Task | dict | None, outputs: np.ndarray, batch: Batch) -> dict[str, float]:
    """The task's metrics for outputs shaped like ``FloatGraph.run``'s (float, dequantized)."""
    task = _task(task_or_config)
    outputs = np.asarray(outputs, dtype=np.float64)
    expected = (
        (len(batch), task.output_size)
        if task.readout_mode == "final"
        else (len(batch), batch.x.shape[1], task.output_size)
    )
    if outputs.shape != expected:
        raise UserError(f"outputs have shape {outputs.shape}, the {task.name} task expects {expected}")
    return {k: float(v) for k, v in task.metrics(outputs, batch).items()}


def evaluate_graph(
    graph: FloatGraph, split: str = "test", n: int | None = None, seed: int = DEFAULT_SEED
) -> dict[str, float]:
    """Metrics of `graph` on its own task (``graph.task``), computed with ``graph.run``."""
    if graph.task is None:
        raise UserError("this model does not record a task, so it cannot be evaluated (imported model?)")
    task, batch = eval_batch(graph.task, split, n, seed)
    outputs, _ = graph.run(batch.x)
    return metrics_from_outputs(task, outputs, batch)


def evaluate_metric(graph: FloatGraph, split: str = "test", seed: int = 1234) -> tuple[str, float] | None:
    """(primary metric name, value) of `graph` on its task, or None when it has no task."""
    if graph.task is None:
        return None
    name = make_task(**graph.task).primary_metric
    return name, float(evaluate_graph(graph, split=split, seed=seed)[name])
