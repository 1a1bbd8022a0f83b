"""The `stapes perturb` study: first-order predicted vs measured drift and task metric under weight
perturbations of one model, recall vs delay over memorization models, perturb.json and its plots."""

from __future__ import annotations

from stapes.studies.plots import plt, write_png  # isort: skip - first: it chooses the matplotlib backend

from stapes.compress.perturbation import (
    analyse,
    default_perturb_ranks,
    make_perturbations,
    recall_by_delay,
    task_and_batch,
)
from stapes.errors import UserError
from stapes.fsutil import atomic_dir, write_json
from stapes.ir.float_graph import FloatGraph


def perturb_report(
    models: list, kinds=("svd", "gaussian", "quant"), ranks=None, bits=None, sequences: int = 256, seed: int = 0
) -> dict:
    """The perturb.json report of the model folders `models`: the first is analysed in full;
    memorization models (all of them, trained at different delays) give recall vs delay."""
    if sequences < 1:
        raise UserError(f"--sequences must be >= 1, got {sequences}")
    graphs = [FloatGraph.load(m) for m in models]
    graph = graphs[0]
    task, batch = task_and_batch(graph, split="test", n=sequences)
    result = analyse(graph, make_perturbations(graph, list(kinds), ranks, bits, seed=seed), batch, task)
    report = {
        "models": [str(m) for m in models],
        "task": graph.task,
        "cell": graph.kind,
        "hidden_size": graph.hidden_size,
        "sequences": sequences,
        "analysis": result,
    }
    mem = [g for g in graphs if (g.task or {}).get("name") == "memorization"]
    if len(graphs) > 1 and len(mem) != len(graphs):
        raise UserError("several models are only for recall vs delay: give memorization models only")
    if mem:
        report["recall_by_delay"] = recall_by_delay(mem, ranks or default_perturb_ranks(graph.hidden_size), n=sequences)
    return report


def write_perturb_folder(out, report: dict) -> None:
    """perturb.json, drift.png, scatter.png (and recall.png over several delays), atomically."""
    result, rec = report["analysis"], report.get("recall_by_delay")
    with atomic_dir(out) as tmp:
        write_json(tmp / "perturb.json", report)
        _plot_drift(result, tmp / "drift.png")
        _plot_scatter(result, tmp / "scatter.png")
        if rec is not None and len(rec["delays"]) > 1:
            _plot_recall(rec, tmp / "recall.png")


def fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _plot_drift(result: dict, path) -> None:
    """Measured and predicted drift per step: SVD truncations and quantization on the left, the
    Gaussian perturbations of the same sizes on the right (one panel would bury either)."""
    panels = [
        ("SVD truncation and quantization", [r for r in result["rows"] if r["kind"] != "gaussian"]),
        ("Gaussian perturbations of the same size", [r for r in result["rows"] if r["kind"] == "gaussian"]),
    ]
    panels = [(title, rows) for title, rows in panels if rows]
    start = result["memory_start"]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(6.4 * len(panels), 4.2), dpi=110, sharey=True, squeeze=False, layout="constrained"
    )
    for ax, (title, rows) in zip(axes[0], panels):
        for i, r in enumerate(rows):
            color = plt.cm.tab20(i % 20)
            steps = range(len(r["drift_measured"]))
            ax.semilogy(steps, r["drift_measured"], color=color, lw=1.4, label=r["label"])
            ax.semilogy(steps, r["drift_saturated"], color=color, lw=1.0, ls="--")
            ax.semilogy(steps, r["drift_linear"], color=color, lw=0.6, ls=":")
        if start:
            ax.axvline(start - 0.5, color="gray", lw=0.8)
        ax.set_xlabel("step t")
        ax.set_title(title, fontsize=8)
        ax.legend(fontsize=6, ncol=2)
    axes[0][0].set_ylabel("RMS ||h'_t - h_t||")
    fig.suptitle(
        "drift: measured (solid), first order saturated (dashed) / linear (dotted); "
        f"Pearson over perturbations x steps: saturated {fmt(result['pearson_drift_saturated_all'])}, "
        f"linear {fmt(result['pearson_drift_linear_all'])}",
        fontsize=8,
    )
    write_png(fig, path, bbox_inches="tight")


def _plot_scatter(result: dict, path) -> None:
    start = result["memory_start"]
    fig, ax = plt.subplots(figsize=(4.8, 4.4), dpi=110)
    everything = []
    for i, kind in enumerate(("svd", "gaussian", "quant")):
        sel = [r for r in result["rows"] if r["kind"] == kind]
        if not sel:
            continue
        meas = [v for r in sel for v in r["drift_measured"][start:]]
        pred = [v for r in sel for v in r["drift_saturated"][start:]]
        everything += meas + pred
        ax.loglog(
            meas,
            pred,
            "o",
            ms=2,
            alpha=0.6,
            color=f"C{i}",
            label=f"{kind} (Pearson {fmt(result[f'pearson_drift_saturated_{kind}'])})",
        )
    positive = [v for v in everything if v > 0]
    if positive:
        ax.plot([min(positive), max(positive)], [min(positive), max(positive)], color="gray", lw=1, ls="--")
    _finish(
        fig,
        ax,
        path,
        "measured drift (RMS, per step)",
        "predicted drift (first order, saturated)",
        "predicted vs measured drift over perturbations and steps",
        ncol=1,
    )


def _plot_recall(rec: dict, path) -> None:
    delays = rec["delays"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    ax.plot(delays, [d["metric_unperturbed"] for d in rec["per_delay"]], "k-o", ms=3, label="dense")
    for i, rank in enumerate(rec["ranks"]):
        rows = [next((r for r in d["rows"] if r["rank"] == rank), None) for d in rec["per_delay"]]
        pts = [(t, r) for t, r in zip(delays, rows) if r is not None]
        ax.plot(
            [t for t, _ in pts], [r["metric_measured"] for _, r in pts], "-o", ms=3, color=f"C{i}", label=f"r={rank}"
        )
        ax.plot([t for t, _ in pts], [r["metric_saturated"] for _, r in pts], "--", color=f"C{i}")
    _finish(
        fig,
        ax,
        path,
        "delay T (each point: a model trained at T)",
        "recall accuracy",
        "recall vs delay after SVD truncation: measured (solid), predicted (dashed)\n"
        f"Pearson over ranks x delays: recall-window drift {fmt(rec['pearson_recall_drift_saturated'])}, "
        f"accuracy {fmt(rec['pearson_recall_accuracy_saturated'])}",
    )


def _finish(fig, ax, path, xlabel: str, ylabel: str, title: str, ncol: int = 2, legend_size: int = 7) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=legend_size, ncol=ncol)
    ax.set_title(title, fontsize=8)
    write_png(fig, path)
