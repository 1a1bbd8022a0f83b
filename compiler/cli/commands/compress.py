"""`stapes compress MODEL --rank R | --energy F | --max-error E | --max-drop D --out DIR`."""

from __future__ import annotations

import sys

from stapes.cli import argtypes as at
from stapes.cli import outputs

NAME = "compress"
HELP = "truncated-SVD compression of the recurrent weights (rank, energy, error or predicted-drop policy)"
DESCRIPTION = (
    HELP + ". Writes a model folder with the compressed FloatGraph and compress.json "
    "(ranks, truncation errors, MACs/parameters dense vs low rank, metrics before/after)."
)


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL", type=at.path, help="model folder (graph.json + graph.npz)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--rank", type=int, help="fixed rank for every recurrent matrix")
    g.add_argument("--energy", type=at.finite_float, help="keep this fraction of Σσ² (0 < F <= 1)")
    g.add_argument("--max-error", type=at.float_range(0.0), help="largest relative truncation error (see --error-norm)")
    g.add_argument(
        "--max-drop",
        type=at.float_range(0.0),
        help="largest first-order predicted drop of the task metric (needs the task)",
    )
    p.add_argument(
        "--error-norm",
        choices=("spectral", "frobenius"),
        default="spectral",
        help="norm for --max-error: σ_{r+1}/σ_1 or the relative Frobenius error (default spectral)",
    )
    p.add_argument("--joint", action="store_true", help="MGU: factor [U_f; U_h] together (shared b factor)")
    p.add_argument(
        "--unbalanced", action="store_true", help="factors a = P Σ, b = Qᵀ instead of the balanced P Σ^½, Σ^½ Qᵀ"
    )
    p.add_argument(
        "--finetune",
        type=at.int_range(0, at.MAX_TRAIN_STEPS),
        default=0,
        metavar="STEPS",
        help=f"fine-tune the factors for STEPS optimizer steps on the task, 0..{at.MAX_TRAIN_STEPS} (default 0: none)",
    )
    p.add_argument("--seed", type=at.seed, default=0, help="seed for fine-tuning (default 0)")
    p.add_argument("--out", required=True, help="output model folder")
    outputs.add_force(p)


def run(args) -> int:
    from stapes.errors import UserError
    from stapes.fsutil import atomic_dir, write_json
    from stapes.ir.float_graph import FloatGraph
    from stapes.studies.compress_report import compress_report, rank_policy

    outputs.check(args, NAME, args.model)
    graph = FloatGraph.load(args.model)
    policy = rank_policy(args.rank, args.energy, args.max_error, args.max_drop, args.error_norm)
    if policy.kind == "rank" and args.rank > graph.hidden_size:
        raise UserError(f"--rank {args.rank} is larger than the hidden size {graph.hidden_size}")
    if args.finetune < 0:
        raise UserError(f"--finetune must be >= 0, got {args.finetune}")
    compressed, report = compress_report(
        graph,
        policy,
        joint=args.joint,
        balanced=not args.unbalanced,
        finetune_steps=args.finetune,
        seed=args.seed,
        progress=sys.stderr.isatty(),
    )
    with atomic_dir(args.out) as tmp:
        compressed.save(tmp)
        write_json(tmp / "compress.json", report)
    ranks = ", ".join(f"{k} r={v['rank']}" for k, v in report["compression"]["matrices"].items())
    print(f"compress: {ranks}; {report['cost']['statement']}")
    for key in ("metric_dense", "metric_compressed", "metric_finetuned"):
        if report.get(key) is not None:
            print(f"compress: {key.replace('metric_', '')} {report['metric_name']} = {report[key]:.4f}")
    print(f"compress: wrote {args.out}")
    return 0
