"""Small statistics the report needs: mean ± std over seeds, Pearson r, T*."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; NaN when either side is constant or there are < 3 points."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.size < 3 or a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def fmt_r(r: float, digits: int = 2) -> str:
    """A correlation for a report: the number, or why there is none (NaN from :func:`pearson`)."""
    return f"{r:.{digits}f}" if math.isfinite(r) else "n/a (< 3 points or a constant side)"


def critical_delay(delays: Sequence[int], recall: Sequence[float], threshold: float) -> float:
    """T*: the largest delay such that recall >= threshold at it and at every shorter delay.
    0 when even the shortest delay fails; inf is never returned (capped at the largest T)."""
    t_star = 0.0
    for t, r in sorted(zip(delays, recall)):
        if r < threshold:
            break
        t_star = float(t)
    return t_star


def chance_level(task: dict) -> float:
    """The metric of guessing, for the tasks whose chance level is plain (1/classes); 0 otherwise."""
    for key in ("symbols", "classes"):
        if key in task:
            return 1.0 / task[key]
    if task.get("name") == "kws":  # one of the keywords; the task's config does not list them
        from stapes.tasks.audio.speech import KEYWORDS

        return 1.0 / len(KEYWORDS)
    return 0.0


LEARNED_SHARE = 0.25  # of the way from chance to a perfect metric


def learned(dense: float, task: dict, metric_name: str, recall_threshold: float) -> bool:
    """Whether a full-rank model learned its task well enough for its rank tolerance to mean
    anything (a model at chance "tolerates" any rank). Memorization, noiseless: recall at least
    the profile's recall threshold (the bar T* uses). Metrics in dB (improvement over the noisy
    input): above 0. Other fractions: at least LEARNED_SHARE of the way from chance to 1."""
    if task.get("name") == "memorization":
        return dense >= recall_threshold
    if metric_name.endswith("_db"):
        return dense > 0
    chance = chance_level(task)
    return dense - chance >= LEARNED_SHARE * (1 - chance)


def kept_above_chance(ranks: Sequence[int], metric: Sequence[float], dense: float, chance: float) -> float:
    """Mean over the ranks below the largest of (metric − chance) / (dense − chance): the share of the
    full model's above-chance performance that survives truncation (NaN if dense is at chance)."""
    top = max(ranks)
    low = [(m - chance) / (dense - chance) for r, m in zip(ranks, metric) if r < top]
    return float(np.mean(low)) if low and dense > chance else math.nan


def fmt_ms(mean: float, std: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
