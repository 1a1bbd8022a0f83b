"""`stapes quantize MODEL [--weights int8|int16] [--calibration FILE.npy] --out DIR`."""

from __future__ import annotations

from stapes.cli import argtypes as at
from stapes.cli import outputs

NAME = "quantize"
HELP = "fixed-point quantization of a model folder into a QModel folder (QGraph)"
DESCRIPTION = (
    HELP + ". Ranges come from --calibration (float inputs (B, T, I) .npy) when given, "
    "else from the model's task (train-split sequences), else the analytic worst case "
    "with |x| <= --input-range. Every format and shift is derived and the int32 overflow "
    "proof checked; the QModel folder also keeps the float graph it came from (float/)."
)


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL", type=at.path, help="model folder (graph.json + graph.npz)")
    p.add_argument("--weights", choices=("int8", "int16"), default="int16", help="weight width (default int16)")
    p.add_argument(
        "--calibration", metavar="FILE.npy", type=at.calibration_file, help="float calibration inputs (B, T, I)"
    )
    p.add_argument(
        "--calib-sequences",
        type=at.int_range(1, at.MAX_SEQUENCES),
        default=256,
        help=f"sequences drawn from the task's train split, 1..{at.MAX_SEQUENCES} (default 256)",
    )
    p.add_argument(
        "--input-range",
        type=at.float_range(0.0, 1e30, lo_open=True),
        default=None,
        help="assumed max |x| when there is no calibration data (default 1.0)",
    )
    p.add_argument("--seed", type=at.seed, default=0, help="seed of the calibration sample (default 0)")
    p.add_argument("--out", required=True, help="output QModel folder")
    outputs.add_force(p)


def run(args) -> int:
    from stapes.emit.model_c import summary
    from stapes.studies.deploy import quantize_folder

    outputs.check(args, NAME, args.model, args.calibration)
    q = quantize_folder(
        args.model,
        args.out,
        weights=args.weights,
        calibration=args.calibration,
        input_range=args.input_range,
        sequences=args.calib_sequences,
        seed=args.seed,
    )
    source = q.provenance["calibration"]
    s = summary(q)
    print(
        f"quantize: {q.kind} N={q.hidden_size} weights {args.weights}, input {q.input_fmt.describe()}, "
        f"output {q.readout.out_fmt.describe()}, ranges from {source}"
    )
    print(f"quantize: {s['macs_per_frame']} MACs/frame, {s['weight_bytes'] + s['table_bytes']} bytes of weights+tables")
    if isinstance(q.provenance["overflow_proof"], dict):
        for name, note in q.provenance["overflow_proof"].items():
            print(f"quantize: overflow proof: {name}: {note}")
    print(f"quantize: wrote {args.out}")
    return 0
