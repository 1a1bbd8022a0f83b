"""OTF (the paper's outlook): one set of σ-sorted factors, run by the generated C model at a rank chosen at run
time (a loop bound), against the metric and the MACs the op counters see."""

from __future__ import annotations

from stapes.experiments.experiment import Experiment, Section
from stapes.experiments.fixed_point import run_c_at_ranks
from stapes.experiments.report import markdown_table
from stapes.experiments.settings import Settings, rank_grid
from stapes.experiments.zoo import model_spec, task_config, trained_graph


def otf_units(s: Settings) -> list[dict]:
    return [
        {
            "model": model_spec(task_config(t, s), c, s.memo_hidden, 0, s),
            "ranks": rank_grid(s.memo_hidden, s.rank_points),
            "eval_sequences": min(s.eval_sequences, 128),
        }
        for t in ("memorization", "coherent")
        for c in s.cells
    ]


def compute_otf(ctx, unit: dict) -> dict:
    from stapes.compress.svd import with_rank
    from stapes.target.budget import shape_of_graph, step_counts
    from stapes.tasks.evaluate import evaluate_graph

    graph = trained_graph(ctx, unit["model"])
    n = graph.hidden_size
    full = with_rank(graph, n)  # the one set of weights: all N σ-sorted factors
    rows = []
    for c in run_c_at_ranks(full, unit["ranks"], unit["eval_sequences"]):
        floats = evaluate_graph(with_rank(graph, c["rank"]), n=unit["eval_sequences"])
        rows.append(
            {
                "rank": c["rank"],
                "metric_c": c["metric"],
                "macs": c["macs"],
                "bit_exact": c["bit_exact"],
                "metric_float": floats[c["metric_name"]],
            }
        )
    return {
        "metric_name": c["metric_name"],
        "hidden_size": n,
        "dense_macs": step_counts(shape_of_graph(graph))["macs"],
        "rows": rows,
    }


def otf_summarize(ctx, done) -> Section:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    numbers, table = {}, []
    for i, (unit, res) in enumerate(done):
        key = f"{unit['model']['task']['name']}/{unit['model']['cell']}"
        numbers[key] = res
        r = [row["rank"] for row in res["rows"]]
        axes[0].plot(r, [row["metric_c"] for row in res["rows"]], "o-", color=f"C{i}", label=f"{key} C")
        axes[0].plot(r, [row["metric_float"] for row in res["rows"]], "x--", color=f"C{i}", label=f"{key} float")
        axes[1].plot(r, [row["macs"] for row in res["rows"]], "o-", color=f"C{i}", label=key)
        full = res["rows"][-1]
        for row in res["rows"]:
            table.append(
                [
                    key,
                    row["rank"],
                    row["metric_c"],
                    row["metric_float"],
                    row["bit_exact"],
                    row["macs"],
                    f"{100 * (1 - row['macs'] / full['macs']):.0f}%",
                    f"{100 * (1 - row['macs'] / res['dense_macs']):.0f}%",
                ]
            )
    axes[0].set(xscale="log", xlabel="run-time rank", ylabel="metric", title="OTF: metric against run-time rank")
    axes[1].set(
        xscale="log",
        xlabel="run-time rank",
        ylabel="MACs per frame (C op counters)",
        title="OTF: MACs against run-time rank",
    )
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    figure = ctx.save_figure(fig, "otf_runtime_rank")
    all_rows = [row for res in numbers.values() for row in res["rows"]]
    agree = all(abs(row["metric_c"] - row["metric_float"]) <= 0.01 for row in all_rows)
    exact = all(row["bit_exact"] for row in all_rows)
    verdict = "holds" if agree and exact else "depends"
    reason = (
        f"{'bit-exact with the reference' if exact else 'NOT bit-exact with the reference'} at every "
        f"run-time rank; the C model is {'within' if agree else 'NOT within'} 1 point of the float model "
        f"truncated to the same rank (largest gap "
        f"{max(abs(r['metric_c'] - r['metric_float']) for r in all_rows):.4f})"
    )
    body = (
        "One quantized model (int16) holds all N factors sorted by σ; it is emitted as C and compiled once "
        "(the cffi host harness `stapes.host`, op counters on), then run at each run-time rank (the `rank` "
        "argument of `<model>_run`, a loop bound). Metric of the C model and of the float model truncated to "
        "the same rank; every output and state of the C run is compared with the integer reference at that "
        "rank (bit exact or not); MACs per frame from the C op counters; savings relative to the same model "
        "at its full rank N and to the dense model (`stapes.target.budget.step_counts`; negative where "
        "r ≥ N/2).\n\n"
        + markdown_table(
            [
                "task/cell",
                "run-time rank",
                "C metric",
                "float metric",
                "bit exact",
                "MACs",
                "saving vs rank N",
                "saving vs dense",
            ],
            table,
        )
    )
    return Section("OTF", TITLE, CLAIM, verdict, reason, body, [figure], numbers)


TITLE = "On-the-fly rank in the C model"
CLAIM = (
    "Compression can be chosen on the fly: one set of σ-sorted factors runs at any lower rank set at run "
    "time, trading metric for MACs without recompiling."
)
OTF = Experiment("OTF", TITLE, CLAIM, otf_units, compute_otf, otf_summarize, compute_version=2)
