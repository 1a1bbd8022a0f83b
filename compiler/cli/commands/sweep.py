"""`stapes sweep MODEL --out DIR [--ranks ...] [--finetune STEPS]`."""

from __future__ import annotations

from stapes.cli import argtypes as at
from stapes.cli import outputs

NAME = "sweep"
HELP = "task metric vs rank of the recurrent matrices, with MACs and parameters (CSV, JSON, PNG)"


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL", type=at.path, help="model folder (graph.json + graph.npz) with a task")
    p.add_argument("--out", required=True, help="output folder (sweep.json, sweep.csv, sweep.png)")
    outputs.add_force(p)
    p.add_argument(
        "--ranks",
        type=at.int_list(1, at.MAX_HIDDEN),
        default=None,
        help="comma-separated ranks (default: every rank N..1, or a 64-point grid for N > 64)",
    )
    p.add_argument(
        "--finetune",
        type=at.int_range(0, at.MAX_TRAIN_STEPS),
        default=0,
        metavar="STEPS",
        help=f"also fine-tune at each rank for STEPS optimizer steps, 0..{at.MAX_TRAIN_STEPS} (default 0: none)",
    )
    p.add_argument(
        "--finetune-ranks",
        type=at.int_list(1, at.MAX_HIDDEN),
        default=None,
        help="ranks to fine-tune at (default: all swept ranks)",
    )
    p.add_argument("--joint", action="store_true", help="MGU: factor [U_f; U_h] together")
    p.add_argument("--seed", type=at.seed, default=0, help="fine-tuning seed (default 0)")


def run(args) -> int:
    from stapes.errors import UserError
    from stapes.fsutil import atomic_dir
    from stapes.ir.float_graph import FloatGraph
    from stapes.studies.sweep import run_sweep, write_sweep

    outputs.check(args, NAME, args.model)
    graph = FloatGraph.load(args.model)
    if args.finetune < 0:
        raise UserError(f"--finetune must be >= 0, got {args.finetune}")
    if args.finetune_ranks and not args.finetune:
        raise UserError("--finetune-ranks needs --finetune STEPS")
    result = run_sweep(
        graph,
        args.ranks,
        finetune_steps=args.finetune,
        finetune_ranks=args.finetune_ranks,
        joint=args.joint,
        seed=args.seed,
    )
    with atomic_dir(args.out) as tmp:
        write_sweep(result, tmp)
    print(
        f"sweep: dense {result['metric_name']} = {result['metric_dense']:.4f}; smallest rank within "
        f"1 point: {result['smallest_rank_within_1_point']}"
        + (f" (fine-tuned: {result['smallest_rank_within_1_point_finetuned']})" if args.finetune else "")
    )
    print(f"sweep: wrote {args.out}")
    return 0
