"""`stapes demo`: the whole pipeline on an embedded default (voice activity detection), under two
minutes on 2 cores; `--task memorization` is the paper's probe and needs no speech engine."""

from __future__ import annotations

import argparse

from stapes.cli import argtypes as at
from stapes.cli import outputs

NAME = "demo"
HELP = "run the whole pipeline on an embedded default and print a report"
DESCRIPTION = """Train a small MGU on an embedded task (default: voice activity detection on speech generated
offline) and take it through the pipeline's stages,
printing a report. Writes everything into one folder (default ./stapes-demo), atomically."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--task",
        default="vad",
        help="task (default: vad, voice activity detection; memorization needs no speech engine)",
    )
    p.add_argument("--out", default=None, help="output folder (default: ./stapes-demo)")
    outputs.add_force(p)
    p.add_argument("--cell", choices=("rnn", "mgu"), default="mgu", help="recurrent cell (default: mgu)")
    p.add_argument(
        "--hidden",
        type=at.int_range(1, at.MAX_HIDDEN),
        default=None,
        help=f"hidden size, 1..{at.MAX_HIDDEN} (default: per task, 64 for memorization)",
    )
    p.add_argument("--seed", type=at.seed, default=0, help=f"seed, 0..{at.SEED_MAX} (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from stapes.errors import UserError
    from stapes.fsutil import atomic_dir
    from stapes.studies.demo import DEFAULT_OUT, DemoContext, run_stages
    from stapes.tasks import TASK_NAMES

    if args.task not in TASK_NAMES:
        raise UserError(f"unknown task {args.task!r}: expected one of {', '.join(TASK_NAMES)}")
    if args.hidden is not None and args.hidden < 1:
        raise UserError(f"--hidden must be a positive integer, got {args.hidden}")
    if args.out is None:
        args.out = DEFAULT_OUT
    out = outputs.check(args, NAME)
    with atomic_dir(out) as work:
        run_stages(DemoContext(args=args, out=out.absolute(), work=work))
    print(f"wrote {out}")
    return 0
