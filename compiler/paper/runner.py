"""Run the selected experiments: plan every unit, serve finished ones from the cache, show
progress, then let each experiment summarize its units and write the report."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Callable

from ..fsutil import atomic_write_bytes
from .cache import RunCache
from .registry import Experiment, Section, Unavailable, load_all, missing_requirements
from .settings import Settings


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
    from ..errors import UserError
    registry = load_all()
    if not only:
        return list(registry.values())
    unknown = [e for e in only if e not in registry]
    if unknown:
        raise UserError(f"unknown experiment(s) {', '.join(unknown)} (known: {', '.join(registry)})")
    return [registry[e] for e in registry if e in only]


def run_suite(out: Path, settings: Settings, only: list[str] | None = None,
              progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) the suite into `out`; write report.md, results.json and figures/.
    Returns the results dictionary that results.json holds."""
    from tqdm import tqdm

    from .report import write_report

    t0 = time.time()
    ctx = Context(out, settings)
    experiments = select(only)
    blocked = {e.id: missing_requirements(e.requires) for e in experiments}
    plan = [(e, u) for e in experiments if not blocked[e.id] for u in e.units(settings)]
    done: dict[str, list[tuple[dict, dict]]] = {e.id: [] for e in experiments}
    failed: dict[str, str] = {e.id: "needs " + ", ".join(m) for e in experiments
                              if (m := blocked[e.id])}
    errors: dict[str, str] = {}
    with tqdm(total=len(plan), desc="stapes paper", unit="run", disable=not progress) as bar:
        for exp, unit in plan:
            if exp.id not in failed and exp.id not in errors:
                bar.set_postfix_str(exp.id)
                try:
                    key = {"unit": unit, "compute_version": exp.compute_version}
                    result = ctx.cache.result(exp.kind, key, lambda: exp.compute(ctx, unit))
                    done[exp.id].append((unit, result))
                except Unavailable as e:
                    failed[exp.id] = str(e)
                except Exception as e:  # noqa: BLE001 - one broken experiment must not sink the others
                    errors[exp.id] = _describe(e)
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
                errors[exp.id] = _describe(e)
        sections.append(Section(exp.id, exp.title, exp.claim, "failed", f"failed: {errors[exp.id]}",
                                body=f"**Failed: {errors[exp.id]}.**\n", numbers={"failed": errors[exp.id]}))
    results = write_report(ctx, sections, elapsed=time.time() - t0)
    results["failed"] = sorted(errors)
    st = ctx.cache.stats
    log(f"stapes paper: {len(plan)} runs ({st['results_cached']} from the cache, {st['results_computed']} computed, "
        f"{st['models_trained']} models trained); wrote {out / 'report.md'}")
    return results


def _describe(e: Exception) -> str:
    """One line naming the exception and where it was raised (the report must say what broke)."""
    import traceback
    frame = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
    return f"{type(e).__name__}: {e}{where}".replace("\n", " ")
