"""`stapes perturb MODEL --out DIR [--kinds svd,gaussian,quant] [--ranks ...] [--bits ...]`."""

from __future__ import annotations

from stapes.cli import argtypes as at
from stapes.cli import outputs

NAME = "perturb"
HELP = "first-order predicted vs measured hidden-state drift and task metric under weight perturbations"
DESCRIPTION = (
    HELP + ". Perturbations: SVD truncation, Gaussian noise of equal Frobenius norm, b-bit "
    "quantization. On memorization also recall accuracy vs delay. Writes perturb.json and PNGs."
)


def _kinds(text: str) -> list[str]:
    import argparse

    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in ("svd", "gaussian", "quant")]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"kinds must be among svd,gaussian,quant, got {text!r}")
    return kinds


def add_arguments(p) -> None:
    p.add_argument(
        "models",
        metavar="MODEL",
        type=at.path,
        nargs="+",
        help="model folder(s) with a task; the first is analysed in full, and memorization models "
        "trained at different delays give the recall-vs-delay curve",
    )
    p.add_argument("--out", required=True, help="output folder (perturb.json, drift.png, scatter.png, recall.png)")
    outputs.add_force(p)
    p.add_argument(
        "--kinds",
        type=_kinds,
        default=["svd", "gaussian", "quant"],
        help="comma-separated perturbation kinds (default svd,gaussian,quant)",
    )
    p.add_argument(
        "--ranks", type=at.int_list(1, at.MAX_HIDDEN), default=None, help="SVD ranks (default 3N/4, N/2, N/4, ... 1)"
    )
    p.add_argument(
        "--bits", type=at.int_list(2, 32), default=None, help="quantization bits, each 2..32 (default 4,6,8)"
    )
    p.add_argument(
        "--sequences",
        type=at.int_range(1, at.MAX_SEQUENCES),
        default=256,
        help=f"test sequences per evaluation, 1..{at.MAX_SEQUENCES} (default 256)",
    )
    p.add_argument("--seed", type=at.seed, default=0, help="seed for the Gaussian perturbations (default 0)")


def run(args) -> int:
    from stapes.studies.perturb_report import fmt, perturb_report, write_perturb_folder

    outputs.check(args, NAME, *args.models)
    report = perturb_report(args.models, args.kinds, args.ranks, args.bits, args.sequences, args.seed)
    write_perturb_folder(args.out, report)
    result, rec = report["analysis"], report.get("recall_by_delay")
    print(
        f"perturb: {len(result['rows'])} perturbations; Pearson predicted vs measured drift over "
        f"perturbations x steps: saturated {fmt(result['pearson_drift_saturated_all'])}, "
        f"linear {fmt(result['pearson_drift_linear_all'])}"
    )
    if rec is not None:
        print(
            f"perturb: recall over ranks x delays {rec['delays']}: Pearson drift "
            f"{fmt(rec['pearson_recall_drift_saturated'])}, "
            f"accuracy {fmt(rec['pearson_recall_accuracy_saturated'])}"
        )
    print(f"perturb: wrote {args.out}")
    return 0
