"""`stapes verify QMODEL [--sequences K]`: the generated C against the reference, bit for bit."""

from __future__ import annotations

from stapes.cli import argtypes as at

NAME = "verify"
HELP = "build the generated C, run it against the integer reference, count mismatches and ops"
DESCRIPTION = (
    HELP + ". Prints 'mismatches: 0' (exit 0) or the first mismatch (exit 1), op counts "
    "per frame (C counters, reference, analytic), and when the graph has a task its metric "
    "for the float / low-rank float / fixed-point model side by side on the same data, and "
    "the float-vs-fixed error of states and outputs (max and RMS, in LSB), with a warning when a "
    "state is more than 512 LSB of Q15 from the float model. Without a task the inputs are "
    "seeded random values in the calibrated input range."
)


def add_arguments(p) -> None:
    p.add_argument("qmodel", metavar="QMODEL", type=at.path, help="QModel folder (qgraph.json + qgraph.npz)")
    p.add_argument(
        "--sequences",
        type=at.int_range(1, at.MAX_SEQUENCES),
        default=512,
        help=f"sequences to run, 1..{at.MAX_SEQUENCES} (default 512)",
    )
    p.add_argument(
        "--steps",
        type=at.int_range(1, at.MAX_FRAMES),
        default=100,
        help=f"steps per random sequence without a task, 1..{at.MAX_FRAMES} (default 100)",
    )
    p.add_argument(
        "--rank",
        type=at.int_range(0, at.MAX_HIDDEN),
        default=None,
        help="run-time rank (low-rank models; default: stored rank)",
    )
    p.add_argument("--seed", type=at.seed, default=1234, help="seed of the test sample (default 1234)")


def run(args) -> int:
    from stapes.errors import CheckFailed
    from stapes.studies.verify import verify_folder

    result = verify_folder(args.qmodel, sequences=args.sequences, steps=args.steps, rank=args.rank, seed=args.seed)
    for line in result.lines:
        print(line if line.startswith("mismatches") else f"verify: {line}")
    if not result.ok:
        raise CheckFailed(result.failure())
    return 0
