"""Fill the suite's cache from worker processes (`stapes paper --workers N`).

Two phases: first every model the planned units need (units share models, so training them first
means no two workers ever train the same one), then the units themselves. Every cache entry is
written atomically under a content key, so the workers need no coordination; the runner's
sequential pass afterwards only reads. A unit or model that fails in a worker is simply left out of
the cache: the sequential pass computes it again and reports its error the usual way.

Stopping (Ctrl-C or SIGTERM in the parent, or the parent dying): every worker gets SIGTERM, which
it turns into SystemExit, so the temporary folder it was writing is removed on the way out; the
parent joins every worker before it returns, and a worker whose parent died stops by itself.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
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
        _stop_workers(pool)  # Ctrl-C / SIGTERM: stop the workers now; every cache entry is atomic
        raise
    finally:
        pool.join()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return {**done, "failures": failures}


def _stop_workers(pool, grace: float = 10.0) -> None:
    """SIGTERM each worker first, so it removes its temporary folder and releases the task
    queue's lock on the way out (Pool.terminate would wait for that lock, held by an idle worker,
    before it signals anyone), then terminate the pool; a worker still alive after `grace`
    seconds is killed."""
    workers = list(getattr(pool, "_pool", ()))
    for w in workers:
        if w.exitcode is None:
            w.terminate()
    deadline = time.monotonic() + grace
    for w in workers:
        w.join(max(0.0, deadline - time.monotonic()))
        if w.exitcode is None:
            w.kill()
    pool.terminate()


def _run_job(job: tuple) -> str | None:
    fn, *args = job
    try:
        return fn(*args)
    except SystemExit as e:  # SIGTERM (see _exit_on_sigterm): the job has cleaned up while unwinding,
        os._exit(e.code if isinstance(e.code, int) else 1)  # so skip the second-long interpreter teardown


def _init_worker() -> None:
    import threading

    import torch
    from tqdm import tqdm

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it terminates the pool)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _watch_parent()
    # tqdm's default lock holds a multiprocessing semaphore, which a terminated worker would leak
    # (and the resource tracker would warn about); the worker's bars never leave the process.
    tqdm.set_lock(threading.RLock())
    torch.set_num_threads(1)


def _exit_on_sigterm(signum, frame) -> None:
    """The first SIGTERM becomes SystemExit, which unwinds the job: the temporary cache folder it
    was writing is removed. Later ones are ignored so that cleanup is not cut short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def _watch_parent() -> None:
    """Stop this worker (as SIGTERM would) as soon as the parent process is gone, however it
    ended: a worker never outlives the `stapes paper` that started it."""
    import threading

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    main = threading.main_thread().ident

    def watch() -> None:
        parent.join()
        signal.pthread_kill(main, signal.SIGTERM)  # to the main thread: it interrupts a blocking read

    threading.Thread(target=watch, name="stapes-parent-watch", daemon=True).start()


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
