"""`stapes plan`: the rank per matrix and weight bits that fit a board and keep the most accuracy."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from stapes.cli import argtypes as at
from stapes.errors import UserError

NAME = "plan"
HELP = "pick rank per matrix and weight bits that fit a board's flash, RAM and time, keeping the most accuracy"


def add_arguments(p) -> None:
    p.add_argument(
        "model", metavar="MODEL", type=at.path, help="model folder (graph.json + graph.npz), ideally with a task"
    )
    p.add_argument("--board", type=at.board_name, required=True, help="board profile name (see `stapes board list`)")
    p.add_argument("--frame-ms", type=at.positive_float, default=8.0, help="one frame every F ms (default 8)")
    p.add_argument(
        "--max-flash", type=at.byte_size, default=None, help="flash limit, e.g. 32k (default: the board's flash)"
    )
    p.add_argument("--max-ram", type=at.byte_size, default=None, help="RAM limit, e.g. 8k (default: the board's RAM)")
    p.add_argument(
        "--max-core",
        type=at.float_range(0.0, 100.0, lo_open=True),
        default=100.0,
        help="share of the core allowed, percent (default 100)",
    )
    p.add_argument(
        "--clock-mhz", type=at.float_range(0.0, 1e6, lo_open=True), default=None, help="override the board's clock"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")


def run(args) -> int:
    from stapes.ir.float_graph import FloatGraph, is_model_folder
    from stapes.target.plan import format_plan, make_plan, parse_size
    from stapes.target.profile import load_board

    if not is_model_folder(Path(args.model)):
        raise UserError(f"{args.model}: not a model folder (graph.json + graph.npz expected)")
    board = load_board(args.board)
    if args.frame_ms <= 0:
        raise UserError(f"--frame-ms must be positive, got {args.frame_ms}")
    if not 0 < args.max_core <= 100:
        raise UserError(f"--max-core must be in (0, 100], got {args.max_core}")
    if args.clock_mhz is not None and args.clock_mhz <= 0:
        raise UserError(f"--clock-mhz must be positive, got {args.clock_mhz}")
    max_flash = parse_size(args.max_flash) if args.max_flash else board.flash_bytes
    max_ram = parse_size(args.max_ram) if args.max_ram else board.ram_bytes
    plan = make_plan(
        FloatGraph.load(args.model),
        board,
        args.frame_ms,
        max_flash,
        max_ram,
        args.max_core / 100.0,
        clock_hz=int(args.clock_mhz * 1e6) if args.clock_mhz else None,
        progress=sys.stderr.isatty(),
    )
    print(json.dumps(plan.to_json(), indent=2, sort_keys=True) if args.json else format_plan(plan))
    return 0 if plan.chosen is not None else 1
