"""Training: Adam with gradient clipping on fresh seeded batches, early stop, checkpoints.

Determinism: batch `k` of a run is ``task.sample("train", batch, seed=seed·2²⁰ + k)``, model init
uses its own seeded generator, and torch runs with a fixed number of threads (``threads``), so the
same config gives the same weights bit for bit on the same machine.

A checkpoint folder (a *model folder*, written atomically):
``graph.json`` + ``graph.npz`` (the FloatGraph), ``model.pt`` (torch state dict),
``config.json`` (model, task and train configs) and ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stapes._version import __version__
from stapes.errors import UserError
from stapes.frontend.extract import to_graph
from stapes.frontend.losses import task_loss
from stapes.frontend.models import ModelConfig, RecurrentModel
from stapes.fsutil import atomic_dir, read_versioned_json, write_json
from stapes.ir.float_graph import MAX_HIDDEN, MAX_INPUTS, MAX_OUTPUTS
from stapes.tasks import MAX_STEPS, Batch, Task

CHECKPOINT_FORMAT = "stapes.checkpoint"
CHECKPOINT_VERSION = 1
_STEP_SEED_STRIDE = 2**20

# Limits, checked before anything is allocated (the hidden, input and output sizes are the IR's,
# stapes.ir.float_graph.MAX_*): far above what a microcontroller model needs, far below what
# would exhaust a workstation.
MAX_TRAIN_STEPS = 1_000_000
MAX_BATCH = 4096
MAX_EVAL_N = 65536
MAX_THREADS = 256
MAX_SEQUENCE_STEPS = MAX_STEPS  # time steps of one training sequence: the tasks' own limit
MAX_BATCH_VALUES = 1 << 28  # batch x time steps x max(hidden, inputs): what one step keeps for backprop
MAX_CHECKPOINT_BYTES = 1 << 30
_LIMITS = {"steps": MAX_TRAIN_STEPS, "batch": MAX_BATCH, "eval_every": MAX_TRAIN_STEPS, "eval_n": MAX_EVAL_N}


@dataclass
class TrainConfig:
    steps: int = 2000  # maximum optimizer steps
    batch: int = 64
    lr: float = 3e-3
    clip: float = 1.0  # max gradient norm (0 = no clipping)
    seed: int = 0
    target: float | None = None  # early stop once the validation primary metric reaches this
    eval_every: int = 50
    eval_n: int = 256  # validation sequences
    threads: int = 1  # torch threads during training (part of the determinism contract)

    def __post_init__(self):
        for name in ("steps", "batch", "eval_every", "eval_n", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{name} must be a positive integer, got {value!r}")
            limit = _LIMITS.get(name, MAX_THREADS)
            if value > limit:
                raise UserError(f"{name} must be at most {limit}, got {value}")
        if not (_is_real(self.lr) and math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"learning rate must be positive, got {self.lr!r}")
        if not (_is_real(self.clip) and math.isfinite(self.clip) and self.clip >= 0):
            raise UserError(f"clip must be a finite number >= 0, got {self.clip!r}")
        if self.target is not None and not (_is_real(self.target) and math.isfinite(self.target)):
            raise UserError(f"target must be a finite number, got {self.target!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise UserError(f"seed must be an integer in 0..2^32-1, got {self.seed!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_sizes(task: Task, hidden_size: int, batch: int) -> None:
    """The model and one training batch fit the limits (checked before anything is allocated)."""
    if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or not 1 <= hidden_size <= MAX_HIDDEN:
        raise UserError(f"hidden size must be an integer in 1..{MAX_HIDDEN}, got {hidden_size!r}")
    if task.input_size > MAX_INPUTS or task.output_size > MAX_OUTPUTS:
        raise UserError(
            f"task {task.name} has {task.input_size} inputs and {task.output_size} outputs "
            f"(at most {MAX_INPUTS} and {MAX_OUTPUTS})"
        )
    steps = getattr(task, "steps", None)
    if isinstance(steps, int):
        if steps > MAX_SEQUENCE_STEPS:
            raise UserError(f"task {task.name}: sequences of {steps} steps (at most {MAX_SEQUENCE_STEPS})")
        values = batch * steps * max(hidden_size, task.input_size)
        if values > MAX_BATCH_VALUES:
            raise UserError(
                f"a batch of {batch} sequences of {steps} steps at hidden size {hidden_size} is too large "
                f"({values:.3g} values; at most {MAX_BATCH_VALUES:.3g}): use a smaller --batch or --hidden"
            )


# Recommended settings per task (defaults of `stapes train` and `stapes demo`). Memorization: the MGU
# reaches 100 % recall in a few hundred steps at 1e-2; the tanh RNN needs the smaller 3e-3 to be
# stable. Audio tasks have ~100-400 steps per sequence: small batches (measured on VAD and denoising).
TRAIN_DEFAULTS = {
    "memorization": {"steps": 2000, "batch": 64, "lr": {"mgu": 1e-2, "rnn": 3e-3}},
    "frequency": {"steps": 1500, "batch": 64, "lr": {"mgu": 1e-2, "rnn": 3e-3}},
    "vad": {"steps": 300, "batch": 16, "lr": {"mgu": 1e-2, "rnn": 3e-3}},
    "denoise": {"steps": 300, "batch": 16, "lr": {"mgu": 1e-2, "rnn": 3e-3}},
    "kws": {"steps": 300, "batch": 16, "lr": {"mgu": 1e-2, "rnn": 3e-3}},
}
_FALLBACK_DEFAULTS = {"steps": 2000, "batch": 64, "lr": {"mgu": 1e-2, "rnn": 3e-3}}


def default_settings(task_name: str, cell: str) -> dict:
    """{"steps", "batch", "lr"} recommended for `task_name` and `cell`."""
    d = TRAIN_DEFAULTS.get(task_name, _FALLBACK_DEFAULTS)
    return {"steps": d["steps"], "batch": d["batch"], "lr": d["lr"][cell]}


class Adam:
    """Adam (Kingma & Ba), the update of ``torch.optim.Adam`` with its defaults.

    Written out because constructing any ``torch.optim`` optimizer imports ``torch._dynamo``,
    which costs seconds per process — a large share of a one-minute demo.
    """

    def __init__(self, params: list[torch.nn.Parameter], lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps, self.t = params, lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        correction1, correction2 = 1 - b1**self.t, math.sqrt(1 - b2**self.t)
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            p.addcdiv_(m, (v.sqrt() / correction2).add_(self.eps), value=-self.lr / correction1)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with exactly `n` intra-op threads, restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def model_config_for(task: Task, cell: str = "mgu", hidden_size: int = 64, **options) -> ModelConfig:
    """A ModelConfig whose input/output sizes and readout match `task`."""
    return ModelConfig(
        cell=cell,
        input_size=task.input_size,
        hidden_size=hidden_size,
        output_size=task.output_size,
        readout_mode=task.readout_mode,
        readout_activation=task.readout_activation,
        **options,
    )


def _check_compatible(model: RecurrentModel, task: Task) -> None:
    cfg = model.config
    if (cfg.input_size, cfg.output_size) != (task.input_size, task.output_size):
        raise UserError(
            f"model sizes (input {cfg.input_size}, output {cfg.output_size}) do not match task "
            f"{task.name} (input {task.input_size}, output {task.output_size})"
        )
    if cfg.readout_mode != task.readout_mode:
        raise UserError(f"model readout mode {cfg.readout_mode} does not match task {task.name} ({task.readout_mode})")


def model_outputs(model: RecurrentModel, batch: Batch) -> np.ndarray:
    """The model's outputs on a batch (no grad), as numpy: what ``task.metrics`` takes."""
    with torch.no_grad():
        outputs, _ = model(torch.as_tensor(batch.x))
    return outputs.double().numpy()


def evaluate_model(model: RecurrentModel, task: Task, batch: Batch) -> dict[str, float]:
    was_training = model.training
    model.eval()
    try:
        return task.metrics(model_outputs(model, batch), batch)
    finally:
        model.train(was_training)


def fit(
    model: RecurrentModel,
    task: Task,
    cfg: TrainConfig,
    progress: bool = True,
    parameters: Iterable[torch.nn.Parameter] | None = None,
    desc: str = "train",
) -> dict:
    """Train `model` in place (all parameters, or only `parameters`, e.g. low-rank factors when
    fine-tuning). The weights at the best validation evaluation are kept. Returns a summary:
    ``steps, seconds, loss, stopped_early, best_step, val`` (the best validation metrics)."""
    from tqdm import tqdm

    _check_compatible(model, task)
    params = list(model.parameters() if parameters is None else parameters)
    if not params:
        raise UserError("nothing to train: the parameter list is empty")
    with torch_threads(cfg.threads):
        torch.manual_seed(cfg.seed)
        optimizer = Adam(params, lr=cfg.lr)
        val_batch = task.sample("val", cfg.eval_n, seed=cfg.seed)
        best = {"metric": -math.inf, "step": 0, "state": None, "val": {}}
        loss_avg, stopped_early, step = float("nan"), False, 0
        start = time.perf_counter()
        bar = tqdm(
            total=cfg.steps,
            desc=desc,
            disable=not progress,
            file=sys.stderr,
            dynamic_ncols=True,
            leave=False,
            mininterval=0.5,
        )
        model.train()
        for step in range(1, cfg.steps + 1):
            batch = task.sample("train", cfg.batch, seed=cfg.seed * _STEP_SEED_STRIDE + step)
            outputs, _ = model(torch.as_tensor(batch.x))
            loss = task_loss(task, outputs, batch)
            if not torch.isfinite(loss):
                raise UserError(f"training diverged at step {step} (loss {loss.item()}); lower --lr")
            optimizer.zero_grad()
            loss.backward()
            if cfg.clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            optimizer.step()
            value = loss.item()
            loss_avg = value if step == 1 else 0.9 * loss_avg + 0.1 * value
            bar.update(1)
            if step % cfg.eval_every == 0 or step == cfg.steps:
                val = evaluate_model(model, task, val_batch)
                metric = val[task.primary_metric]
                if metric > best["metric"]:
                    best = {"metric": metric, "step": step, "state": copy.deepcopy(model.state_dict()), "val": val}
                bar.set_postfix(loss=f"{loss_avg:.4f}", **{task.primary_metric: f"{metric:.4f}"})
                if cfg.target is not None and metric >= cfg.target:
                    stopped_early = True
                    break
        bar.close()
        seconds = time.perf_counter() - start
        if best["state"] is not None:
            model.load_state_dict(best["state"])
    return {
        "steps": step,
        "seconds": round(seconds, 3),
        "loss": loss_avg,
        "stopped_early": stopped_early,
        "best_step": best["step"],
        "val": best["val"],
    }


def train(model: RecurrentModel, task: Task, cfg: TrainConfig, progress: bool = True) -> dict:
    """:func:`fit` from scratch, then the test metrics of the extracted FloatGraph (numpy), the
    same numbers ``evaluate_graph`` gives for the saved model."""
    from stapes.tasks.evaluate import evaluate_graph

    summary = fit(model, task, cfg, progress=progress)
    summary["test"] = evaluate_graph(to_graph(model, task.config(), {}))
    summary["primary_metric"] = task.primary_metric
    return summary


# ---- checkpoints ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainedModel:
    task: Task
    model: RecurrentModel
    model_config: ModelConfig
    train_config: TrainConfig
    metrics: dict

    def graph(self, provenance: dict | None = None):
        """The trained model as a FloatGraph that remembers its task."""
        return to_graph(self.model, self.task.config(), {"test": self.metrics["test"], **(provenance or {})})

    def save(self, folder: str | Path, provenance: dict | None = None) -> Path:
        """Write the model folder (see the module docstring)."""
        return save_checkpoint(
            folder, self.model, self.model_config, self.task, self.train_config, self.metrics, provenance
        )


def train_new(
    task: Task,
    cell: str = "mgu",
    hidden_size: int = 64,
    *,
    model_options: dict | None = None,
    progress: bool = True,
    **settings,
) -> TrainedModel:
    """Train a fresh `cell` of `hidden_size` units on `task`. `settings` are TrainConfig fields
    (None means default); steps, batch and lr default to :func:`default_settings`.
    `model_options` go to the ModelConfig (e.g. ``ranks``, ``spectral_radius``)."""
    if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
        raise UserError(f"hidden size must be a positive integer, got {hidden_size!r}")
    fields = {**default_settings(task.name, cell), **{k: v for k, v in settings.items() if v is not None}}
    train_cfg = TrainConfig(**fields)
    check_sizes(task, hidden_size, train_cfg.batch)
    model_cfg = model_config_for(task, cell, hidden_size, **(model_options or {}))
    model = RecurrentModel(model_cfg, seed=train_cfg.seed)
    metrics = train(model, task, train_cfg, progress=progress)
    return TrainedModel(task, model, model_cfg, train_cfg, metrics)


def save_checkpoint(
    folder: str | Path,
    model: RecurrentModel,
    model_cfg: ModelConfig | None,
    task: Task,
    train_cfg: TrainConfig | None,
    metrics: dict,
    provenance: dict | None = None,
) -> Path:
    """Write a model folder atomically (see the module docstring); returns its path."""
    folder = Path(folder)
    model_cfg = model_cfg or model.config
    config = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "stapes_version": __version__,
        "model": model_cfg.to_dict(),
        "task": task.config(),
        "train": train_cfg.to_dict() if train_cfg is not None else None,
    }
    prov = {
        "source": "stapes train",
        "stapes_version": __version__,
        "seed": train_cfg.seed if train_cfg is not None else None,
        "test": metrics.get("test", {}),
        **(provenance or {}),
    }
    graph = to_graph(model, task.config(), prov)
    with atomic_dir(folder) as tmp:
        torch.save(model.state_dict(), tmp / "model.pt")
        write_json(tmp / "config.json", config)
        write_json(tmp / "metrics.json", metrics)
        graph.save(tmp)
    return folder


def load_checkpoint(folder: str | Path) -> tuple[RecurrentModel, dict]:
    """(model, config) from a folder written by :func:`save_checkpoint`. Every problem (missing,
    damaged or foreign files, a config outside the limits, tensors that are not finite real
    floats or do not fit the config) is a one-line UserError naming the file."""
    folder = Path(folder)
    config_path, state_path = folder / "config.json", folder / "model.pt"
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    if not config_path.is_file() or not state_path.is_file():
        raise UserError(f"{folder}: not a training checkpoint (config.json and model.pt expected)")
    config = read_versioned_json(config_path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION)
    model_cfg = config.get("model")
    if not isinstance(model_cfg, dict):
        raise UserError(f"{config_path}: model must be an object, got {model_cfg!r:.60}")
    for key, limit in (("hidden_size", MAX_HIDDEN), ("input_size", MAX_INPUTS), ("output_size", MAX_OUTPUTS)):
        value = model_cfg.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > limit:
            raise UserError(f"{config_path}: model.{key} {value} is larger than {limit}")
    for key in ("spectral_radius", "input_scale", "gate_bias"):
        value = model_cfg.get(key, 0.0)
        if value is not None and not (_is_real(value) and math.isfinite(value)):
            raise UserError(f"{config_path}: model.{key} must be a finite number, got {value!r:.60}")
    try:
        model = RecurrentModel(ModelConfig(**model_cfg), seed=0)
    except (TypeError, KeyError, ValueError, AttributeError) as e:
        raise UserError(
            f"{config_path}: invalid model config ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from None
    except UserError as e:
        raise UserError(f"{config_path}: {e}") from None
    size = state_path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise UserError(f"{state_path}: {size} bytes; a checkpoint here is at most {MAX_CHECKPOINT_BYTES >> 20} MiB")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zipfile and torch raise many types for a damaged file
        why = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
        raise UserError(
            f"{state_path}: not a readable torch checkpoint ({type(e).__name__}{': ' + why[:200] if why else ''})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise UserError(f"{state_path}: not a state dict (a mapping of names to tensors)")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{state_path}: {key} is a {type(value).__name__}, not a tensor")
        if not value.dtype.is_floating_point:
            raise UserError(f"{state_path}: {key} has dtype {value.dtype}; real floats expected")
        if not bool(torch.isfinite(value).all()):
            raise UserError(f"{state_path}: {key} contains NaN or Inf")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{state_path}: does not match config.json ({str(e).splitlines()[0]})") from None
    return model, config
