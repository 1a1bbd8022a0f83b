"""Fill the suite's cache from worker processes (`stapes paper --workers N`).

Two phases: first every model the planned units need (units share models, so training them first
means no two workers ever train the same one), then the units themselves. Every cache entry is
written atomically under a content key, so the workers need no coordination; the runner's
sequential pass afterwards only reads. A unit or model that fails in a worker is simply left out of
the cache: the sequential pass computes it again and reports its error the usual way.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from stapes.experiments.cache import RunCache
from stapes.experiments.context import Context, describe
from stapes.experiments.registry import EXPERIMENTS
from stapes.experiments.settings import Settings

# One thread per worker: N workers on N cores, not N × N threads fighting for them.
_SINGLE_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def prefill(out: Path, settings: Settings, plan: list, workers: int, progress: bool = True) -> dict:
    """Compute, in `workers` processes, every model and unit result of `plan` (a list of
    (experiment, unit)) that the cache under `out` lacks. Returns how many models and runs were
    computed, and the failures seen."""
    from tqdm import tqdm

    cache = RunCache(out / "cache")
    models, seen = [], set()
    for _, unit in plan:
        spec = unit["model"]
        path = cache.model_path("model", spec)
        if path not in seen and not cache.has_model("model", spec):
            seen.add(path)
            models.append(spec)
    units, pending = [], set()
    for exp, unit in plan:  # experiments that share a computation (R3-R5) share its cache entry
        path = cache.result_path(exp.kind, exp.unit_key(unit))
        if path not in pending and not path.is_file():
            pending.add(path)
            units.append((exp.id, unit))
    failures: list[str] = []
    done = {"models": 0, "runs": 0}
    saved = {name: os.environ.get(name) for name in _SINGLE_THREAD_ENV}
    os.environ.update({name: "1" for name in _SINGLE_THREAD_ENV})  # inherited by the spawned workers
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker)
    try:
        for phase, jobs in (
            ("models", [(_train_one, str(cache.root), spec) for spec in models]),
            ("runs", [(_compute_one, str(out), settings, exp_id, unit) for exp_id, unit in units]),
        ):
            results = pool.imap_unordered(_run_job, jobs)
            for error in tqdm(
                results,
                total=len(jobs),
                desc=f"stapes paper: {phase}",
                unit=phase[:-1],
                disable=not progress or not jobs,
            ):
                if error is not None:
                    failures.append(error)
                else:
                    done[phase] += 1
        pool.close()
    except BaseException:
        pool.terminate()  # Ctrl-C: stop the workers now; every cache entry is atomic, so none is half-written
        raise
    finally:
        pool.join()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return {**done, "failures": failures}


def _run_job(job: tuple) -> str | None:
    fn, *args = job
    return fn(*args)


def _init_worker() -> None:
    import signal
    import threading

    import torch
    from tqdm import tqdm

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it terminates the pool)
    # tqdm's default lock holds a multiprocessing semaphore, which a terminated worker would leak
    # (and the resource tracker would warn about); the worker's bars never leave the process.
    tqdm.set_lock(threading.RLock())
    torch.set_num_threads(1)


def _train_one(cache_root: str, spec: dict) -> str | None:
    from stapes.experiments.zoo import train_model

    try:
        train_model(RunCache(cache_root), spec)
    except Exception as e:  # noqa: BLE001 - reported by the sequential pass, which retries it
        return f"model {spec['task']['name']}/{spec['cell']}/N={spec['hidden']}/seed {spec['seed']}: {describe(e)}"
    return None


def _compute_one(out: str, settings: Settings, exp_id: str, unit: dict) -> str | None:
    exp = next(e for e in EXPERIMENTS if e.id == exp_id)
    ctx = Context(Path(out), settings)
    try:
        exp.result(ctx, unit)
    except Exception as e:  # noqa: BLE001
        return f"{exp_id}: {describe(e)}"
    return None
