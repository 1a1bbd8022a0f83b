"""Run the selected experiments: plan every unit, serve finished ones from the cache, show
progress, then let each experiment summarize its units and write the report."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from stapes.experiments.context import Context, describe
from stapes.experiments.experiment import Experiment, Section
from stapes.experiments.registry import EXPERIMENTS
from stapes.experiments.settings import Settings
from stapes.fsutil import remove_stale


def select(only: list[str] | None) -> list[Experiment]:
    from stapes.errors import UserError

    registry = {e.id: e for e in EXPERIMENTS}
    if not only:
        return list(registry.values())
    unknown = [e for e in only if e not in registry]
    if unknown:
        raise UserError(f"unknown experiment(s) {', '.join(unknown)} (known: {', '.join(registry)})")
    return [registry[e] for e in registry if e in only]


def run_suite(
    out: Path,
    settings: Settings,
    only: list[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    workers: int = 1,
) -> dict:
    """Run (or resume) the suite into `out`; write report.md, results.json and figures/.
    With `workers` > 1, models and runs are first computed in that many processes.
    Returns the results dictionary that results.json holds."""
    from tqdm import tqdm

    from stapes.experiments.report import write_report

    t0 = time.time()
    ctx = Context(out, settings)
    for folder in (ctx.out, ctx.figures_dir, *ctx.cache.folders()):
        remove_stale(folder)  # what a run that was killed left half-written
    experiments = select(only)
    plan = [(e, u) for e in experiments for u in e.units(settings)]
    done: dict[str, list[tuple[dict, dict]]] = {e.id: [] for e in experiments}
    errors: dict[str, str] = {}
    in_workers = {"models": 0, "runs": 0}
    if workers > 1 and plan:
        from stapes.experiments.parallel import prefill

        in_workers = prefill(ctx.out, settings, plan, workers, progress)
        for failure in in_workers["failures"]:
            log(f"stapes paper: failed in a worker, retried here: {failure}")
    with tqdm(total=len(plan), desc="stapes paper", unit="run", disable=not progress) as bar:
        for exp, unit in plan:
            if exp.id not in errors:
                bar.set_postfix_str(exp.id)
                try:
                    done[exp.id].append((unit, exp.result(ctx, unit)))
                except Exception as e:  # noqa: BLE001 - one broken experiment must not sink the others
                    errors[exp.id] = describe(e)
            bar.update()
    sections = []
    for exp in experiments:
        if exp.id not in errors:
            try:
                sections.append(exp.summarize(ctx, done[exp.id]))
                continue
            except Exception as e:  # noqa: BLE001
                errors[exp.id] = describe(e)
        sections.append(
            Section(
                exp.id,
                exp.title,
                exp.claim,
                "failed",
                f"failed: {errors[exp.id]}",
                body=f"**Failed: {errors[exp.id]}.**\n",
                numbers={"failed": errors[exp.id]},
            )
        )
    st = ctx.cache.stats  # what the workers computed, this pass read back from the cache
    st["results_cached"] -= in_workers["runs"]
    st["results_computed"] += in_workers["runs"]
    st["models_trained"] += in_workers["models"]
    results = write_report(ctx, sections, elapsed=time.time() - t0)
    results["failed"] = sorted(errors)
    log(
        f"stapes paper: {len(plan)} runs ({st['results_cached']} from the cache, {st['results_computed']} computed, "
        f"{st['models_trained']} models trained); wrote {out / 'report.md'}"
    )
    return results
