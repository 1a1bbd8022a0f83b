"""The experiment registry: each claim of the paper is one `Experiment`.

An experiment splits its work into *units* (plain JSON-able parameter dicts) so the runner can
cache each one, show progress over all of them and resume after an interruption; `summarize`
turns the finished units into one report `Section` with figures and a verdict.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from stapes.experiments.runner import Context
    from stapes.experiments.settings import Settings

VERDICTS = ("holds", "does not hold", "depends", "not testable", "not run", "failed")


class Unavailable(Exception):
    """An API this experiment needs is not in the tree yet: the report says "not run: needs X"."""


@dataclass
class Section:
    """One experiment's part of the report."""

    id: str
    title: str
    claim: str
    verdict: str                      # one of VERDICTS
    reason: str                       # one line: the measured figure behind the verdict
    body: str = ""                    # Markdown (tables, notes)
    figures: list[str] = field(default_factory=list)   # paths relative to the report folder
    numbers: dict = field(default_factory=dict)        # every number, for results.json

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")


@dataclass(frozen=True)
class Experiment:
    id: str                                   # "R1", ...
    title: str
    claim: str                                # the paper's claim, as the issue states it
    requires: tuple[str, ...]                 # "module:attribute (owner)" the experiment calls
    units: Callable[["Settings"], list[dict]]
    compute: Callable[["Context", dict], dict]
    summarize: Callable[["Context", list[tuple[dict, dict]]], Section]
    cache_kind: str = ""                      # experiments sharing a computation share its cache
    compute_version: int = 1                  # bump when `compute` changes what it returns

    @property
    def kind(self) -> str:
        return self.cache_kind or self.id


EXPERIMENTS: dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    if exp.id in EXPERIMENTS:
        raise ValueError(f"experiment {exp.id} registered twice")
    EXPERIMENTS[exp.id] = exp
    return exp


def missing_requirements(requires: tuple[str, ...]) -> list[str]:
    """The entries of `requires` ("stapes.x:name (owner)") that cannot be imported right now."""
    missing = []
    for req in requires:
        target = req.split(" ", 1)[0]
        module, _, attr = target.partition(":")
        try:
            mod = importlib.import_module(module)
        except Exception:  # noqa: BLE001 - absent or broken module: either way not usable
            missing.append(req)
            continue
        if attr and not hasattr(mod, attr):
            missing.append(req)
    return missing


def load_all() -> dict[str, Experiment]:
    """Import the experiment modules (they register themselves) and return the registry."""
    from stapes.experiments import exp_cost
    from stapes.experiments import exp_memory
    from stapes.experiments import exp_onthefly
    from stapes.experiments import exp_perturb
    from stapes.experiments import exp_rank  # noqa: F401
    return dict(sorted(EXPERIMENTS.items(), key=lambda kv: int(kv[0][1:]) if kv[0][1:].isdigit() else 99))
