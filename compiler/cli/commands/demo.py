"""`stapes demo`: the whole pipeline on an embedded default (voice activity detection), under two
minutes on 2 cores; `--task memorization` is the paper's probe and needs no speech engine."""

from __future__ import annotations

import argparse
from pathlib import Path

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
    p.add_argument("--cell", choices=("rnn", "mgu"), default="mgu", help="recurrent cell (default: mgu)")
    p.add_argument("--hidden", type=int, default=None, help="hidden size (default: per task, 64 for memorization)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from stapes.errors import UserError
    from stapes.fsutil import atomic_dir
    from stapes.ir.float_graph import is_model_folder
    from stapes.studies.demo import DEFAULT_OUT, DemoContext, run_stages
    from stapes.tasks import TASK_NAMES

    if args.task not in TASK_NAMES:
        raise UserError(f"unknown task {args.task!r}: expected one of {', '.join(TASK_NAMES)}")
    if args.hidden is not None and args.hidden < 1:
        raise UserError(f"--hidden must be a positive integer, got {args.hidden}")
    out = Path(args.out or DEFAULT_OUT)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "report.txt").is_file() and not is_model_folder(out):
        raise UserError(f"--out {out}: a non-empty folder that is not a stapes demo folder; refusing to replace it")
    try:
        out.absolute().parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the folder for {out}: {e.strerror or e}") from None
    with atomic_dir(out) as work:
        run_stages(DemoContext(args=args, out=out.absolute(), work=work))
    print(f"wrote {out}")
    return 0
