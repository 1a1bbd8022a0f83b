"""`stapes board`: list the board profiles; run a QModel on a board under qemu, bit-exact."""

from __future__ import annotations

import tempfile
from pathlib import Path

from stapes.cli import argtypes as at
from stapes.cli import outputs
from stapes.errors import CheckFailed, UserError

NAME = "board"
HELP = "list boards, or cross-build a QModel and run it under qemu: bit-exact check, sizes, counts"


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.add_parser("list", help="the board profiles (runnable under qemu, or estimate-only)")
    r = sub.add_parser("run", help="cross-build, run under qemu, compare with host and reference")
    r.add_argument("model", metavar="QMODEL", type=at.path, help="QModel folder (from `stapes quantize`)")
    r.add_argument("--board", type=at.board_name, default="mps2-an386", help="board (default mps2-an386, a Cortex-M4F)")
    r.add_argument(
        "--frames",
        type=at.int_range(1, at.MAX_FRAMES),
        default=32,
        help=f"golden input frames, 1..{at.MAX_FRAMES} (default 32)",
    )
    r.add_argument("--seed", type=at.seed, default=0, help="seed of the golden inputs (default 0)")
    r.add_argument(
        "--rank", type=at.int_range(0, at.MAX_HIDDEN), default=0, help="run-time rank (default 0: the stored rank)"
    )
    r.add_argument(
        "--timeout",
        type=at.float_range(0.0, 86400.0, lo_open=True),
        default=60.0,
        help="seconds before a qemu run counts as hung",
    )
    r.add_argument(
        "--keep", metavar="DIR", type=at.path, default=None, help="keep the build (sources, ELF, map, outputs) in DIR"
    )
    outputs.add_force(r)


def _list() -> int:
    from stapes.target.profile import board_names, load_board

    for name in board_names():
        b = load_board(name)
        print(f"{name:<24} {'qemu' if b.runs else 'estimate':<9} {b.description}")
    return 0


def _report(res, budget) -> str:
    from stapes.target.run import ram_text

    insns = res.frame_insns
    mean = sum(insns) / len(insns) if insns else 0.0
    s = res.sizes
    lines = [
        f"board {res.board}: {res.frames} frames, target exit status {res.returncode}, "
        f"host exit status {res.host_returncode}",
        f"target == host (same bytes, same exit status): {'yes' if res.same_as_host else 'NO'}",
        f"target == reference (every output and state): {'yes' if res.same_as_reference else 'NO'}",
    ]
    if res.first_mismatch:
        lines.append(f"first mismatch: {res.first_mismatch}")
    lines += [
        f"sizes (arm-none-eabi-size, whole image): text {s['text']} data {s['data']} bss {s['bss']}; "
        f"flash {s['flash']} (without golden inputs {s['flash_model']}), data + bss {s['ram']}",
        f"model: flash {s['flash_model']} B, {ram_text(res)}",
        "model and runtime symbols (bytes):",
    ]
    lines += [f"  {size:>7}  {name}" for name, size, _ in res.model_symbols[:20]]
    if len(res.model_symbols) > 20:
        rest = sum(size for _, size, _ in res.model_symbols[20:])
        lines.append(f"  {rest:>7}  ({len(res.model_symbols) - 20} smaller symbols)")
    if insns:
        lines.append(
            f"instructions per frame of the step function (qemu, {res.method}): mean {mean:,.1f}, "
            f"min {min(insns):,}, max {max(insns):,}; {res.macs_per_frame} MACs/frame, "
            f"{mean / max(res.macs_per_frame, 1):.2f} instructions/MAC"
        )
    if res.kernel_insns is not None:
        lines.append(
            f"  of which in the mat-vec kernels: {res.kernel_insns:,.1f} "
            f"({res.kernel_insns / max(res.macs_per_frame, 1):.3f} instructions/MAC)"
        )
    if budget is not None and budget.instructions is not None and insns:
        lines.append(
            f"budget estimate: {budget.instructions:,.0f} instructions/frame "
            f"({100 * (budget.instructions / mean - 1):+.1f} %), flash {budget.flash['total']} "
            f"(measured {s['flash_model']}), RAM buffers {budget.ram['total'] - budget.ram['stack']} "
            f"(measured {res.ram_buffers}) + stack bound {budget.ram['stack']} (this run: {res.stack})"
        )
    return "\n".join(lines)


def run(args) -> int:
    if args.action == "list":
        return _list()
    if args.action != "run":
        raise UserError("say `stapes board list` or `stapes board run QMODEL --board B`")
    from stapes.ir.qgraph import QGraph
    from stapes.target.budget import budget, shape_of_qgraph
    from stapes.target.profile import load_board
    from stapes.target.run import run_qgraph
    from stapes.target.toolchain import require_runnable

    if args.frames < 1:
        raise UserError(f"--frames must be at least 1, got {args.frames}")
    if args.timeout <= 0:
        raise UserError(f"--timeout must be positive, got {args.timeout}")
    if args.keep is not None:
        outputs.check(args, NAME, args.model, option="--keep")
    board = load_board(args.board)
    require_runnable(board)
    q = QGraph.load(args.model)
    if args.keep:
        from stapes.fsutil import atomic_dir

        with atomic_dir(args.keep) as work:
            res = run_qgraph(q, board, Path(work), args.frames, args.seed, args.rank, args.timeout)
        print(f"build kept in {args.keep}")
    else:
        with tempfile.TemporaryDirectory(prefix="stapes-board-") as work:
            res = run_qgraph(q, board, Path(work), args.frames, args.seed, args.rank, args.timeout)
    est = budget(shape_of_qgraph(q), board, 8.0)
    print(_report(res, est))
    if not (res.same_as_host and res.same_as_reference and res.returncode == 0):
        raise CheckFailed(f"{board.name} differs: {res.first_mismatch or 'host and target outputs differ'}")
    return 0
