"""Trained models for the suite: a model is named by a spec (task config, cell, N, seed and the
training settings) and trained once; the cache keeps its folder (a regular stapes model folder
written by A's `save_checkpoint`), so every experiment that needs the same model shares it."""

from __future__ import annotations

from pathlib import Path

from .settings import Settings

# The profiles say "coherent"; A's registry calls its coherent task "frequency".
COHERENT_TASK = "frequency"


def task_config(name: str, settings: Settings, **params) -> dict:
    """The full config of task `name` as the suite uses it (defaults filled in by the task)."""
    from ..tasks import make_task

    if name == "memorization":
        params.setdefault("delay", settings.memo_delay)
    if name == "coherent":
        name = COHERENT_TASK
    return make_task(name, **params).config()


def model_spec(task: dict, cell: str, hidden: int, seed: int, settings: Settings) -> dict:
    return {"task": task, "cell": cell, "hidden": hidden, "seed": seed,
            "train": {"steps": settings.train_steps, "batch": settings.batch_size,
                      "lr": settings.learning_rate}}


def _train_into(folder: Path, spec: dict) -> None:
    from ..tasks import make_task
    from ..train import TrainConfig, model_config_for, save_checkpoint, train
    from ..models import RecurrentModel

    params = dict(spec["task"])
    task = make_task(params.pop("name"), **params)
    model = RecurrentModel(model_config_for(task, spec["cell"], spec["hidden"]), seed=spec["seed"])
    cfg = TrainConfig(steps=spec["train"]["steps"], batch=spec["train"]["batch"], lr=spec["train"]["lr"],
                      seed=spec["seed"], eval_every=max(1, min(50, spec["train"]["steps"])))
    metrics = train(model, task, cfg, progress=False)
    save_checkpoint(folder, model, None, task, cfg, metrics, {"source": "stapes paper"})


def trained_graph(ctx, spec: dict):
    """The FloatGraph of the model `spec` names, training it first if the cache lacks it."""
    from ..graph import FloatGraph

    folder = ctx.cache.model_dir("model", spec, lambda tmp: _train_into(tmp, spec))
    return FloatGraph.load(folder)
