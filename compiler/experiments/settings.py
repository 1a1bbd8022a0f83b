"""Suite settings: one named profile per budget (tiny for the test, quick, medium, full).

Every number an experiment uses comes from here, and the report prints the profile it ran with,
so a figure can always be traced to its settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    name: str
    hidden_sizes: tuple[int, ...]  # N values for the rank-tolerance study (R1)
    cells: tuple[str, ...]  # "rnn", "mgu"
    seeds: int  # independent training seeds per configuration
    r1_tasks: tuple[str, ...]  # tasks of R1 (plus the coherence sweep of R2)
    train_steps: int  # optimiser steps per trained model
    batch_size: int
    learning_rate: float
    finetune_steps: int  # short fine-tuning of the factors (R1 "with fine-tuning")
    eval_sequences: int  # test sequences per evaluation
    memo_delay: int  # the memorization delay used in R1/R2/R6/R7
    delays: tuple[int, ...]  # R3-R5 delays T
    memo_hidden: int  # N of the memorization models of R3-R6
    holds: tuple[int, ...]  # R2 coherence knob: each symbol held for k steps
    epsilons: tuple[float, ...]  # R4/R6 relative perturbation sizes ||dW||/||W||
    recall_threshold: float  # R4: T* is the largest T with recall >= this
    rank_points: int  # ranks per sweep (geometric grid from 1 to N, N included)
    quant_ranks: int  # R7: fixed-point rows at this many chosen ranks
    # Audio models (vad, denoise, kws) train on 400-frame clips: their own, smaller budget.
    audio_train_steps: int = 0  # optimiser steps (0: train_steps)
    audio_batch: int = 0  # batch size (0: batch_size)
    audio_train_frames: int = 0  # train on random crops of this many frames (0: whole clips)
    memo_target: float | None = None  # stop training a memorization model once its validation recall reaches this
    memo_train_steps: int = 0  # optimiser steps for memorization models (0: train_steps)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PROFILES: dict[str, Settings] = {
    # Seconds: only proves the suite runs end to end (the test's profile); numbers mean little.
    "tiny": Settings(
        name="tiny",
        hidden_sizes=(8,),
        cells=("rnn",),
        seeds=1,
        r1_tasks=("memorization",),
        train_steps=30,
        batch_size=16,
        learning_rate=1e-2,
        finetune_steps=5,
        eval_sequences=32,
        memo_delay=4,
        delays=(2, 4),
        memo_hidden=8,
        holds=(1, 2),
        epsilons=(0.05, 0.5),
        recall_threshold=0.9,
        rank_points=3,
        quant_ranks=1,
    ),
    # A few minutes on one core (measured: 2 min 20 s on the shared machine, 24 models).
    "quick": Settings(
        name="quick",
        hidden_sizes=(16,),
        cells=("rnn", "mgu"),
        seeds=2,
        r1_tasks=("memorization", "coherent"),
        train_steps=800,
        batch_size=32,
        learning_rate=1e-2,
        finetune_steps=30,
        eval_sequences=128,
        memo_delay=10,
        delays=(10, 20),
        memo_hidden=16,
        holds=(1, 2, 4),
        epsilons=(0.02, 0.05, 0.1, 0.2, 0.5),
        recall_threshold=0.9,
        rank_points=5,
        quant_ranks=2,
    ),
    # The committed docs/paper report: about 40 minutes on two processes of a heavily shared 2-core machine.
    "medium": Settings(
        name="medium",
        hidden_sizes=(32,),
        cells=("rnn", "mgu"),
        seeds=3,
        r1_tasks=("memorization", "coherent"),
        train_steps=1200,
        batch_size=64,
        learning_rate=5e-3,
        finetune_steps=100,
        eval_sequences=256,
        memo_delay=10,
        delays=(10, 20, 50),
        memo_hidden=32,
        holds=(1, 2, 4, 8),
        epsilons=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
        recall_threshold=0.9,
        rank_points=7,
        quant_ranks=3,
    ),
    # The paper-scale settings: N in {64, 128}, T up to 100, audio tasks, 3 seeds. Budgeted to run in about
    # an hour with `--workers 2` on a 2-core machine (docs/paper.md gives the measured time).
    "full": Settings(
        name="full",
        hidden_sizes=(64, 128),
        cells=("rnn", "mgu"),
        seeds=3,
        r1_tasks=("memorization", "coherent", "vad", "denoise", "kws"),
        train_steps=3000,
        batch_size=64,
        learning_rate=5e-3,
        finetune_steps=100,
        eval_sequences=512,
        memo_delay=20,
        delays=(10, 20, 50, 100),
        memo_hidden=64,
        holds=(1, 2, 4, 8),
        epsilons=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
        recall_threshold=0.9,
        rank_points=7,
        quant_ranks=3,
        audio_train_steps=600,
        audio_batch=16,
        audio_train_frames=100,
        memo_target=1.0,
        memo_train_steps=6000,
    ),
}


def rank_grid(n: int, points: int) -> list[int]:
    """About `points` ranks from 1 to n, geometric (low ranks matter most), always ending at n."""
    if points <= 1:
        return [n]
    ranks = {max(1, round(n ** (i / (points - 1)))) for i in range(points)}
    return sorted(ranks | {n})


# What each profile costs on a 2-core machine (measured; printed before a run starts).
PROFILE_TIME = {
    "tiny": "seconds",
    "quick": "about 3 minutes on one core",
    "medium": "about 40 minutes with --workers 2",
    "full": "about an hour with --workers 2 (2 hours of CPU)",
}


def profile(name: str, seeds: int | None = None) -> Settings:
    from stapes.errors import UserError

    if name not in PROFILES:
        raise UserError(f"unknown profile {name!r} (choose from {', '.join(PROFILES)})")
    s = PROFILES[name]
    if seeds is not None:
        if seeds < 1:
            raise UserError("--seeds must be at least 1")
        s = dataclasses.replace(s, seeds=seeds)
    return s
