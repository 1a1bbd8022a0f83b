"""Metric vs rank: compress a model at every rank of a grid and measure it on its task.

Each row holds the rank, the task metric without fine-tuning (and with, if asked), the
recurrent MACs per step and the parameter counts (dense vs low rank), and the truncation
errors. Rank N is a real evaluation of the rank-N factors (not a copy of the dense metric),
so its agreement with the dense model is a check of the whole path.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from stapes.compress.svd import recurrent_cost, with_rank
from stapes.errors import UserError
from stapes.frontend.finetune import finetune_graph
from stapes.ir.float_graph import FloatGraph
from stapes.tasks.evaluate import evaluate_metric

CSV_FIELDS = (
    "rank",
    "metric",
    "metric_finetuned",
    "recurrent_macs",
    "recurrent_macs_dense",
    "mac_saving",
    "step_macs",
    "params",
    "params_dense",
    "spectral_rel",
    "frobenius_rel",
)


def default_ranks(n: int, max_points: int = 64) -> list[int]:
    """Every rank N..1 when N ≤ `max_points`, else an even grid from N down to 1 (N and 1 included)."""
    if n <= max_points:
        return list(range(n, 0, -1))
    step = (n - 1) / (max_points - 1)
    return sorted({round(n - i * step) for i in range(max_points)}, reverse=True)


def check_ranks(ranks: list[int], n: int) -> list[int]:
    bad = [r for r in ranks if not 1 <= r <= n]
    if bad:
        raise UserError(f"ranks {bad} are outside 1..{n} (the hidden size)")
    return sorted(set(ranks), reverse=True)


def run_sweep(
    graph: FloatGraph,
    ranks: list[int] | None = None,
    *,
    finetune_steps: int = 0,
    finetune_ranks: list[int] | None = None,
    joint: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Sweep `graph` over `ranks` (default :func:`default_ranks`); returns a JSON-able dict.

    Fine-tuning (``finetune_steps > 0``) runs at `finetune_ranks` (default: every swept rank).
    """
    if graph.task is None:
        raise UserError("a sweep needs the model's task to measure a metric, and this model has none")
    n = graph.hidden_size
    ranks = check_ranks(list(ranks) if ranks else default_ranks(n), n)
    tune_at = set(check_ranks(finetune_ranks, n) if finetune_ranks else ranks) if finetune_steps else set()
    name, dense_metric = evaluate_metric(graph)
    rows = []
    from tqdm import tqdm

    for r in tqdm(ranks, desc="sweep", unit="rank", disable=not progress):
        g = with_rank(graph, r, joint=joint)
        cost = recurrent_cost(g)
        errs = list(g.provenance["compress"]["matrices"].values())
        row = {
            "rank": r,
            "metric": evaluate_metric(g)[1],
            "metric_finetuned": None,
            "recurrent_macs": cost["recurrent_macs"],
            "recurrent_macs_dense": cost["recurrent_macs_dense"],
            "mac_saving": cost["mac_saving"],
            "step_macs": cost["step_macs"],
            "params": cost["params"],
            "params_dense": cost["params_dense"],
            "spectral_rel": max(e["spectral_rel"] for e in errs),
            "frobenius_rel": max(e["frobenius_rel"] for e in errs),
        }
        if r in tune_at:
            row["metric_finetuned"] = evaluate_metric(finetune_graph(g, finetune_steps, seed=seed))[1]
        rows.append(row)
    return {
        "metric_name": name,
        "metric_dense": dense_metric,
        "hidden_size": n,
        "cell": graph.kind,
        "joint": joint,
        "finetune_steps": finetune_steps,
        "task": graph.task,
        "smallest_rank_within_1_point": smallest_rank_within(rows, dense_metric, "metric"),
        "smallest_rank_within_1_point_finetuned": smallest_rank_within(rows, dense_metric, "metric_finetuned")
        if finetune_steps
        else None,
        "rows": rows,
    }


def smallest_rank_within(rows: list[dict], reference: float, key: str, tol: float = 0.01) -> int | None:
    """The smallest rank r such that every swept rank ≥ r keeps ``rows[key] ≥ reference − tol``.

    Requiring all larger ranks to pass too makes the answer robust to a lucky isolated point.
    """
    best = None
    for row in sorted(rows, key=lambda x: -x["rank"]):
        if row[key] is None:
            continue
        if row[key] < reference - tol:
            break
        best = row["rank"]
    return best


def to_csv(result: dict) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for row in result["rows"]:
        w.writerow({k: ("" if row[k] is None else row[k]) for k in CSV_FIELDS})
    return buf.getvalue()


def plot_sweep(result: dict, path: str | Path, title: str | None = None) -> None:
    """Metric vs rank (left axis; fine-tuned too if present) with the MAC saving (right axis)."""
    from stapes.studies.plots import plt, write_png

    rows = sorted(result["rows"], key=lambda x: x["rank"])
    ranks = [r["rank"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    ax.plot(ranks, [r["metric"] for r in rows], "o-", ms=3, label="truncated SVD, no fine-tuning")
    tuned = [(r["rank"], r["metric_finetuned"]) for r in rows if r["metric_finetuned"] is not None]
    if tuned:
        ax.plot(*zip(*tuned), "s-", ms=3, label=f"fine-tuned ({result['finetune_steps']} steps)")
    ax.axhline(result["metric_dense"], color="gray", ls="--", lw=1, label="dense")
    ax.axhline(result["metric_dense"] - 0.01, color="gray", ls=":", lw=1, label="dense − 1 point")
    for key, style, what in (
        ("smallest_rank_within_1_point", "-.", "r*"),
        ("smallest_rank_within_1_point_finetuned", (0, (1, 3)), "r* fine-tuned"),
    ):
        if result.get(key) is not None:
            ax.axvline(result[key], color="black", ls=style, lw=0.9, label=f"{what} = {result[key]} (within 1 point)")
    ax.set_xlabel("rank r of each recurrent matrix")
    ax.set_ylabel(result["metric_name"])
    ax2 = ax.twinx()
    ax2.plot(ranks, [100 * r["mac_saving"] for r in rows], color="tab:red", lw=1, alpha=0.7)
    ax2.axhline(0, color="tab:red", lw=0.5, alpha=0.5)
    ax2.set_ylabel("recurrent MAC saving (%)  [2Nr vs N²]", color="tab:red")
    ax.legend(loc="lower right", fontsize=8)
    task = (result.get("task") or {}).get("name", "?")
    ax.set_title(title or f"{result['cell'].upper()} N={result['hidden_size']} on {task}", fontsize=10)
    write_png(fig, path)


def write_sweep(result: dict, folder: str | Path) -> None:
    """sweep.json, sweep.csv and sweep.png into an existing folder (callers wrap it in atomic_dir)."""
    folder = Path(folder)
    (folder / "sweep.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    (folder / "sweep.csv").write_text(to_csv(result))
    plot_sweep(result, folder / "sweep.png")
