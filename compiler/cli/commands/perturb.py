"""`stapes perturb MODEL --out DIR [--kinds svd,gaussian,quant] [--ranks ...] [--bits ...]`."""

from __future__ import annotations

NAME = "perturb"
HELP = "first-order predicted vs measured hidden-state drift and task metric under weight perturbations"
DESCRIPTION = (HELP + ". Perturbations: SVD truncation, Gaussian noise of equal Frobenius norm, b-bit "
               "quantization. On memorization also recall accuracy vs delay. Writes perturb.json and PNGs.")


def _int_list(text: str) -> list[int]:
    import argparse

    try:
        values = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("empty list")
    return values


def _kinds(text: str) -> list[str]:
    import argparse

    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in ("svd", "gaussian", "quant")]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"kinds must be among svd,gaussian,quant, got {text!r}")
    return kinds


def add_arguments(p) -> None:
    p.add_argument("models", metavar="MODEL", nargs="+",
                   help="model folder(s) with a task; the first is analysed in full, and memorization models "
                        "trained at different delays give the recall-vs-delay curve")
    p.add_argument("--out", required=True, help="output folder (perturb.json, drift.png, scatter.png, recall.png)")
    p.add_argument("--kinds", type=_kinds, default=["svd", "gaussian", "quant"],
                   help="comma-separated perturbation kinds (default svd,gaussian,quant)")
    p.add_argument("--ranks", type=_int_list, default=None, help="SVD ranks (default 3N/4, N/2, N/4, ... 1)")
    p.add_argument("--bits", type=_int_list, default=None, help="quantization bits (default 4,6,8)")
    p.add_argument("--sequences", type=int, default=256, help="test sequences per evaluation (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed for the Gaussian perturbations (default 0)")


def _plot_drift(result: dict, path) -> None:
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["kind"] != "gaussian"]
    start = result["memory_start"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for i, r in enumerate(rows):
        color = plt.cm.tab20(i % 20)
        steps = range(len(r["drift_measured"]))
        ax.semilogy(steps, r["drift_measured"], color=color, lw=1.4, label=r["label"])
        ax.semilogy(steps, r["drift_saturated"], color=color, lw=1.0, ls="--")
        ax.semilogy(steps, r["drift_linear"], color=color, lw=0.6, ls=":")
    if start:
        ax.axvline(start - 0.5, color="gray", lw=0.8)
    _finish(fig, ax, path, "step t", "RMS ||h'_t - h_t||",
            "drift: measured (solid), first order saturated (dashed) / linear (dotted)\n"
            f"Pearson over perturbations x steps: saturated {_fmt(result['pearson_drift_saturated_all'])}, "
            f"linear {_fmt(result['pearson_drift_linear_all'])}", legend_size=6)


def _plot_scatter(result: dict, path) -> None:
    import matplotlib.pyplot as plt

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
        ax.loglog(meas, pred, "o", ms=2, alpha=0.6, color=f"C{i}",
                  label=f"{kind} (Pearson {_fmt(result[f'pearson_drift_saturated_{kind}'])})")
    positive = [v for v in everything if v > 0]
    if positive:
        ax.plot([min(positive), max(positive)], [min(positive), max(positive)], color="gray", lw=1, ls="--")
    _finish(fig, ax, path, "measured drift (RMS, per step)", "predicted drift (first order, saturated)",
            "predicted vs measured drift over perturbations and steps", ncol=1)


def _plot_recall(rec: dict, path) -> None:
    import matplotlib.pyplot as plt

    delays = rec["delays"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    ax.plot(delays, [d["metric_unperturbed"] for d in rec["per_delay"]], "k-o", ms=3, label="dense")
    for i, rank in enumerate(rec["ranks"]):
        rows = [next((r for r in d["rows"] if r["rank"] == rank), None) for d in rec["per_delay"]]
        pts = [(t, r) for t, r in zip(delays, rows) if r is not None]
        ax.plot([t for t, _ in pts], [r["metric_measured"] for _, r in pts], "-o", ms=3, color=f"C{i}",
                label=f"r={rank}")
        ax.plot([t for t, _ in pts], [r["metric_saturated"] for _, r in pts], "--", color=f"C{i}")
    _finish(fig, ax, path, "delay T (each point: a model trained at T)", "recall accuracy",
            "recall vs delay after SVD truncation: measured (solid), predicted (dashed)\n"
            f"Pearson over ranks x delays: recall-window drift {_fmt(rec['pearson_recall_drift_saturated'])}, "
            f"accuracy {_fmt(rec['pearson_recall_accuracy_saturated'])}")


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _finish(fig, ax, path, xlabel: str, ylabel: str, title: str, ncol: int = 2, legend_size: int = 7) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=legend_size, ncol=ncol)
    ax.set_title(title, fontsize=8)
    _save(fig, path)


def _save(fig, path) -> None:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path.write_bytes(buf.getvalue())


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from stapes.errors import UserError
    from stapes.fsutil import atomic_dir, write_json
    from stapes.ir.float_graph import FloatGraph
    from stapes.compress.perturbation import (analyse, default_perturb_ranks, make_perturbations,
        recall_by_delay, task_and_batch)

    graphs = [FloatGraph.load(m) for m in args.models]
    if args.sequences < 1:
        raise UserError(f"--sequences must be >= 1, got {args.sequences}")
    graph = graphs[0]
    task, batch = task_and_batch(graph, split="test", n=args.sequences)
    result = analyse(graph, make_perturbations(graph, args.kinds, args.ranks, args.bits, seed=args.seed), batch, task)
    report = {"models": [str(m) for m in args.models], "task": graph.task, "cell": graph.kind,
              "hidden_size": graph.hidden_size, "sequences": args.sequences, "analysis": result}
    mem = [g for g in graphs if (g.task or {}).get("name") == "memorization"]
    if len(graphs) > 1 and len(mem) != len(graphs):
        raise UserError("several models are only for recall vs delay: give memorization models only")
    rec = None
    if mem:
        rec = recall_by_delay(mem, args.ranks or default_perturb_ranks(graph.hidden_size), n=args.sequences)
        report["recall_by_delay"] = rec
    with atomic_dir(args.out) as tmp:
        write_json(tmp / "perturb.json", report)
        _plot_drift(result, tmp / "drift.png")
        _plot_scatter(result, tmp / "scatter.png")
        if rec is not None and len(rec["delays"]) > 1:
            _plot_recall(rec, tmp / "recall.png")
    print(f"perturb: {len(result['rows'])} perturbations; Pearson predicted vs measured drift over "
          f"perturbations x steps: saturated {_fmt(result['pearson_drift_saturated_all'])}, "
          f"linear {_fmt(result['pearson_drift_linear_all'])}")
    if rec is not None:
        print(f"perturb: recall over ranks x delays {rec['delays']}: Pearson drift "
              f"{_fmt(rec['pearson_recall_drift_saturated'])}, accuracy {_fmt(rec['pearson_recall_accuracy_saturated'])}")
    print(f"perturb: wrote {args.out}")
    return 0
