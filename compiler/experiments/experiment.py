"""What an experiment is: each claim of the paper is one `Experiment`, reported as one `Section`.

An experiment splits its work into *units* (plain JSON-able parameter dicts) so the runner can
cache each one, show progress over all of them and resume after an interruption; `summarize`
turns the finished units into one report `Section` with figures and a verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stapes.experiments.context import Context
    from stapes.experiments.settings import Settings

VERDICTS = ("holds", "does not hold", "depends", "not testable", "failed")


@dataclass
class Section:
    """One experiment's part of the report."""

    id: str
    title: str
    claim: str
    verdict: str  # one of VERDICTS
    reason: str  # one line: the measured figure behind the verdict
    body: str = ""  # Markdown (tables, notes)
    figures: list[str] = field(default_factory=list)  # paths relative to the report folder
    numbers: dict = field(default_factory=dict)  # every number, for results.json

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")


@dataclass(frozen=True)
class Experiment:
    id: str  # "R1", ...
    title: str
    claim: str  # the paper's claim, in one sentence
    units: Callable[[Settings], list[dict]]
    compute: Callable[[Context, dict], dict]
    summarize: Callable[[Context, list[tuple[dict, dict]]], Section]
    cache_kind: str = ""  # experiments sharing a computation share its cache
    compute_version: int = 1  # bump when `compute` changes what it returns

    @property
    def kind(self) -> str:
        return self.cache_kind or self.id

    def unit_key(self, unit: dict) -> dict:
        """What a unit's cached result is keyed by: its parameters and the compute version."""
        return {"unit": unit, "compute_version": self.compute_version}

    def result(self, ctx: Context, unit: dict) -> dict:
        """The cached result of one unit, computing it first if the cache lacks it."""
        return ctx.cache.result(self.kind, self.unit_key(unit), lambda: self.compute(ctx, unit))
