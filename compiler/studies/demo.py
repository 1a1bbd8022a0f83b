"""`stapes demo`: the whole pipeline on an embedded default, as an ordered list of stages.

Stage protocol (how to extend the demo)
---------------------------------------
* A stage is a function ``fn(ctx: DemoContext) -> None`` listed in :data:`STAGES`.
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
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from stapes.compress.svd import RankPolicy
from stapes.emit.model_c import summary
from stapes.errors import CheckFailed
from stapes.fsutil import atomic_write_text, write_json
from stapes.ir.float_graph import FloatGraph
from stapes.ir.qgraph import QGraph
from stapes.studies.compress_report import compress_report
from stapes.studies.deploy import quantize_calibrated, quantize_folder, write_c_folder
from stapes.studies.verify import verify_folder
from stapes.target import toolchain
from stapes.target.profile import load_board
from stapes.target.run import ram_text, run_qgraph

DEFAULT_OUT = "stapes-demo"
# Per-task demo model and training (small, quick, reliable); training settings not given here come
# from train.default_settings. Audio, as measured (VAD, MGU-32, 200 steps of 16: ~0.88;
# KWS at its default sizes generates 3240 clips, minutes of work, so the demo asks for fewer).
DEMO_FINETUNE_STEPS = 150  # enough to show the recovery; the demo's time budget is 2 minutes
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
    out: Path  # where the demo's folder will appear when it is complete
    work: Path  # the folder being written now (renamed to `out` at the end)
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


Stage = Callable[[DemoContext], None]


def stage_name(stage: Stage) -> str:
    return stage.__name__.removeprefix("stage_")


def run_stages(ctx: DemoContext, stages: list[Stage] | None = None) -> None:
    stages = STAGES if stages is None else stages
    for i, fn in enumerate(stages, 1):
        name = stage_name(fn)
        print(f"[{i}/{len(stages)}] {name}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        fn(ctx)
        ctx.timings[name] = time.perf_counter() - start


# ---- stages ----------------------------------------------------------------------------------
def stage_train(ctx: DemoContext) -> None:
    """Train the demo model and save it as a model folder (``artifacts["model"]``)."""
    from stapes.frontend.train import train_new
    from stapes.tasks import make_task

    args = ctx.args
    demo = DEMO_TASKS.get(args.task, {"params": {}, "hidden": 32})
    task = make_task(args.task, **demo["params"])
    hidden = args.hidden or demo["hidden"]
    ctx.log(f"training {args.cell.upper()} N={hidden} on {task.describe()}")
    trained = train_new(
        task,
        args.cell,
        hidden,
        progress=not args.quiet,
        steps=demo.get("steps"),
        seed=args.seed,
        target=demo.get("target", 1.0),
        eval_every=50,
    )
    metrics, model = trained.metrics, trained.model
    folder = trained.save(ctx.work / "model", provenance={"source": "stapes demo"})
    ctx.artifacts.update(model=folder, task=task, train_metrics=metrics)
    ctx.summary["train"] = {"task": task.config(), "cell": args.cell, "hidden": hidden, **metrics}
    primary = task.primary_metric
    params = sum(p.numel() for p in model.parameters())
    ctx.section(
        "train",
        [
            f"task:      {task.describe()}  (input coherence {task.coherence():.2f})",
            f"model:     {args.cell.upper()}, N={hidden}, {params} parameters, seed {args.seed}",
            f"training:  {metrics['steps']} steps in {metrics['seconds']:.1f} s"
            + (" (stopped at the target)" if metrics["stopped_early"] else ""),
            f"test:      {primary} {metrics['test'][primary]:.4f}  "
            + "  ".join(f"{k} {v:.4f}" for k, v in metrics["test"].items() if k != primary),
            f"folder:    {ctx.final_path(folder)}",
        ],
    )


def stage_compress(ctx: DemoContext) -> None:
    """Compress the demo model's recurrent matrices to rank N/4 (half the dense MACs), measure the
    metric truncated and after a short fine-tuning of the factors, and save the fine-tuned
    model folder as ``artifacts["compressed"]`` (``compress/model``)."""
    graph = FloatGraph.load(ctx.artifacts["model"])
    rank = max(1, graph.hidden_size // 4)
    ctx.log(f"compressing to rank {rank} of {graph.hidden_size}, fine-tuning {DEMO_FINETUNE_STEPS} steps")
    compressed, report = compress_report(
        graph,
        RankPolicy("rank", rank),
        finetune_steps=DEMO_FINETUNE_STEPS,
        seed=ctx.args.seed,
        progress=not ctx.args.quiet,
    )
    folder = ctx.stage_dir("compress") / "model"
    folder.mkdir()
    compressed.save(folder)
    write_json(folder / "compress.json", report)
    ctx.artifacts["compressed"] = folder
    cost, name = report["cost"], report["metric_name"]
    ctx.section(
        "compress (truncated SVD of the recurrent matrices)",
        [
            f"rank {rank} of {graph.hidden_size} for {', '.join(cost['matrices'])}",
            f"recurrent MACs/step: {cost['recurrent_macs_dense']} dense -> {cost['recurrent_macs']} "
            f"({100 * cost['mac_saving']:.0f}% fewer); parameters {cost['recurrent_params_dense']} -> "
            f"{cost['recurrent_params']}",
            f"{name}: dense {report['metric_dense']:.4f}, truncated {report['metric_compressed']:.4f}, "
            f"fine-tuned ({DEMO_FINETUNE_STEPS} steps) {report['metric_finetuned']:.4f}",
            f"saved: {ctx.final_path(folder)}",
        ],
    )
    ctx.summary["compress"] = {
        "rank": rank,
        "metric_dense": report["metric_dense"],
        "metric_truncated": report["metric_compressed"],
        "metric_finetuned": report["metric_finetuned"],
        "mac_saving": cost["mac_saving"],
    }


def stage_fixed_point(ctx: DemoContext) -> None:
    """Quantize (int16, task calibration) -> emit -> build -> verify the compressed model (or the
    trained one when no compression stage ran)."""
    source = ctx.artifacts.get("compressed", ctx.artifacts["model"])
    qdir = ctx.work / "qmodel"
    ctx.log("quantizing (int16 weights), emitting C, building it and comparing with the reference")
    q = quantize_folder(source, qdir, weights="int16", sequences=256, seed=0)
    cdir = ctx.work / "c"
    write_c_folder(q, cdir, "model", with_runtime=False)
    result = verify_folder(qdir, sequences=256)
    ctx.artifacts["qmodel"] = qdir
    s = summary(q)
    ctx.summary["fixed_point"] = {
        "mismatches": result.mismatches,
        "ops_per_frame": result.ops_per_frame,
        "metrics": result.metrics,
        "summary": s,
    }
    if not result.ok:
        raise CheckFailed(result.failure())
    ctx.section(
        "fixed point (quantize -> emit -> verify)",
        [
            f"QGraph: input {q.input_fmt.describe()}, output {q.readout.out_fmt.describe()}, "
            f"int{q.weight_bits} weights, {s['macs_per_frame']} MACs/frame (all-dense {s['macs_per_frame_dense']})",
            f"QModel:    {ctx.final_path(qdir)}",
            f"C: {s['weight_bytes']} B weights + {s['table_bytes']} B tables, state {s['state_bytes']} B, "
            f"scratch {s['scratch_bytes']} B -> {ctx.final_path(cdir)}",
            *result.lines,
        ],
    )


def stage_board(ctx: DemoContext) -> None:
    """The demo's QModel (or the trained model, quantized here) on the
    Cortex-M4 under qemu, compared with the host and the reference; skipped with the install
    line when the cross toolchain is absent."""
    title = "Cortex-M4 (mps2-an386 under qemu)"
    reason = toolchain.toolchain_missing()
    if reason:
        ctx.section(title, [f"skipped: {reason}"])
        return
    qmodel = ctx.artifacts.get("qmodel")
    if qmodel is not None:
        q = QGraph.load(qmodel)
    else:  # no quantize stage ran: quantize the trained model on its task data
        q = quantize_calibrated(FloatGraph.load(ctx.artifacts["model"]), weights="int16", seed=1)
    board = load_board("mps2-an386")
    ctx.log("cross-building for the Cortex-M4 and running under qemu")
    res = run_qgraph(q, board, ctx.stage_dir("board"), frames=32, seed=0)
    if not (res.same_as_host and res.same_as_reference and res.returncode == 0):
        raise CheckFailed(f"Cortex-M4 differs: {res.first_mismatch or 'host and target outputs differ'}")
    mean = sum(res.frame_insns) / len(res.frame_insns)
    s = res.sizes
    ctx.summary["board"] = {
        "board": board.name,
        "frames": res.frames,
        "mismatches": 0,
        "instructions_per_frame": mean,
        "macs_per_frame": res.macs_per_frame,
        "flash": s["flash_model"],
        "ram": res.ram_buffers + res.stack,
        "ram_buffers": res.ram_buffers,
        "stack": res.stack,
    }
    ctx.section(
        title,
        [
            f"bit-exact: {res.frames} frames, every output and state equal to the host build and the "
            f"reference (mismatches: 0)",
            f"cost:      {mean:,.0f} instructions/frame (qemu), {res.macs_per_frame} MACs/frame, "
            f"{mean / max(res.macs_per_frame, 1):.2f} instructions/MAC",
            f"size:      flash {s['flash_model']} B (model + runtime + startup), {ram_text(res)}",
            f"build:     {ctx.final_path(ctx.stage_dir('board'))}",
        ],
    )


def stage_report(ctx: DemoContext) -> None:
    """Print the report and write report.txt + summary.json into the demo folder."""
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
    write_json(
        ctx.work / "summary.json",
        {
            **ctx.summary,
            "timings_s": ctx.timings,
            "artifacts": {k: str(ctx.final_path(v)) for k, v in ctx.artifacts.items() if isinstance(v, Path)},
        },
    )
    print(text, end="")


# The pipeline, in order. Other stages go between "train" and "report".
STAGES: list[Stage] = [stage_train, stage_compress, stage_fixed_point, stage_board, stage_report]
