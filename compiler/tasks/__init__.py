"""Seeded task generators and their metrics (the Task protocol of the team brief).

A task makes batches (``sample(split, n, seed)``, deterministic), names its training loss
(``loss_kind``, computed in torch by ``stapes.frontend.losses``) and turns model outputs into metrics (numpy, outputs as ``FloatGraph.run`` gives them; higher primary metric is
better). ``make_task(**task.config())`` rebuilds a task, which is how a FloatGraph remembers the
task it was trained on.

Built in:

* ``memorization``: the noiseless short-term-memory probe. Inputs are one-hot over K data symbols,
  a blank and a trigger (K + 2 channels). A sequence is an L-symbol pattern (each symbol held for
  ``hold`` steps), ``delay`` blanks, one trigger, then L blank steps during which the network must
  output the pattern, one symbol per step (K logits per step). Loss and metrics count only those L
  recall steps. Metrics: ``recall_accuracy`` (per symbol, primary) and ``perfect_fraction``.
* ``frequency``: a temporally coherent task. The input is a noisy sinusoid whose frequency
  switches among ``classes`` values in segments of random length; the network labels the current
  frequency at every step. The evidence is refreshed by the input on every step, so only about one
  period of memory is needed. Metric: ``accuracy`` (per step, excluding ``settle`` steps after each
  switch and at the start).

Audio tasks (``vad``, ``denoise``, ``kws``) live in ``stapes.tasks.audio.tasks`` and are imported lazily.

Coherence (``Task.coherence()``) is the pooled lag-1 autocorrelation of the inputs of a fixed test
sample: ``Σ (x_t − μ)(x_{t+1} − μ) / Σ (x_t − μ)²`` over batch, time and channels, μ per channel
(memorization: over the data channels of the pattern segment only, see its docstring).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from stapes.errors import UserError

SPLITS = {"train": 0, "val": 1, "test": 2}


@dataclass
class Batch:
    x: np.ndarray  # (B, T, I) float32 inputs
    y: np.ndarray  # int64 class ids (B, T) / (B,), or float32 (B, T, O) / (B, O)
    mask: np.ndarray | None  # (B, T) bool: the steps that count in loss and metric
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])


def split_rng(split: str, seed: int) -> np.random.Generator:
    """The generator for (split, seed): different splits never share a stream."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    return np.random.default_rng([int(seed), SPLITS[split]])


def check_count(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_SEQUENCES:
        raise UserError(f"number of sequences must be an integer in 1..{MAX_SEQUENCES}, got {n!r}")
    return int(n)


def lag1_autocorrelation(x: np.ndarray) -> float:
    """Pooled lag-1 autocorrelation of (B, T, I) inputs, mean removed per channel."""
    x = np.asarray(x, dtype=np.float64)
    centered = x - x.mean(axis=(0, 1), keepdims=True)
    denom = float(np.sum(centered * centered))
    if denom == 0.0:
        return 0.0
    return float(np.sum(centered[:, 1:] * centered[:, :-1]) / denom)


def masked_accuracy(outputs: np.ndarray, batch: Batch) -> tuple[float, float]:
    """(accuracy over the masked steps, fraction of sequences with every masked step right).
    Without a mask every step counts; for final outputs (B, K) both numbers are the accuracy."""
    correct = np.asarray(outputs).argmax(axis=-1) == batch.y
    if correct.ndim == 1:
        return float(correct.mean()), float(correct.mean())
    mask = np.ones_like(correct) if batch.mask is None else batch.mask
    per_step = float(correct[mask].mean())
    perfect = float(np.all(correct | ~mask, axis=1).mean())
    return per_step, perfect


# Upper limits of the task parameters, checked before anything is allocated: a sequence is at
# most MAX_STEPS steps, a batch at most MAX_SEQUENCES sequences, a class count at most MAX_CLASSES.
MAX_STEPS = 100_000
MAX_SEQUENCES = 1_000_000
MAX_CLASSES = 1024


def _positive_int(name: str, value, minimum: int = 1, maximum: int = MAX_STEPS) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not minimum <= value <= maximum:
        raise UserError(f"task parameter {name} must be an integer in {minimum}..{maximum}, got {value!r}")
    return int(value)


class Task:
    """Base class with the shared parts of the protocol; subclasses set the attributes below."""

    name: str
    input_size: int
    output_size: int
    readout_mode: str = "per_step"
    readout_activation: str = "linear"
    loss_kind: str = "ce"  # the training loss, by name (stapes.frontend.losses.LOSSES)
    primary_metric: str
    eval_size: int = 512  # default number of test sequences for evaluation

    def config(self) -> dict:
        raise NotImplementedError

    def sample(self, split: str, n: int, seed: int) -> Batch:
        raise NotImplementedError

    def metrics(self, outputs: np.ndarray, batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    def coherence(self) -> float:
        return lag1_autocorrelation(self.sample("test", 256, seed=0).x)

    def describe(self) -> str:
        """One short line: the name and the scalar parameters (long lists are left out)."""
        params = ", ".join(
            f"{k}={v}" for k, v in self.config().items() if k != "name" and not isinstance(v, (list, tuple, dict))
        )
        return f"{self.name}({params})"


class MemorizationTask(Task):
    """Noiseless memorization: pattern, delay of blanks, trigger, recall (see the module doc)."""

    name = "memorization"
    primary_metric = "recall_accuracy"

    def __init__(self, length: int = 5, symbols: int = 2, delay: int = 20, hold: int = 1):
        self.length = _positive_int("length", length)
        self.symbols = _positive_int("symbols", symbols, minimum=2, maximum=MAX_CLASSES)
        self.delay = _positive_int("delay", delay, minimum=0)
        self.hold = _positive_int("hold", hold)
        if self.steps > MAX_STEPS:
            raise UserError(f"the memorization sequence would be {self.steps} steps long; at most {MAX_STEPS}")
        self.input_size = self.symbols + 2
        self.output_size = self.symbols
        self.blank, self.trigger = self.symbols, self.symbols + 1

    @property
    def steps(self) -> int:
        """Sequence length: pattern (L·hold) + delay + trigger + recall (L)."""
        return self.length * self.hold + self.delay + 1 + self.length

    @property
    def trigger_step(self) -> int:
        return self.length * self.hold + self.delay

    def config(self) -> dict:
        return {
            "name": self.name,
            "length": self.length,
            "symbols": self.symbols,
            "delay": self.delay,
            "hold": self.hold,
        }

    def sample(self, split: str, n: int, seed: int) -> Batch:
        rng = split_rng(split, seed)
        n = check_count(n)
        patterns = rng.integers(0, self.symbols, size=(n, self.length))
        codes = np.full((n, self.steps), self.blank, dtype=np.int64)
        codes[:, : self.length * self.hold] = np.repeat(patterns, self.hold, axis=1)
        codes[:, self.trigger_step] = self.trigger
        x = np.eye(self.input_size, dtype=np.float32)[codes]
        recall = slice(self.trigger_step + 1, self.steps)
        y = np.zeros((n, self.steps), dtype=np.int64)
        y[:, recall] = patterns
        mask = np.zeros((n, self.steps), dtype=bool)
        mask[:, recall] = True
        return Batch(x, y, mask, {"patterns": patterns})

    def metrics(self, outputs: np.ndarray, batch: Batch) -> dict[str, float]:
        per_symbol, perfect = masked_accuracy(outputs, batch)
        return {"recall_accuracy": per_symbol, "perfect_fraction": perfect}

    def coherence(self) -> float:
        """Lag-1 autocorrelation of the data channels over the pattern segment: about 0 for
        hold=1 (independent symbols), rising towards 1 as ``hold`` grows (≈ (hold−1)/hold for
        K=2). The constant blank run of the delay is left out: it carries no information."""
        x = self.sample("test", 256, seed=0).x
        return lag1_autocorrelation(x[:, : self.length * self.hold, : self.symbols])


class FrequencyTask(Task):
    """Per-step classification of the frequency of a noisy, switching sinusoid (coherent)."""

    name = "frequency"
    primary_metric = "accuracy"

    def __init__(
        self,
        classes: int = 3,
        steps: int = 64,
        min_period: float = 6.0,
        max_period: float = 16.0,
        noise: float = 0.3,
        segment: int = 24,
        settle: int = 8,
    ):
        self.classes = _positive_int("classes", classes, minimum=2, maximum=MAX_CLASSES)
        self.steps = _positive_int("steps", steps, minimum=2)
        self.segment = _positive_int("segment", segment)
        self.settle = _positive_int("settle", settle, minimum=0)
        if not 2.0 <= float(min_period) < float(max_period) <= MAX_STEPS:
            raise UserError(
                f"periods must satisfy 2 <= min_period < max_period <= {MAX_STEPS}, got {min_period}, {max_period}"
            )
        if not 0 <= float(noise) <= 100:
            raise UserError(f"noise must be in [0, 100], got {noise}")
        if self.settle >= self.steps:
            raise UserError(f"settle ({self.settle}) must be shorter than the sequence ({self.steps} steps)")
        self.min_period, self.max_period, self.noise = float(min_period), float(max_period), float(noise)
        self.input_size, self.output_size = 1, self.classes
        # Geometrically spaced periods: equal ratios make the classes equally hard to separate.
        self.periods = np.geomspace(self.min_period, self.max_period, self.classes)

    def config(self) -> dict:
        return {
            "name": self.name,
            "classes": self.classes,
            "steps": self.steps,
            "min_period": self.min_period,
            "max_period": self.max_period,
            "noise": self.noise,
            "segment": self.segment,
            "settle": self.settle,
        }

    def sample(self, split: str, n: int, seed: int) -> Batch:
        rng = split_rng(split, seed)
        n = check_count(n)
        # Segment lengths in [segment/2, 3·segment/2]; a new class at each switch (never the same).
        labels = np.empty((n, self.steps), dtype=np.int64)
        since_switch = np.empty((n, self.steps), dtype=np.int64)
        for i in range(n):
            t, label = 0, int(rng.integers(self.classes))
            while t < self.steps:
                length = int(rng.integers(max(1, self.segment // 2), self.segment + self.segment // 2 + 1))
                labels[i, t : t + length] = label
                since_switch[i, t : t + length] = np.arange(min(length, self.steps - t))
                t += length
                label = (label + int(rng.integers(1, self.classes))) % self.classes
        omega = 2 * math.pi / self.periods[labels]
        phase = rng.uniform(0, 2 * math.pi, size=(n, 1)) + np.cumsum(omega, axis=1)
        x = np.sin(phase) + self.noise * rng.standard_normal((n, self.steps))
        mask = since_switch >= self.settle
        return Batch(x[:, :, None].astype(np.float32), labels, mask, {"periods": self.periods.copy()})

    def metrics(self, outputs: np.ndarray, batch: Batch) -> dict[str, float]:
        accuracy, perfect = masked_accuracy(outputs, batch)
        return {"accuracy": accuracy, "perfect_fraction": perfect}


# ---- registry ------------------------------------------------------------------------------
# A value is a factory or a lazy "module:function" string (imported on first use).
_REGISTRY: dict[str, Callable[..., Task] | str] = {
    "memorization": MemorizationTask,
    "frequency": FrequencyTask,
    "vad": "stapes.tasks.audio.tasks:make_vad_task",
    "denoise": "stapes.tasks.audio.tasks:make_denoise_task",
    "kws": "stapes.tasks.audio.tasks:make_kws_task",
}
TASK_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def register_task(name: str, factory: Callable[..., Task] | str) -> None:
    """Add a task (a factory or a "module:function" string) under `name`."""
    global TASK_NAMES
    _REGISTRY[name] = factory
    TASK_NAMES = tuple(_REGISTRY)


def _resolve(name: str, entry: Callable[..., Task] | str) -> Callable[..., Task]:
    if not isinstance(entry, str):
        return entry
    module_name, _, attr = entry.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise UserError(f"the {name} task is unavailable: cannot load {entry} ({type(e).__name__}: {e})") from None


def make_task(name: str, **params) -> Task:
    """The task `name` with `params` (as in ``task.config()``, minus "name")."""
    if name not in _REGISTRY:
        raise UserError(f"unknown task {name!r}: expected one of {', '.join(TASK_NAMES)}")
    factory = _resolve(name, _REGISTRY[name])
    try:
        return factory(**params)
    except TypeError as e:
        raise UserError(f"bad parameters for task {name}: {e}") from None


def task_from_config(config: dict | None) -> Task:
    """Rebuild a task from ``task.config()`` (e.g. the ``task`` field of a FloatGraph)."""
    if not config or "name" not in config:
        raise UserError("this model does not record the task it was trained on (task config is empty)")
    params = dict(config)
    return make_task(params.pop("name"), **params)
