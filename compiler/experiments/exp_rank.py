"""R1 (rank tolerance, with and without fine-tuning) and R2 (temporal coherence).

One unit = one trained model swept over a rank grid by `stapes.studies.sweep.run_sweep` (metric
without fine-tuning and, for R1, with a short fine-tuning at each rank; MACs and parameters per rank).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from stapes.experiments.experiment import Experiment, Section
from stapes.experiments.report import markdown_table
from stapes.experiments.settings import Settings, rank_grid
from stapes.experiments.stats import chance_level, fmt_ms, fmt_r, kept_above_chance, learned, mean_std, pearson
from stapes.experiments.zoo import model_spec, task_config, trained_graph


def _sweep_unit(spec: dict, settings: Settings, finetune: bool) -> dict:
    return {
        "model": spec,
        "ranks": rank_grid(spec["hidden"], settings.rank_points),
        "finetune_steps": settings.finetune_steps if finetune else 0,
    }


def compute_sweep(ctx, unit: dict) -> dict:
    from stapes.studies.sweep import run_sweep
    from stapes.tasks import make_task

    graph = trained_graph(ctx, unit["model"])
    result = run_sweep(
        graph, unit["ranks"], finetune_steps=unit["finetune_steps"], seed=unit["model"]["seed"], progress=False
    )
    result["coherence"] = make_task(**graph.task).coherence()
    return result


def _groups(done, key) -> dict:
    out = defaultdict(list)
    for unit, result in done:
        out[key(unit)].append(result)
    return dict(out)


def summarize_sweeps(results: list[dict], recall_threshold: float) -> dict:
    """Mean ± std over seeds of the metric at every rank, and the smallest rank whose *mean*
    metric stays within 1 point of the mean full-rank metric, with its MAC/parameter saving;
    `learned` says whether the mean full-rank model learned its task (stats.learned)."""
    from stapes.studies.sweep import smallest_rank_within

    ranks = sorted({row["rank"] for row in results[0]["rows"]})
    dense = mean_std([r["metric_dense"] for r in results])
    rows = []
    for rank in ranks:
        per_seed = [next(row for row in r["rows"] if row["rank"] == rank) for r in results]
        m = mean_std([row["metric"] for row in per_seed])
        tuned = [row["metric_finetuned"] for row in per_seed if row["metric_finetuned"] is not None]
        ft = mean_std(tuned) if tuned else (None, None)
        first = per_seed[0]
        rows.append(
            {
                "rank": rank,
                "metric": m[0],
                "metric_std": m[1],
                "metric_finetuned": ft[0],
                "metric_finetuned_std": ft[1],
                "mac_saving": first["mac_saving"],
                "recurrent_macs": first["recurrent_macs"],
                "params": first["params"],
                "params_dense": first["params_dense"],
                "param_saving": 1 - first["params"] / first["params_dense"],
            }
        )
    out = {
        "metric_name": results[0]["metric_name"],
        "hidden_size": results[0]["hidden_size"],
        "dense": dense[0],
        "dense_std": dense[1],
        "seeds": len(results),
        "coherence": float(np.mean([r["coherence"] for r in results])),
        "learned": learned(dense[0], results[0]["task"], results[0]["metric_name"], recall_threshold),
        "rows": rows,
    }
    tol = tolerance(out["metric_name"])
    out["tolerance"] = tol
    for key, label in (("metric", "no_ft"), ("metric_finetuned", "ft")):
        r_star = smallest_rank_within(rows, dense[0], key, tol) if rows[0][key] is not None else None
        out[f"rank_{label}"] = r_star
        at = next((row for row in rows if row["rank"] == r_star), None)
        out[f"mac_saving_{label}"] = at["mac_saving"] if at else None
        out[f"param_saving_{label}"] = at["param_saving"] if at else None
    return out


def tolerance(metric_name: str) -> float:
    """ "Within 1 point": 0.01 for the fraction metrics (accuracy, recall); 0.1 dB for metrics in dB."""
    return 0.1 if metric_name.endswith("_db") else 0.01


def _plot_curves(ctx, name: str, curves: dict, title: str, finetuned: bool) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, s in curves.items():
        r = [row["rank"] for row in s["rows"]]
        m, sd = np.array([row["metric"] for row in s["rows"]]), np.array([row["metric_std"] for row in s["rows"]])
        (line,) = ax.plot(r, m, "o-", label=f"{label}")
        ax.fill_between(r, m - sd, m + sd, color=line.get_color(), alpha=0.15)
        if finetuned and s["rows"][0]["metric_finetuned"] is not None:
            ax.plot(
                r,
                [row["metric_finetuned"] for row in s["rows"]],
                "s--",
                color=line.get_color(),
                label=f"{label}, fine-tuned",
            )
        ax.axhline(s["dense"] - s["tolerance"], color=line.get_color(), lw=0.6, ls=":")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("rank r of the recurrent matrices")
    ax.set_ylabel("primary metric (mean ± std over seeds)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return ctx.save_figure(fig, name)


# ---- R1 ------------------------------------------------------------------------------------


def r1_units(s: Settings) -> list[dict]:
    return [
        _sweep_unit(model_spec(task_config(t, s), c, n, seed, s), s, finetune=True)
        for t in s.r1_tasks
        for c in s.cells
        for n in s.hidden_sizes
        for seed in range(s.seeds)
    ]


def r1_summarize(ctx, done) -> Section:
    groups = _groups(done, lambda u: (u["model"]["task"]["name"], u["model"]["hidden"], u["model"]["cell"]))
    threshold = ctx.settings.recall_threshold
    stats = {f"{t}/N={n}/{c}": summarize_sweeps(rs, threshold) for (t, n, c), rs in sorted(groups.items())}
    figures = []
    for t, n in sorted({(t, n) for t, n, _ in groups}):
        curves = {c: stats[f"{t}/N={n}/{c}"] for (tt, nn, c) in sorted(groups) if (tt, nn) == (t, n)}
        figures.append(_plot_curves(ctx, f"r1_{t}_N{n}", curves, f"R1: {t}, N={n}", finetuned=True))
    table = []
    for key, st in stats.items():
        table.append(
            [
                key,
                fmt_ms(st["dense"], st["dense_std"]),
                "yes" if st["learned"] else "**no**",
                st["rank_no_ft"],
                _pct(st["mac_saving_no_ft"]),
                _pct(st["param_saving_no_ft"]),
                st["rank_ft"],
                _pct(st["mac_saving_ft"]),
                st["hidden_size"],
            ]
        )
    judged = {k: st for k, st in stats.items() if st["learned"]}
    compressible = [st["rank_no_ft"] is not None and 2 * st["rank_no_ft"] < st["hidden_size"] for st in judged.values()]
    if compressible and all(compressible):
        verdict = "holds"
    elif any(compressible):
        verdict = "depends"
    else:
        verdict = "does not hold"
    reason = "; ".join(
        f"{k}: r*={st['rank_no_ft']} ({_pct(st['mac_saving_no_ft'])} MACs saved)" for k, st in judged.items()
    )
    if len(judged) < len(stats):
        reason += "; not learned, left out: " + ", ".join(
            f"{k} (full-rank {st['dense']:.3f})" for k, st in stats.items() if not st["learned"]
        )
    body = (
        "Smallest rank whose mean metric (over seeds) stays within 1 point (0.01; 0.1 dB for dB metrics) "
        "of the mean full-rank "
        "metric at that rank and every larger swept rank, without and with fine-tuning (rank grid "
        f"{sorted({row['rank'] for st in stats.values() for row in st['rows']})}"
        "; r* = N means no swept rank below N passed). MAC saving: of the recurrent MACs per step; "
        "param saving: of the whole model's parameters (negative = low rank costs more, r ≥ N/2). "
        "Verdict: *holds* when every model family that learned its task compresses below N/2 without "
        "fine-tuning. *Learned*: memorization recall ≥ the recall threshold; dB metrics > 0; other "
        "metrics at least a quarter of the way from chance to 1 (a model at chance tolerates any rank, "
        "so it says nothing about compression).\n\n"
        + markdown_table(
            [
                "task/N/cell",
                "full-rank metric",
                "learned",
                "r* (no FT)",
                "MAC saving",
                "param saving",
                "r* (FT)",
                "MAC saving (FT)",
                "N",
            ],
            table,
        )
    )
    return Section("R1", TITLES["R1"], CLAIMS["R1"], verdict, reason, body, figures, stats)


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


# ---- R2 ------------------------------------------------------------------------------------


def r2_units(s: Settings) -> list[dict]:
    across = [
        _sweep_unit(model_spec(task_config(t, s), c, n, seed, s), s, finetune=False)
        for t in s.r1_tasks
        for c in s.cells
        for n in s.hidden_sizes[:1]
        for seed in range(s.seeds)
    ]
    knob = [
        _sweep_unit(model_spec(knob_task(s, k), c, s.memo_hidden, seed, s), s, finetune=False)
        for k in s.holds
        for c in s.cells
        for seed in range(s.seeds)
    ]
    return [dict(u, part="tasks") for u in across] + [dict(u, part="knob") for u in knob]


def knob_task(s: Settings, hold: int) -> dict:
    """Memorization with each symbol held `hold` steps. The delay shrinks as the pattern grows so
    that the span from the first symbol to the trigger (length·hold + delay) is the same for every
    hold: coherence is the only thing the knob changes, not how long the memory must last."""
    length = task_config("memorization", s)["length"]
    return task_config("memorization", s, hold=hold, delay=s.memo_delay + length * (max(s.holds) - hold))


def _tolerance(st: dict, n: int, task: dict) -> dict:
    """Rank tolerance of one family: r*/N (lower = more tolerant) and the kept share of the above-chance
    full-rank metric over the swept ranks below N (higher = more tolerant)."""
    rows = st["rows"]
    kept = kept_above_chance([r["rank"] for r in rows], [r["metric"] for r in rows], st["dense"], chance_level(task))
    return {
        "coherence": st["coherence"],
        "rank_fraction": (st["rank_no_ft"] or n) / n,
        "kept": kept,
        "dense": st["dense"],
        "learned": st["learned"],
    }


def r2_summarize(ctx, done) -> Section:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = _groups(
        [d for d in done if d[0]["part"] == "tasks"],
        lambda u: (u["model"]["task"]["name"], u["model"]["cell"], u["model"]["hidden"]),
    )
    knob = _groups(
        [d for d in done if d[0]["part"] == "knob"],
        lambda u: (u["model"]["task"]["hold"], u["model"]["cell"], u["model"]["hidden"]),
    )
    threshold = ctx.settings.recall_threshold
    per_task = {
        f"{t}/{c}": _tolerance(summarize_sweeps(rs, threshold), n, rs[0]["task"])
        for (t, c, n), rs in sorted(tasks.items())
    }
    per_hold = {
        f"hold={k}/{c}": {**_tolerance(summarize_sweeps(rs, threshold), n, rs[0]["task"]), "hold": k, "cell": c}
        for (k, c, n), rs in sorted(knob.items())
    }
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
    not_learned = " (not learned)"  # drawn hollow: shown, but without a say in the verdict
    # Tasks cluster at similar coherence, so they are told apart by colour (task) and marker
    # (cell) in a legend rather than by text labels that would overlap.
    task_names = sorted({label.split("/")[0] for label in per_task})
    markers = {"mgu": "o", "rnn": "s"}
    for label, v in per_task.items():
        task_name, cell = label.split("/")
        color = f"C{task_names.index(task_name)}"
        axes[0].scatter(
            v["coherence"],
            v["kept"],
            marker=markers.get(cell, "^"),
            facecolors=color if v["learned"] else "none",
            edgecolors=color,
            label=label + ("" if v["learned"] else not_learned),
        )
    axes[0].legend(fontsize=7, loc="best")
    axes[0].set(
        xlabel="input coherence (lag-1 autocorrelation)",
        ylabel="kept share of above-chance metric, r < N",
        title="R2: across tasks (hollow: not learned)",
    )
    cells = sorted({v["cell"] for v in per_hold.values()})
    for c in cells:
        pts = sorted((v["coherence"], v["kept"], v["hold"], v["learned"]) for v in per_hold.values() if v["cell"] == c)
        (line,) = axes[1].plot([p[0] for p in pts], [p[1] for p in pts], "-", label=c)
        for x, y, hold, ok in pts:
            axes[1].plot([x], [y], "o", color=line.get_color(), markerfacecolor=None if ok else "none")
            axes[1].annotate(
                f"hold {hold}" + ("" if ok else not_learned),
                (x, y),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize=7,
            )
    axes[1].set(
        xlabel="input coherence (lag-1 autocorrelation)",
        ylabel="kept share of above-chance metric, r < N",
        title="R2: memorization, coherence knob (hold)",
    )
    axes[1].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    figure = ctx.save_figure(fig, "r2_coherence")
    # The controlled experiment: within each cell, correlate coherence with tolerance over the holds
    # whose models learned the task (NaN, and no say in the verdict, with fewer than 3).
    judged = [v for v in per_hold.values() if v["learned"]]
    corr = {
        c: pearson([v["coherence"] for v in judged if v["cell"] == c], [v["kept"] for v in judged if v["cell"] == c])
        for c in cells
    }
    # Across tasks too: coherence against tolerance over the task families that learned their task.
    tasks_judged = [v for v in per_task.values() if v["learned"]]
    across = pearson([v["coherence"] for v in tasks_judged], [v["kept"] for v in tasks_judged])
    signs = [r for r in [across, *corr.values()] if np.isfinite(r)]
    if len(signs) >= 2 and np.isfinite(across) and all(r > 0.5 for r in signs):
        verdict = "holds"
    elif len(signs) >= 2 and np.isfinite(across) and all(r < -0.5 for r in signs):
        verdict = "does not hold"
    else:
        verdict = "depends"
    reason = (
        f"across tasks, Pearson r(coherence, kept) = {fmt_r(across)} over {len(tasks_judged)} learned task "
        "families; coherence knob (memorization), over the learned holds: "
        + ", ".join(f"{c} {fmt_r(corr[c])} ({sum(v['cell'] == c for v in judged)} holds)" for c in cells)
        + "; per task: "
        + ", ".join(
            f"{k} coh={v['coherence']:.2f} kept={v['kept']:.2f} "
            f"r*/N={v['rank_fraction']:.2f}{'' if v['learned'] else ' (not learned)'}"
            for k, v in per_task.items()
        )
    )
    rows = [
        [k, v["coherence"], v["dense"], "yes" if v["learned"] else "**no**", v["rank_fraction"], v["kept"]]
        for k, v in {**per_task, **per_hold}.items()
    ]
    body = (
        "Tolerance of a model family = *kept*, the mean over the swept ranks r < N of (metric(r) − chance) / "
        "(metric(N) − chance), chance = 1/classes (higher = more tolerant), and r*/N (the smallest rank "
        "within 1 point, as a fraction of N). Coherence = the task's lag-1 autocorrelation of its inputs "
        "(`Task.coherence`). "
        "The controlled knob holds each memorized symbol for `hold` steps, with the delay shortened so "
        "that the span from the first symbol to the trigger is the same for every hold. Verdict: *holds* when "
        "tolerance rises with coherence (r > 0.5) both across tasks and, for every cell, in the controlled "
        "experiment; *does not hold* when it falls (r < −0.5) in both; *depends* otherwise. Only families "
        "whose models learned their task count (a cell with fewer than 3 learned holds has no say).\n\n"
        + markdown_table(["family", "coherence", "full-rank metric", "learned", "r*/N", "kept"], rows)
    )
    return Section(
        "R2",
        TITLES["R2"],
        CLAIMS["R2"],
        verdict,
        reason,
        body,
        [figure],
        {"per_task": per_task, "per_hold": per_hold, "pearson_knob": corr, "pearson_tasks": across},
    )


TITLES = {"R1": "Rank tolerance of the recurrent weights", "R2": "Temporal coherence"}
CLAIMS = {
    "R1": "Considerable rank reduction of the recurrent weights of RNNs and MGUs is possible without fine-tuning.",
    "R2": "The effect of compression depends on the temporal coherence of the data and task "
    "(more coherent tasks tolerate more compression).",
}

R1 = Experiment("R1", TITLES["R1"], CLAIMS["R1"], r1_units, compute_sweep, r1_summarize, cache_kind="sweep")
R2 = Experiment("R2", TITLES["R2"], CLAIMS["R2"], r2_units, compute_sweep, r2_summarize, cache_kind="sweep")
