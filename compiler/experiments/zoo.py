"""Trained models for the suite: a model is named by a spec (task config, cell, N, seed and the
training settings) and trained once; the cache keeps its folder (a regular stapes model folder
written by `stapes.frontend.train.save_checkpoint`), so every experiment that needs the same model
shares it."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

from stapes.experiments.settings import Settings

# The profiles say "coherent"; the task registry (`stapes.tasks`) calls its coherent task "frequency".
COHERENT_TASK = "frequency"
AUDIO_TASKS = ("vad", "denoise", "kws")
CROPPED_TASKS = ("vad", "denoise")  # streams long enough to train on crops (kws clips are 1 s)


def task_config(name: str, settings: Settings, **params) -> dict:
    """The full config of task `name` as the suite uses it (defaults filled in by the task)."""
    if name == "memorization":
        params.setdefault("delay", settings.memo_delay)
    if name == "coherent":
        name = COHERENT_TASK
    if name in CROPPED_TASKS and settings.audio_train_frames:
        params.setdefault("train_frames", settings.audio_train_frames)
    return copy.deepcopy(_config_of(name, tuple(sorted(params.items()))))


@functools.cache
def _config_of(name: str, params: tuple) -> dict:
    """Memoized: building an audio task computes its features, and planning asks for each config often."""
    from stapes.tasks import make_task

    return make_task(name, **dict(params)).config()


def model_spec(task: dict, cell: str, hidden: int, seed: int, settings: Settings) -> dict:
    from stapes.frontend.models import DEFAULT_INPUT_SCALE

    s = settings
    audio = task["name"] in AUDIO_TASKS
    memo = task["name"] == "memorization"
    steps = (
        (s.audio_train_steps or s.train_steps)
        if audio
        else (s.memo_train_steps or s.train_steps)
        if memo
        else s.train_steps
    )
    train = {"steps": steps, "batch": (s.audio_batch or s.batch_size) if audio else s.batch_size, "lr": s.learning_rate}
    if memo and s.memo_target is not None:
        train["target"] = s.memo_target
    # The init is part of the name: a model trained under another default is another model.
    init = {"input_scale": DEFAULT_INPUT_SCALE[cell]}
    return {"task": task, "cell": cell, "hidden": hidden, "seed": seed, "init": init, "train": train}


def _train_into(folder: Path, spec: dict) -> None:
    from stapes.frontend.models import RecurrentModel
    from stapes.frontend.train import TrainConfig, model_config_for, save_checkpoint, train
    from stapes.tasks import make_task

    params = dict(spec["task"])
    task = make_task(params.pop("name"), **params)
    model_cfg = model_config_for(task, spec["cell"], spec["hidden"], **spec.get("init", {}))
    model = RecurrentModel(model_cfg, seed=spec["seed"])
    cfg = TrainConfig(
        steps=spec["train"]["steps"],
        batch=spec["train"]["batch"],
        lr=spec["train"]["lr"],
        seed=spec["seed"],
        eval_every=max(1, min(50, spec["train"]["steps"])),
        target=spec["train"].get("target"),
    )
    metrics = train(model, task, cfg, progress=False)
    save_checkpoint(folder, model, None, task, cfg, metrics, {"source": "stapes paper"})


def train_model(cache, spec: dict) -> Path:
    """The cached folder of the model `spec` names, training it first if the cache lacks it."""
    return cache.model_dir("model", spec, lambda tmp: _train_into(tmp, spec))


def trained_graph(ctx, spec: dict):
    """The FloatGraph of the model `spec` names, training it first if the cache lacks it."""
    from stapes.ir.float_graph import FloatGraph

    return FloatGraph.load(train_model(ctx.cache, spec))
