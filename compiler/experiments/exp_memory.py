"""R3-R5 on the noiseless memorization task: recall against rank and delay, the critical delay
T* against ε = ‖ΔW‖_F/‖W‖_F, and the perturbation model's predictions against measurements."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from stapes.experiments.experiment import Experiment, Section
from stapes.experiments.perturb_runs import COMPUTE_VERSION, EPS_ZERO, compute_perturbations, memory_units
from stapes.experiments.report import markdown_table
from stapes.experiments.stats import chance_level, critical_delay, kept_above_chance, mean_std, pearson


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _by_cell_delay(done) -> dict:
    out = defaultdict(list)
    for unit, result in done:
        out[(unit["model"]["cell"], unit["model"]["task"]["delay"])].append(result)
    return dict(sorted(out.items()))


def _svd_curve(results: list[dict], key: str = "measured") -> tuple[list[int], list[float], list[float]]:
    ranks = sorted({p["rank"] for p in results[0]["points"] if p["family"] == "svd"})
    means, stds = [], []
    for r in ranks:
        m, s = mean_std(
            [next(p[key] for p in res["points"] if p["family"] == "svd" and p["rank"] == r) for res in results]
        )
        means.append(m)
        stds.append(s)
    return ranks, means, stds


# ---- R3 -------------------------------------------------------------------------------------


def r3_summarize(ctx, done) -> Section:
    from stapes.studies.sweep import smallest_rank_within

    plt = _plt()
    groups = _by_cell_delay(done)
    cells = sorted({c for c, _ in groups})
    fig, axes = plt.subplots(1, len(cells), figsize=(5.2 * len(cells), 4), squeeze=False)
    numbers, table = {}, []
    for ax, cell in zip(axes[0], cells):
        for (c, t), results in groups.items():
            if c != cell:
                continue
            ranks, m, s = _svd_curve(results)
            dense = mean_std([r["dense"] for r in results])
            rows = [{"rank": r, "metric": v} for r, v in zip(ranks, m)]
            r_star = smallest_rank_within(rows, dense[0], "metric")
            kept = kept_above_chance(ranks, m, dense[0], chance_level(done[0][0]["model"]["task"]))
            numbers[f"{cell}/T={t}"] = {
                "ranks": ranks,
                "recall": m,
                "recall_std": s,
                "dense": dense[0],
                "dense_std": dense[1],
                "rank_within_1_point": r_star,
                "kept_above_chance": kept,
            }
            table.append([cell, t, f"{dense[0]:.3f} ± {dense[1]:.3f}", r_star, f"{m[0]:.3f}", kept])
            (line,) = ax.plot(ranks, m, "o-", label=f"T={t}")
            ax.fill_between(ranks, np.array(m) - s, np.array(m) + s, color=line.get_color(), alpha=0.15)
        ax.set_xscale("log", base=2)
        ax.set(
            xlabel="rank r (SVD truncation, no fine-tuning)",
            ylabel="recall accuracy",
            title=f"R3: memorization, {cell}, N={done[0][0]['model']['hidden']}",
        )
        ax.legend()
        ax.grid(alpha=0.3)
    figure = ctx.save_figure(fig, "r3_recall_vs_rank")
    # Longer delays should suffer more: the kept fraction falls with T, in every cell, over the delays
    # the cell's models learned (full-rank recall >= the threshold): an unlearned delay has no memory to lose.
    threshold = ctx.settings.recall_threshold
    trend = {}
    for cell in cells:
        ks = [
            v["kept_above_chance"] for k, v in numbers.items() if k.startswith(cell + "/") and v["dense"] >= threshold
        ]
        if len(ks) >= 2:
            trend[cell] = (
                all(a >= b for a, b in zip(ks, ks[1:])),
                ks[-1] < ks[0],
                all(a <= b for a, b in zip(ks, ks[1:])),
            )
    if not trend:
        verdict = "not testable"
    else:
        verdict = (
            "holds"
            if len(trend) == len(cells) and all(down and fell for down, fell, _ in trend.values())
            else "does not hold"
            if all(up for _, _, up in trend.values())
            else "depends"
        )
    reason = "kept fraction of the above-chance recall over ranks < N, by T: " + "; ".join(
        f"{k} {v['kept_above_chance']:.2f} (full {v['dense']:.3f}{'' if v['dense'] >= threshold else ', not learned'}, "
        f"r* {v['rank_within_1_point']})"
        for k, v in numbers.items()
    )
    untested = [c for c in cells if c not in trend]
    if untested:
        reason += f"; fewer than two learned delays, no say in the verdict: {', '.join(untested)}"
    body = (
        "Recall (mean ± std over seeds) of SVD-truncated models without fine-tuning, one model trained "
        "per delay T. *Kept* = the mean over the swept ranks r < N of (recall(r) − chance) / "
        "(recall(N) − chance), chance = 1/symbols: how much of the model's memory survives truncation. "
        "r* = the smallest swept rank within 1 point of full rank (N = none below N). Verdict: *holds* "
        "when the kept fraction falls as T grows, for every cell, over the delays whose full-rank recall "
        "reached the recall threshold (an unlearned delay has no memory to lose); a cell with fewer than "
        "two learned delays has no say (*depends* when only some cells can be judged).\n\n"
        + markdown_table(["cell", "T", "full-rank recall", "r* (1 point)", "recall at rank 1", "kept"], table)
    )
    return Section("R3", TITLES["R3"], CLAIMS["R3"], verdict, reason, body, [figure], numbers)


# ---- R4 -------------------------------------------------------------------------------------


def _recall_at_eps(result: dict, eps: float, family: str) -> float:
    if family == "gaussian":
        return float(
            np.mean([p["measured"] for p in result["points"] if p["family"] == "gaussian" and p["target_eps"] == eps])
        )
    # SVD: the lowest rank whose truncation error is at most eps (rank N has error 0).
    ok = [p for p in result["points"] if p["family"] == "svd" and p["eps"] <= eps + 1e-12]
    return min(ok, key=lambda p: p["rank"])["measured"]


def r4_summarize(ctx, done) -> Section:
    plt = _plt()
    s = ctx.settings
    groups = _by_cell_delay(done)
    cells = sorted({c for c, _ in groups})
    delays = sorted({t for _, t in groups})
    eps_grid = sorted(done[0][0]["epsilons"])
    numbers = {}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for cell in cells:
        dense_recall = [float(np.mean([r["dense"] for r in groups[(cell, t)]])) for t in delays]
        t0 = critical_delay(delays, dense_recall, s.recall_threshold)
        for family, style in (("gaussian", "o-"), ("svd", "s--")):
            t_star = []
            for eps in eps_grid:
                recall = [float(np.mean([_recall_at_eps(r, eps, family) for r in groups[(cell, t)]])) for t in delays]
                t_star.append(critical_delay(delays, recall, s.recall_threshold))
            numbers[f"{cell}/{family}"] = {"eps": eps_grid, "t_star": t_star, "t_star_unperturbed": t0}
            ax.plot(eps_grid, t_star, style, label=f"{cell}, {family}")
    ax.set_xscale("log")
    ax.set(
        xlabel="ε = ‖ΔW‖_F / ‖W‖_F",
        ylabel=f"T* (largest delay with recall ≥ {s.recall_threshold})",
        title="R4: critical delay against perturbation size",
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    figure = ctx.save_figure(fig, "r4_critical_delay")
    checks = [
        (all(a >= b for a, b in zip(v["t_star"], v["t_star"][1:])), v["t_star"][0] > v["t_star"][-1])
        for k, v in numbers.items()
        if k.endswith("/gaussian")
    ]
    verdict = (
        "holds" if all(m and d for m, d in checks) else "does not hold" if not any(m for m, _ in checks) else "depends"
    )
    reason = "; ".join(
        f"{k}: T*(ε) = " + ", ".join(f"{e:g}→{t:g}" for e, t in zip(v["eps"], v["t_star"])) for k, v in numbers.items()
    )
    rows = [[k, v["t_star_unperturbed"]] + v["t_star"] for k, v in numbers.items()]
    body = (
        f"T* is resolved only on the delay grid {delays} (0 = even the shortest delay fails). "
        "Gaussian: i.i.d. noise scaled per matrix to ε‖W‖_F (mean recall over seeds and noise draws); "
        "SVD: the lowest rank whose relative truncation error is ≤ ε. Verdict: *holds* when T* "
        "never rises and falls overall with ε (Gaussian family, every cell).\n\n"
        + markdown_table(["cell/family", "T* (ε=0)"] + [f"ε={e:g}" for e in eps_grid], rows)
    )
    return Section("R4", TITLES["R4"], CLAIMS["R4"], verdict, reason, body, [figure], numbers)


# ---- R5 -------------------------------------------------------------------------------------


def r5_summarize(ctx, done) -> Section:
    plt = _plt()
    groups = _by_cell_delay(done)
    cells = sorted({c for c, _ in groups})
    pts = [
        (c, t, p)
        for (c, t), results in groups.items()
        for r in results
        for p in r["points"]
        if p["family"] == "svd" and p["eps"] > EPS_ZERO
    ]
    # First order is meant for small ΔW: every perturbation family of the unit with 0 < ε ≤ SMALL_EPS.
    small_pts = [
        p for results in groups.values() for r in results for p in r["points"] if EPS_ZERO < p["eps"] <= SMALL_EPS
    ]
    # Information only (the verdict uses every truncation): the models that learned their delay.
    threshold = ctx.settings.recall_threshold
    learned_pts = [
        p
        for results in groups.values()
        for r in results
        if r["dense"] >= threshold
        for p in r["points"]
        if p["family"] == "svd" and p["eps"] > EPS_ZERO
    ]
    numbers = {}
    small = f"every family, ε ≤ {SMALL_EPS:g}"
    learned = f"learned models only (full-rank recall ≥ {threshold:g})"
    for scope in cells + ["all", learned, small]:
        sel = (
            small_pts
            if scope == small
            else learned_pts
            if scope == learned
            else [p for c, _, p in pts if scope in ("all", c)]
        )
        dm, dp = [p["drift_measured"] for p in sel], [p["drift_predicted"] for p in sel]
        numbers[scope] = {
            "points": len(sel),
            "pearson_drift": pearson(dp, dm),
            "pearson_log_drift": pearson(np.log10(np.maximum(dp, 1e-12)), np.log10(np.maximum(dm, 1e-12))),
            "pearson_recall": pearson([p["predicted"] for p in sel], [p["measured"] for p in sel]),
            "pearson_drift_linear": pearson([p["drift_predicted_linear"] for p in sel], dm),
            "pearson_recall_linear": pearson([p["predicted_linear"] for p in sel], [p["measured"] for p in sel]),
            "mean_abs_recall_error": float(np.mean([abs(p["predicted"] - p["measured"]) for p in sel]))
            if sel
            else float("nan"),
        }
    fig, axes = plt.subplots(1, 2 + len(cells), figsize=(4.6 * (2 + len(cells)), 4))
    delays = sorted({t for _, t in groups})
    colors = {t: f"C{i}" for i, t in enumerate(delays)}
    for c, t, p in pts:
        axes[0].scatter(
            p["drift_measured"], p["drift_predicted"], s=10, color=colors[t], marker="o" if c == cells[0] else "^"
        )
    lim = [min(p["drift_measured"] for _, _, p in pts), max(p["drift_measured"] for _, _, p in pts)]
    axes[0].plot(lim, lim, "k:", lw=0.8)
    from matplotlib.ticker import NullFormatter

    axes[0].xaxis.set_minor_formatter(NullFormatter())
    axes[0].yaxis.set_minor_formatter(NullFormatter())
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="measured RMS drift ‖h' − h‖",
        ylabel="predicted (first order)",
        title=f"R5: drift, r = {numbers['all']['pearson_drift']:.3f}",
    )
    for c, t, p in pts:
        axes[1].scatter(p["measured"], p["predicted"], s=10, color=colors[t], marker="o" if c == cells[0] else "^")
    axes[1].plot([0, 1], [0, 1], "k:", lw=0.8)
    axes[1].set(
        xlabel="measured recall",
        ylabel="predicted recall",
        title=f"R5: recall, r = {numbers['all']['pearson_recall']:.3f}",
    )
    for ax, cell in zip(axes[2:], cells):
        for (c, t), results in groups.items():
            if c != cell:
                continue
            ranks, m, _ = _svd_curve(results, "measured")
            _, pr, _ = _svd_curve(results, "predicted")
            ax.plot(ranks, m, "o-", color=colors[t], label=f"T={t} measured")
            ax.plot(ranks, pr, "x--", color=colors[t], label=f"T={t} predicted")
        ax.set_xscale("log", base=2)
        ax.set(xlabel="rank r", ylabel="recall", title=f"R5: {cell}, predicted vs measured")
        ax.legend(fontsize=6)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    figures = [ctx.save_figure(fig, "r5_predicted_vs_measured")]
    figures.append(_drift_over_time(ctx, groups))
    a, b = numbers["all"], numbers[small]

    def passes(v):
        return v["pearson_drift"] >= 0.95 and v["pearson_recall"] >= 0.9

    verdict = "holds" if passes(a) else "depends" if passes(b) else "does not hold"
    reason = (
        f"Pearson r over ranks < N, delays, cells and seeds ({a['points']} points): drift "
        f"{a['pearson_drift']:.3f} (log-log {a['pearson_log_drift']:.3f}), recall {a['pearson_recall']:.3f} "
        f"(mean |error| {a['mean_abs_recall_error']:.3f}); "
        f"every family at ε ≤ {SMALL_EPS:g} ({b['points']} points): "
        f"drift {b['pearson_drift']:.3f}, recall {b['pearson_recall']:.3f}; "
        f"plain linear prediction, all truncations: drift {a['pearson_drift_linear']:.3f}, "
        f"recall {a['pearson_recall_linear']:.3f}"
    )
    body = (
        "Predicted = the first-order model `stapes perturb` uses: the drift linearised along the unperturbed "
        "trajectory, the predicted state h + e projected onto the state box [−1, 1]^N (both cells keep "
        "every state component inside it), then the exact readout. The *linear* columns give the plain "
        "h + e without the projection. Measured = the truncated graph run in float64. Drift = RMS over "
        "time of the batch-RMS ‖e_t‖. "
        "Verdict: *holds* when r(drift) ≥ 0.95 (issue 3's bar) and r(recall) ≥ 0.9 over all truncations; "
        f"*depends* when that is met only for small perturbations (every family — SVD, Gaussian, "
        f"quantization — at ε ≤ {SMALL_EPS:g}, where a first-order model is meant to work); *does not hold* "
        "otherwise. The scopes by cell, *all* and *learned models only* are the SVD truncations at ranks < N; "
        "the last is shown for information, the verdict counts every model.\n\n"
        + markdown_table(
            [
                "scope",
                "points",
                "r drift",
                "r log drift",
                "r recall",
                "mean |recall error|",
                "r drift (linear)",
                "r recall (linear)",
            ],
            [
                [
                    k,
                    v["points"],
                    v["pearson_drift"],
                    v["pearson_log_drift"],
                    v["pearson_recall"],
                    v["mean_abs_recall_error"],
                    v["pearson_drift_linear"],
                    v["pearson_recall_linear"],
                ]
                for k, v in numbers.items()
            ],
        )
    )
    return Section("R5", TITLES["R5"], CLAIMS["R5"], verdict, reason, body, figures, numbers)


SMALL_EPS = 0.2


def _drift_over_time(ctx, groups) -> str:
    """Drift against time for the longest delay's first model, a few ranks: measured vs predicted."""
    plt = _plt()
    (cell, t), results = max(groups.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    svd = [p for p in results[0]["points"] if p["family"] == "svd" and p["eps"] > EPS_ZERO]
    chosen = svd[:: max(1, len(svd) // 4)]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for i, p in enumerate(chosen):
        ax.plot(p["drift_measured_t"], color=f"C{i}", label=f"r={p['rank']} measured")
        ax.plot(p["drift_predicted_t"], "--", color=f"C{i}", label=f"r={p['rank']} predicted")
    ax.set_yscale("log")
    ax.set(xlabel="time step", ylabel="RMS drift ‖e_t‖", title=f"R5: drift over time, {cell}, T={t}")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return ctx.save_figure(fig, "r5_drift_over_time")


TITLES = {
    "R3": "Memorization: recall against rank and delay",
    "R4": "Critical delay T* against ε",
    "R5": "Perturbation model: predicted vs measured",
}
CLAIMS = {
    "R3": "Compression degrades short-term memory: recall falls as the rank falls, and longer delays T need more rank.",
    "R4": "The critical delay T* (recall below a threshold) shrinks as ε = ‖ΔW‖/‖W‖ grows.",
    "R5": "A first-order perturbation model of the recurrent parameters predicts the degradation on a "
    "noiseless memorization experiment.",
}


def _memory_experiment(exp_id: str, summarize) -> Experiment:
    """R3-R5 summarize the same perturbation units, computed once per model (and shared with R6)."""
    return Experiment(
        exp_id,
        TITLES[exp_id],
        CLAIMS[exp_id],
        memory_units,
        compute_perturbations,
        summarize,
        cache_kind="perturb",
        compute_version=COMPUTE_VERSION,
    )


R3 = _memory_experiment("R3", r3_summarize)
R4 = _memory_experiment("R4", r4_summarize)
R5 = _memory_experiment("R5", r5_summarize)
