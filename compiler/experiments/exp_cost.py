"""R7: MACs and bytes against rank (savings only for r < N/2), and the fixed-point model's metric
at chosen ranks with int8 and int16 weights."""

from __future__ import annotations

from collections import defaultdict

from stapes.experiments.experiment import Experiment, Section
from stapes.experiments.fixed_point import fixed_point_metric
from stapes.experiments.report import markdown_table
from stapes.experiments.settings import Settings, rank_grid
from stapes.experiments.zoo import model_spec, task_config, trained_graph


def r7_units(s: Settings) -> list[dict]:
    return [
        {
            "model": model_spec(task_config("memorization", s), c, n, 0, s),
            "ranks": rank_grid(n, s.rank_points),
            "quant_ranks": s.quant_ranks,
            "eval_sequences": s.eval_sequences,
        }
        for c in s.cells
        for n in s.hidden_sizes
    ]


def _bytes(graph, bits: int) -> int:
    from stapes.target.budget import shape_of_graph, weight_bytes

    return int(sum(weight_bytes(shape_of_graph(graph, bits)).values()))


def _chosen_ranks(sweep: dict, n: int, count: int) -> list[int]:
    """The float sweep's 1-point rank, then the next smaller grid ranks, up to `count` ranks."""
    r_star = sweep["smallest_rank_within_1_point"] or n
    below = sorted({row["rank"] for row in sweep["rows"] if row["rank"] < r_star}, reverse=True)
    return sorted([r_star] + below[: max(0, count - 1)])


def compute_cost(ctx, unit: dict) -> dict:
    from stapes.compress.svd import recurrent_cost, with_rank
    from stapes.studies.sweep import run_sweep
    from stapes.target.budget import shape_of_graph, step_counts
    from stapes.tasks.evaluate import evaluate_graph

    graph = trained_graph(ctx, unit["model"])
    n = graph.hidden_size
    rows = []
    for r in range(1, n + 1):
        g = with_rank(graph, r)
        cost = recurrent_cost(g)
        rows.append(
            {
                "rank": r,
                "recurrent_macs": cost["recurrent_macs"],
                "step_macs": cost["step_macs"],
                "runtime_macs": step_counts(shape_of_graph(g))["macs"],
                "bytes_int8": _bytes(g, 8),
                "bytes_int16": _bytes(g, 16),
            }
        )
    dense = {
        "recurrent_macs": recurrent_cost(graph)["recurrent_macs"],
        "runtime_macs": step_counts(shape_of_graph(graph))["macs"],
        "bytes_int8": _bytes(graph, 8),
        "bytes_int16": _bytes(graph, 16),
    }
    sweep = run_sweep(graph, unit["ranks"], progress=False)
    out = {
        "hidden_size": n,
        "rows": rows,
        "dense": dense,
        "metric_name": sweep["metric_name"],
        "metric_dense": sweep["metric_dense"],
        "chosen": [],
    }
    chosen = _chosen_ranks(sweep, n, unit["quant_ranks"])
    name = sweep["metric_name"]
    for r in chosen:  # float and fixed point on the same test sequences
        out["chosen"].append({"rank": r, "float": evaluate_graph(with_rank(graph, r), n=unit["eval_sequences"])[name]})
    for entry in out["chosen"]:
        g = with_rank(graph, entry["rank"])
        for bits in (8, 16):
            entry[f"int{bits}"] = fixed_point_metric(g, bits, unit["eval_sequences"])
    out["fixed_point"] = {"dense_int16": fixed_point_metric(graph, 16, unit["eval_sequences"])}
    return out


def r7_summarize(ctx, done) -> Section:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = defaultdict(list)
    for unit, result in done:
        groups[(unit["model"]["cell"], result["hidden_size"])].append(result)
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.2), layout="constrained")
    numbers, violations, table = {}, [], []
    for i, ((cell, n), (res, *_)) in enumerate(sorted(groups.items())):
        r = [row["rank"] for row in res["rows"]]
        axes[0].plot(r, [row["runtime_macs"] for row in res["rows"]], "-", color=f"C{i}", label=f"{cell} N={n}")
        axes[0].axhline(res["dense"]["runtime_macs"], color=f"C{i}", ls=":", lw=0.8)
        axes[0].axvline(n / 2, color=f"C{i}", ls="-.", lw=0.6)
        for bits, style in ((8, "-"), (16, "--")):
            axes[1].plot(
                r,
                [row[f"bytes_int{bits}"] for row in res["rows"]],
                style,
                color=f"C{i}",
                label=f"{cell} N={n} int{bits}",
            )
            axes[1].axhline(res["dense"][f"bytes_int{bits}"], color=f"C{i}", ls=":", lw=0.8)
        # Savings only for r < N/2: the low-rank recurrent MACs beat dense exactly when 2r < N.
        for row in res["rows"]:
            saves = {row[k] < res["dense"][k] for k in ("recurrent_macs", "runtime_macs", "bytes_int8", "bytes_int16")}
            if saves != {2 * row["rank"] < n}:
                violations.append(f"{cell} N={n} r={row['rank']}")
        break_even = max(
            (row["rank"] for row in res["rows"] if row["runtime_macs"] < res["dense"]["runtime_macs"]), default=0
        )
        numbers[f"{cell}/N={n}"] = {**res, "largest_saving_rank": break_even}
        for c in res["chosen"]:
            row = res["rows"][c["rank"] - 1]
            table.append(
                [
                    f"{cell}/N={n}",
                    c["rank"],
                    row["runtime_macs"],
                    res["dense"]["runtime_macs"],
                    row["bytes_int8"],
                    row["bytes_int16"],
                    c["float"],
                    c["int8"],
                    c["int16"],
                ]
            )
    for ax, label, xlabel in zip(
        axes,
        ("MACs per step (C runtime count)", "flash bytes of the model's const data"),
        ("rank r (dash-dot: r = N/2; dotted: dense)", "rank r (solid: int8, dashed: int16; dotted: dense)"),
    ):
        ax.set(xlabel=xlabel, ylabel=label)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_title("R7: MACs against rank")
    axes[1].set_title("R7: bytes against rank")
    figure = ctx.save_figure(fig, "r7_cost")
    fp_drops = [c["float"] - c["int16"] for res in numbers.values() for c in res["chosen"]]
    verdict = "does not hold" if violations else "depends" if any(d > 0.01 for d in fp_drops) else "holds"
    reason = (
        "MACs and flash bytes (int8, int16) fall below dense exactly for r < N/2 at every rank of " + ", ".join(numbers)
        if not violations
        else "savings at r >= N/2 or none below: " + ", ".join(violations)
    )
    reason += (
        f"; int16 at the chosen ranks is within {max(map(abs, fp_drops), default=0):.3f} of the float "
        f"metric (largest loss {max(fp_drops, default=0):+.3f})"
    )
    body = (
        "MACs per frame as the C runtime counts them (`stapes.target.budget.step_counts`: input projections, "
        "recurrent, readout) and the flash bytes of every const array the emitter writes "
        "(`stapes.target.budget.weight_bytes`), for int8 and int16 weights. Chosen ranks: the float sweep's "
        "smallest rank within 1 point and the next smaller grid ranks; metrics of the fixed-point model "
        "(the quantizer and the bit-exact integer reference) on the task's test split.\n\n"
        + markdown_table(
            [
                "model",
                "rank",
                "MACs",
                "MACs dense",
                "bytes int8",
                "bytes int16",
                "float metric",
                "int8 metric",
                "int16 metric",
            ],
            table,
        )
    )
    return Section("R7", TITLE, CLAIM, verdict, reason, body, [figure], numbers)


TITLE = "Cost: MACs and bytes against rank; fixed point"
CLAIM = (
    "Low rank saves MACs and bytes only for r < N/2; at the chosen ranks the fixed-point model "
    "(int8 / int16 factors) keeps the metric."
)
R7 = Experiment("R7", TITLE, CLAIM, r7_units, compute_cost, r7_summarize)
