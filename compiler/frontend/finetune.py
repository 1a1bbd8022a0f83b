"""Fine-tuning of a compressed FloatGraph's low-rank factors on its task (torch)."""

from __future__ import annotations

from stapes.errors import UserError
from stapes.frontend.extract import from_graph, to_graph
from stapes.frontend.models import LowRankMatrix
from stapes.frontend.train import TrainConfig, evaluate_model, fit
from stapes.ir.float_graph import FloatGraph
from stapes.tasks import task_from_config


def finetune_graph(
    graph: FloatGraph, steps: int, *, seed: int = 0, lr: float = 1e-3, progress: bool = False
) -> FloatGraph:
    """Fine-tune the low-rank factors (``a``, ``b`` of every LowRank matrix; all else frozen) of a
    compressed graph on its task for `steps` Adam steps (:func:`stapes.frontend.train.fit`).

    ``fit`` keeps the weights of its best validation evaluation; if none beats the starting
    point, the starting factors are kept (fine-tuning never makes the validation metric worse).
    The factors come back re-balanced into σ-ordered SVD factors. A joint MGU's shared ``b`` is
    untied by fine-tuning (each matrix gets its own), which :func:`recurrent_cost` then counts.
    """
    if graph.task is None:
        raise UserError("fine-tuning needs the model's task, and this model has none")
    if int(steps) != steps or steps < 1:
        raise UserError(f"fine-tuning steps must be an integer >= 1, got {steps}")
    task = task_from_config(graph.task)
    model = from_graph(graph)
    factors = [p for m in model.recurrent_matrices().values() if isinstance(m, LowRankMatrix) for p in (m.a, m.b)]
    if not factors:
        raise UserError("nothing to fine-tune: the model has no low-rank matrices")
    cfg = TrainConfig(steps=int(steps), lr=lr, seed=seed, eval_every=max(1, min(50, int(steps))))
    before = evaluate_model(model, task, task.sample("val", cfg.eval_n, seed=cfg.seed))[task.primary_metric]
    summary = fit(model, task, cfg, progress=progress, parameters=factors, desc="finetune")
    if summary["val"].get(task.primary_metric, -float("inf")) <= before:
        return graph.replace_cell(
            graph.cell, finetune={"steps": int(steps), "seed": seed, "lr": lr, "kept_start": True, "val_before": before}
        )
    tuned = to_graph(model, graph.task, graph.provenance, rebalance=True)
    return tuned.replace_cell(
        tuned.cell,
        finetune={
            "steps": int(steps),
            "seed": seed,
            "lr": lr,
            "kept_start": False,
            "val_before": before,
            "val_after": summary["val"][task.primary_metric],
        },
    )
