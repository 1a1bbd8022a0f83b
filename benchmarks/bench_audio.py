"""Audio benchmark: an MGU per audio task at benchmark size — float metric, metric against rank
without fine-tuning, and the fixed-point metric with int8 and int16 weights (bit-exact reference).

    python benchmarks/bench_audio.py --out runs/bench-audio            # all three tasks
    python benchmarks/bench_audio.py --tasks vad --out runs/bench-vad  # one task

Runs on one torch thread (the machine is shared). Writes, per task, the trained model folder
(``<out>/<task>/``, usable by every stapes command) and ``<out>/results.json``; prints a table.

Fixed point: the QGraph is calibrated on 64 train clips; test inputs are saturated to the input
format's range first (what an int16 front end does), and the number of saturated values is reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from stapes.compress.svd import with_rank
from stapes.fixed.quantize import dequantize_output, quantize_graph, quantize_input
from stapes.fixed.reference import run_reference
from stapes.frontend.extract import to_graph
from stapes.frontend.models import RecurrentModel
from stapes.frontend.train import TrainConfig, model_config_for, save_checkpoint, train
from stapes.fsutil import write_json
from stapes.tasks import make_task
from stapes.tasks.audio.tasks import BENCH_SIZES
from stapes.tasks.evaluate import evaluate_graph, metrics_from_outputs

# Model sizes as in the shared audio note; training budgets sized for a shared 2-core machine.
PLANS = {
    "vad": dict(hidden=32, steps=400, batch=16, train_frames=200),
    "denoise": dict(hidden=64, steps=600, batch=16, train_frames=200),
    "kws": dict(hidden=64, steps=800, batch=32, train_frames=None),
}


def fixed_point_metrics(graph, task, weights: str) -> dict:
    calib = task.sample("train", 64, seed=99).x
    q = quantize_graph(graph, calib_x=calib, weights=weights)
    batch = task.sample("test", task.eval_size, seed=0)
    limit = (32767 / 2.0**q.input_fmt.frac) if isinstance(q.input_fmt.frac, int) else None
    x = batch.x if limit is None else np.clip(batch.x, -limit, limit)
    saturated = int(np.sum(x != batch.x))
    result = run_reference(q, quantize_input(q, x))
    metrics = metrics_from_outputs(task, dequantize_output(q, result.outputs), batch)
    return {"weights": weights, "saturated_inputs": saturated, "input_frac": q.input_fmt.frac, **metrics}


def bench_task(name: str, out: Path, seed: int) -> dict:
    plan = PLANS[name]
    params = dict(BENCH_SIZES[name])
    if plan["train_frames"]:
        params["train_frames"] = plan["train_frames"]
    t0 = time.perf_counter()
    task = make_task(name, seed=seed, **params)
    for split in ("val", "test"):  # generate now, so the timing below is training only
        task.sample(split, 1, seed=0)
    t_gen = time.perf_counter() - t0
    model_cfg = model_config_for(task, "mgu", plan["hidden"])
    model = RecurrentModel(model_cfg, seed=seed)
    cfg = TrainConfig(
        steps=plan["steps"],
        batch=plan["batch"],
        lr=1e-2 if name != "kws" else 5e-3,
        seed=seed,
        eval_every=50,
        eval_n=10**6,
        threads=1,
    )
    t1 = time.perf_counter()
    summary = train(model, task, cfg, progress=True)
    t_train = time.perf_counter() - t1
    save_checkpoint(out / name, model, model_cfg, task, cfg, summary, {"source": "benchmarks/bench_audio.py"})
    graph = to_graph(model, task.config(), {})
    primary = task.primary_metric
    ranks = [r for r in (1, 2, 4, 8, 16, 32, 48) if r < plan["hidden"]]
    by_rank = {r: evaluate_graph(with_rank(graph, r))[primary] for r in ranks}
    by_rank[plan["hidden"]] = summary["test"][primary]
    fixed = {w: fixed_point_metrics(graph, task, w) for w in ("int16", "int8")}
    return {
        "task": name,
        "hidden": plan["hidden"],
        "params": sum(p.numel() for p in model.parameters()),
        "sizes": BENCH_SIZES[name],
        "train": {k: plan[k] for k in ("steps", "batch", "train_frames")},
        "generate_seconds": round(t_gen, 1),
        "train_seconds": round(t_train, 1),
        "primary_metric": primary,
        "float": summary["test"],
        "metric_by_rank": by_rank,
        "fixed": fixed,
    }


def table(results: list[dict]) -> str:
    lines = [
        "| task | model | float | " + " | ".join(["rank r: metric"]) + " | int16 | int8 |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        p = r["primary_metric"]
        ranks = ", ".join(f"{k}: {v:.3f}" for k, v in r["metric_by_rank"].items())
        lines.append(
            f"| {r['task']} ({p}) | MGU-{r['hidden']} ({r['params']} params) | {r['float'][p]:.3f} | {ranks} "
            f"| {r['fixed']['int16'][p]:.3f} | {r['fixed']['int8'][p]:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="vad,denoise,kws")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.tasks.split(","):
        results.append(bench_task(name, out, args.seed))
        write_json(out / "results.json", results)
        print(json.dumps({k: v for k, v in results[-1].items() if k != "float"}, indent=1), flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
