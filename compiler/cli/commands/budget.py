"""`stapes budget`: flash, RAM, MACs, instructions and cycles per frame on a board, before any build."""

from __future__ import annotations

import json

from stapes.cli import argtypes as at
from stapes.errors import UserError

NAME = "budget"
HELP = "flash / RAM / MACs / instructions / cycles per frame of a model on a board, before any build"


def add_arguments(p) -> None:
    p.add_argument(
        "model", metavar="MODEL", type=at.path, help="QModel folder (from `stapes quantize`) or a model folder"
    )
    p.add_argument("--board", type=at.board_name, required=True, help="board profile name (see `stapes board list`)")
    p.add_argument("--frame-ms", type=at.positive_float, default=8.0, help="one frame every F ms (default 8)")
    p.add_argument(
        "--weights",
        choices=("int8", "int16"),
        default="int16",
        help="weight width for a float model folder (a QModel has its own; default int16)",
    )
    p.add_argument(
        "--clock-mhz", type=at.float_range(0.0, 1e6, lo_open=True), default=None, help="override the board's clock"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")


def run(args) -> int:
    import stapes

    if args.clock_mhz is not None and args.clock_mhz <= 0:
        raise UserError(f"--clock-mhz must be positive, got {args.clock_mhz}")
    clock = int(args.clock_mhz * 1e6) if args.clock_mhz else None
    result = stapes.budget(stapes.load(args.model), args.board, args.frame_ms, weights=args.weights, clock_hz=clock)
    print(json.dumps(result.to_json(), indent=2, sort_keys=True) if args.json else result.format())
    return 0
