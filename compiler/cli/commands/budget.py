"""`stapes budget`: flash, RAM, MACs, instructions and cycles per frame on a board, before any build."""

from __future__ import annotations

import json
from pathlib import Path

from stapes.errors import UserError

NAME = "budget"
HELP = "flash / RAM / MACs / instructions / cycles per frame of a model on a board, before any build"


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL", help="QModel folder (from `stapes quantize`) or a model folder")
    p.add_argument("--board", required=True, help="board profile name (see `stapes board list`)")
    p.add_argument("--frame-ms", type=float, default=8.0, help="one frame every F ms (default 8)")
    p.add_argument("--weights", choices=("int8", "int16"), default="int16",
                   help="weight width for a float model folder (a QModel has its own; default int16)")
    p.add_argument("--clock-mhz", type=float, default=None, help="override the board's clock")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")


def load_shape(folder: str, weights: str = "int16"):
    """The ModelShape of a QModel folder, or of a float model folder at `weights` bits."""
    from stapes.target import budget as B
    from stapes.ir.float_graph import FloatGraph, is_model_folder
    from stapes.ir.qgraph import QGraph, is_qmodel_folder

    path = Path(folder)
    if is_qmodel_folder(path):
        return B.shape_of_qgraph(QGraph.load(path))
    if is_model_folder(path):
        return B.shape_of_graph(FloatGraph.load(path), 8 if weights == "int8" else 16)
    raise UserError(f"{folder}: neither a QModel folder (qgraph.json) nor a model folder (graph.json)")


def run(args) -> int:
    from stapes.target import budget as B
    from stapes.target.board import load_board

    board = load_board(args.board)
    if args.clock_mhz is not None and args.clock_mhz <= 0:
        raise UserError(f"--clock-mhz must be positive, got {args.clock_mhz}")
    clock = int(args.clock_mhz * 1e6) if args.clock_mhz else None
    result = B.budget(load_shape(args.model, args.weights), board, args.frame_ms, clock)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, sort_keys=True))
    else:
        print(B.format_budget(result))
    return 0
