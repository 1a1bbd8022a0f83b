"""`stapes demo`: the whole pipeline on an embedded default, as an ordered list of stages.

Stage protocol (how to extend the demo)
---------------------------------------
* A stage is a function ``fn(ctx: DemoContext) -> None`` named in :data:`STAGES` as a
  ``"module:function"`` string (imported when the demo runs, so `stapes --help` stays fast).
  Stages run in list order; the report stage is last.
* A stage reads what earlier stages left in ``ctx.artifacts`` (e.g. ``ctx.artifacts["model"]``,
  the trained model folder, a ``Path``) and adds its own (``ctx.artifacts["qmodel"] = ...``).
  Artifact names in use: ``model`` (train), ``task`` (the Task object), ``train_metrics`` (dict),
  ``compressed`` (compress: the low-rank model folder), ``qmodel`` (fixed_point: the QModel folder).
* It writes files only under ``ctx.stage_dir("<name>")`` (a subfolder of the demo's output, which
  is written atomically as a whole: nothing appears unless every stage succeeds).
* It reports with ``ctx.section(title, lines)``: a titled block of short lines for the final report
  (numbers with units, "mismatches: 0", ...). ``ctx.log(msg)`` prints progress while it runs.
  ``ctx.summary[key] = value`` adds JSON-able values to ``summary.json``.
* A failed check raises ``CheckFailed`` (exit 1); bad input raises ``UserError`` (exit 2).
  A stage never reports success it did not check. If a stage cannot run on this machine (e.g. no
  cross toolchain) it says so with ``ctx.section(title, ["skipped: <reason>"])``.

Defaults are chosen to finish in about a minute on 2 cores: a 64-unit MGU on noiseless memorization
(L=5, K=2, delay 20), which reaches 100 % recall in a few hundred steps.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from stapes.errors import UserError

# The pipeline, in order. Other stages go between "train" and "report".
STAGES: list[str] = [
    "stapes.studies.demo:stage_train",
    "stapes.cli.commands.compress:stage_compress",
    "stapes.cli.commands.verify:stage_fixed_point",
    "stapes.cli.commands.board:stage_board",
    "stapes.studies.demo:stage_report",
]

DEFAULT_OUT = "stapes-demo"
# Per-task demo model and training (small, quick, reliable); training settings not given here come
# from train.default_settings. Audio, as measured (VAD, MGU-32, 200 steps of 16: ~0.88;
# KWS at its default sizes generates 3240 clips, minutes of work, so the demo asks for fewer).
DEMO_TASKS = {
    "memorization": {"params": {"length": 5, "symbols": 2, "delay": 20}, "hidden": 64, "steps": 1500},
    "frequency": {"params": {}, "hidden": 32, "steps": 600, "target": 0.99},
    "vad": {"params": {}, "hidden": 32, "steps": 200},
    "denoise": {"params": {}, "hidden": 32, "steps": 200},
    "kws": {"params": {"train_clips": 960, "val_clips": 120, "test_clips": 240}, "hidden": 32, "steps": 200},
}


@dataclass
class DemoContext:
    """What the stages share: the arguments, the output folder being written, artifacts, report."""

    args: argparse.Namespace
    out: Path                      # where the demo's folder will appear when it is complete
    work: Path                     # the folder being written now (renamed to `out` at the end)
    artifacts: dict = field(default_factory=dict)
    report: list[tuple[str, list[str]]] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def stage_dir(self, name: str) -> Path:
        path = self.work / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def final_path(self, path: Path) -> Path:
        """Where a file written under `work` will be once the demo has finished."""
        try:
            return self.out / Path(path).relative_to(self.work)
        except ValueError:
            return Path(path)

    def section(self, title: str, lines: list[str]) -> None:
        self.report.append((title, list(lines)))

    def log(self, message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)


def resolve_stage(spec: str) -> Callable[[DemoContext], None]:
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise UserError(f"demo stage {spec} cannot be loaded ({type(e).__name__}: {e})") from None


def stage_name(spec: str) -> str:
    return spec.partition(":")[2].removeprefix("stage_")


def run_stages(ctx: DemoContext, stages: list[str] | None = None) -> None:
    stages = STAGES if stages is None else stages
    functions = [(stage_name(s), resolve_stage(s)) for s in stages]  # fail before any work
    for i, (name, fn) in enumerate(functions, 1):
        print(f"[{i}/{len(functions)}] {name}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        fn(ctx)
        ctx.timings[name] = time.perf_counter() - start


# ---- stages ----------------------------------------------------------------------------------
def stage_train(ctx: DemoContext) -> None:
    """Train the demo model and save it as a model folder (``artifacts["model"]``)."""
    from stapes.frontend.models import RecurrentModel
    from stapes.tasks import make_task
    from stapes.frontend.train import TrainConfig, default_settings, model_config_for, save_checkpoint, train

    args = ctx.args
    demo = DEMO_TASKS.get(args.task, {"params": {}, "hidden": 32})
    task = make_task(args.task, **demo["params"])
    hidden = args.hidden or demo["hidden"]
    model_cfg = model_config_for(task, args.cell, hidden)
    settings = default_settings(task.name, args.cell)
    settings["steps"] = demo.get("steps", settings["steps"])
    train_cfg = TrainConfig(**settings, seed=args.seed, target=demo.get("target", 1.0), eval_every=50)
    ctx.log(f"training {args.cell.upper()} N={hidden} on {task.describe()}")
    model = RecurrentModel(model_cfg, seed=args.seed)
    metrics = train(model, task, train_cfg, progress=not args.quiet)
    folder = save_checkpoint(ctx.work / "model", model, model_cfg, task, train_cfg, metrics,
                             provenance={"source": "stapes demo"})
    ctx.artifacts.update(model=folder, task=task, train_metrics=metrics)
    ctx.summary["train"] = {"task": task.config(), "cell": args.cell, "hidden": hidden, **metrics}
    primary = task.primary_metric
    params = sum(p.numel() for p in model.parameters())
    ctx.section("train", [
        f"task:      {task.describe()}  (input coherence {task.coherence():.2f})",
        f"model:     {args.cell.upper()}, N={hidden}, {params} parameters, seed {args.seed}",
        f"training:  {metrics['steps']} steps in {metrics['seconds']:.1f} s"
        + (" (stopped at the target)" if metrics["stopped_early"] else ""),
        f"test:      {primary} {metrics['test'][primary]:.4f}  "
        + "  ".join(f"{k} {v:.4f}" for k, v in metrics["test"].items() if k != primary),
        f"folder:    {ctx.final_path(folder)}",
    ])


def stage_report(ctx: DemoContext) -> None:
    """Print the report and write report.txt + summary.json into the demo folder."""
    from stapes.fsutil import atomic_write_text, write_json

    lines = [f"stapes demo — {ctx.args.task}", ""]
    for title, body in ctx.report:
        lines.append(f"== {title}")
        lines.extend(f"   {line}" for line in body)
        lines.append("")
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in ctx.timings.items())
    lines.append(f"time: {timing}")
    lines.append(f"artifacts: {ctx.out}")
    text = "\n".join(lines) + "\n"
    atomic_write_text(ctx.work / "report.txt", text)
    write_json(ctx.work / "summary.json", {**ctx.summary, "timings_s": ctx.timings,
                                           "artifacts": {k: str(ctx.final_path(v)) for k, v in ctx.artifacts.items()
                                                         if isinstance(v, Path)}})
    print(text, end="")
