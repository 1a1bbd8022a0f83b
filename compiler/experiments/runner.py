"""Run the selected experiments: plan every unit, serve finished ones from the cache, show
progress, then let each experiment summarize its units and write the report."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Callable

from stapes.fsutil import atomic_write_bytes
from stapes.experiments.cache import RunCache
from stapes.experiments.registry import Experiment, Section, Unavailable, load_all, missing_requirements
from stapes.experiments.settings import Settings


class Context:
    """What an experiment's `compute` and `summarize` get: settings, cache, figure output."""

    def __init__(self, out: Path, settings: Settings):
        self.out = Path(out)
        self.settings = settings
        self.cache = RunCache(self.out / "cache")
        self.figures_dir = self.out / "figures"

    def save_figure(self, fig, name: str) -> str:
        """Save a matplotlib figure as figures/<name>.png (atomically); return its report path."""
        import matplotlib.pyplot as plt
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        atomic_write_bytes(self.figures_dir / f"{name}.png", buf.getvalue())
        return f"figures/{name}.png"


def not_run(exp: Experiment, why: str) -> Section:
    return Section(exp.id, exp.title, exp.claim, "not run", f"not run: {why}",
                   body=f"**Not run: {why}.**\n", numbers={"not_run": why})


def select(only: list[str] | None) -> list[Experiment]:
    from stapes.errors import UserError
    registry = load_all()
    if not only:
        return list(registry.values())
    unknown = [e for e in only if e not in registry]
    if unknown:
        raise UserError(f"unknown experiment(s) {', '.join(unknown)} (known: {', '.join(registry)})")
    return [registry[e] for e in registry if e in only]


def run_suite(out: Path, settings: Settings, only: list[str] | None = None,
              progress: bool = True, log: Callable[[str], None] = print, workers: int = 1) -> dict:
    """Run (or resume) the suite into `out`; write report.md, results.json and figures/.
    With `workers` > 1, models and runs are first computed in that many processes.
    Returns the results dictionary that results.json holds."""
    from tqdm import tqdm

    from stapes.experiments.report import write_report

    t0 = time.time()
    ctx = Context(out, settings)
    experiments = select(only)
    blocked = {e.id: missing_requirements(e.requires) for e in experiments}
    plan = [(e, u) for e in experiments if not blocked[e.id] for u in e.units(settings)]
    done: dict[str, list[tuple[dict, dict]]] = {e.id: [] for e in experiments}
    failed: dict[str, str] = {e.id: "needs " + ", ".join(m) for e in experiments
                              if (m := blocked[e.id])}
    errors: dict[str, str] = {}
    in_workers = {"models": 0, "runs": 0}
    if workers > 1 and plan:
        from stapes.experiments.parallel import prefill
        in_workers = prefill(ctx.out, settings, plan, workers, progress)
        for failure in in_workers["failures"]:
            log(f"stapes paper: failed in a worker, retried here: {failure}")
    with tqdm(total=len(plan), desc="stapes paper", unit="run", disable=not progress) as bar:
        for exp, unit in plan:
            if exp.id not in failed and exp.id not in errors:
                bar.set_postfix_str(exp.id)
                try:
                    result = ctx.cache.result(exp.kind, unit_key(exp, unit), lambda: exp.compute(ctx, unit))
                    done[exp.id].append((unit, result))
                except Unavailable as e:
                    failed[exp.id] = str(e)
                except Exception as e:  # noqa: BLE001 - one broken experiment must not sink the others
                    errors[exp.id] = describe(e)
            bar.update()
    sections = []
    for exp in experiments:
        if exp.id in failed:
            sections.append(not_run(exp, failed[exp.id]))
            continue
        if exp.id not in errors:
            try:
                sections.append(exp.summarize(ctx, done[exp.id]))
                continue
            except Unavailable as e:
                sections.append(not_run(exp, str(e)))
                continue
            except Exception as e:  # noqa: BLE001
                errors[exp.id] = describe(e)
        sections.append(Section(exp.id, exp.title, exp.claim, "failed", f"failed: {errors[exp.id]}",
                                body=f"**Failed: {errors[exp.id]}.**\n", numbers={"failed": errors[exp.id]}))
    st = ctx.cache.stats   # what the workers computed, this pass read back from the cache
    st["results_cached"] -= in_workers["runs"]
    st["results_computed"] += in_workers["runs"]
    st["models_trained"] += in_workers["models"]
    results = write_report(ctx, sections, elapsed=time.time() - t0)
    results["failed"] = sorted(errors)
    log(f"stapes paper: {len(plan)} runs ({st['results_cached']} from the cache, {st['results_computed']} computed, "
        f"{st['models_trained']} models trained); wrote {out / 'report.md'}")
    return results


def unit_key(exp: Experiment, unit: dict) -> dict:
    """What a unit's cached result is keyed by: its parameters and its experiment's compute version."""
    return {"unit": unit, "compute_version": exp.compute_version}


def describe(e: Exception) -> str:
    """One line naming the exception and where it was raised (the report must say what broke)."""
    import traceback
    frame = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
    return f"{type(e).__name__}: {e}{where}".replace("\n", " ")
