"""`stapes paper`: run the experiment suite of Cox (arXiv 1612.00891) and write its report."""

from __future__ import annotations

import argparse
import sys

from stapes.cli import argtypes as at
from stapes.cli import outputs

NAME = "paper"
HELP = "run the paper's experiment suite (resumable) and write a report with figures"
DESCRIPTION = (
    "Run the experiments R1-R7 (+ on-the-fly rank) of Cox, 'Parameter Compression of Recurrent "
    "Neural Networks and Degradation of Short-term Memory', into OUT: report.md, results.json, "
    "figures/. Finished runs are cached under OUT/cache and skipped, so an interrupted run resumes."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (report, figures, cache)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="the quick profile (the default)")
    group.add_argument(
        "--profile",
        choices=["tiny", "quick", "medium", "full"],
        default=None,
        help="settings profile (default: quick, minutes; full: the paper-scale run, about an hour with --workers 2)",
    )
    p.add_argument("--only", default=None, help="comma-separated experiment ids, e.g. R1,R3")
    p.add_argument("--seeds", type=at.int_range(None, 1000), default=None, help="override the profile's seed count")
    p.add_argument(
        "--workers",
        type=at.int_range(None, at.MAX_THREADS),
        default=1,
        help="processes to train models and compute runs in (default 1; one per core is the most useful)",
    )
    p.add_argument(
        "--doc",
        type=at.path,
        default=None,
        metavar="FILE",
        help="also refresh the generated block of this Markdown file (e.g. docs/paper.md) "
        "with the verdicts, settings and figures of this run",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from pathlib import Path

    from stapes.errors import CheckFailed, UserError
    from stapes.experiments.runner import run_suite
    from stapes.experiments.settings import PROFILE_TIME, profile
    from stapes.frontend.train import torch_threads

    name = args.profile or "quick"
    settings = profile(name, seeds=args.seeds)
    only = [e.strip().upper() for e in args.only.split(",") if e.strip()] if args.only else None
    if args.only is not None and not only:
        raise UserError("--only needs at least one experiment id")
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    out = outputs.check(args, NAME, resume=True)  # an earlier run's folder is resumed, anything else refused
    doc = Path(args.doc) if args.doc else None
    if doc is not None:
        from stapes.experiments.report import doc_block

        if not doc.is_file():
            raise UserError(f"--doc {doc}: no such file")
        doc_block(doc.read_text(), str(doc))  # fail now, not after hours of experiments
    print(
        f"stapes paper: profile {name}, {PROFILE_TIME[name]}; finished runs in {out / 'cache'} are reused",
        file=sys.stderr,
    )
    with torch_threads(1):  # each process trains on one thread; --workers adds processes
        results = run_suite(out, settings, only=only, progress=not args.no_progress, workers=args.workers)
    if doc is not None:
        import json
        import os

        from stapes.experiments.report import update_doc

        written = json.loads((out / "results.json").read_text())  # the document quotes the file, as its test does
        update_doc(doc, written, Path(os.path.relpath(out, doc.parent)).as_posix() + "/")
        print(f"stapes paper: refreshed the generated block of {doc}")
    if results["failed"]:
        raise CheckFailed(f"experiment(s) {', '.join(results['failed'])} failed (see {out / 'report.md'})")
    return 0
