"""`stapes quantize MODEL [--weights int8|int16] [--calibration FILE.npy] --out DIR`."""

from __future__ import annotations

NAME = "quantize"
HELP = "fixed-point quantization of a model folder into a QModel folder (QGraph)"
DESCRIPTION = (HELP + ". Ranges come from --calibration (float inputs (B, T, I) .npy) when given, "
               "else from the model's task (train-split sequences), else the analytic worst case "
               "with |x| <= --input-range. Every format and shift is derived and the int32 overflow "
               "proof checked; the QModel folder also keeps the float graph it came from (float/).")


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL", help="model folder (graph.json + graph.npz)")
    p.add_argument("--weights", choices=("int8", "int16"), default="int16", help="weight width (default int16)")
    p.add_argument("--calibration", metavar="FILE.npy", help="float calibration inputs (B, T, I)")
    p.add_argument("--calib-sequences", type=int, default=256,
                   help="sequences drawn from the task's train split (default 256)")
    p.add_argument("--input-range", type=float, default=None,
                   help="assumed max |x| when there is no calibration data (default 1.0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration sample (default 0)")
    p.add_argument("--out", required=True, help="output QModel folder")


def calibration_inputs(graph, calibration: str | None, sequences: int, seed: int):
    """(x or None, description): the task's train sample, the .npy file, or None (analytic)."""
    import numpy as np

    from stapes.errors import UserError

    if calibration:
        try:
            x = np.load(calibration, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"--calibration {calibration}: cannot read ({e})") from None
        return x, f"file {calibration}"
    if graph.task:
        from stapes.tasks import task_from_config

        if sequences < 1:
            raise UserError(f"--calib-sequences must be >= 1, got {sequences}")
        task = task_from_config(graph.task)
        return task.sample("train", sequences, seed).x, f"task {graph.task.get('name')} train split, " \
                                                        f"{sequences} sequences, seed {seed}"
    return None, "analytic"


def quantize_folder(graph, model_folder, out_folder, weights: str, calibration: str | None,
                    sequences: int, seed: int, input_range: float | None = None):
    """Quantize `graph` (loaded from `model_folder`) and write the QModel into the existing
    folder `out_folder` (qgraph.json/npz + float/). Returns the QGraph."""
    import json
    from pathlib import Path

    from stapes.fixed.quantize import quantize_graph

    from stapes.errors import UserError

    x, source = calibration_inputs(graph, calibration, sequences, seed)
    if input_range is not None and x is not None:
        raise UserError(f"--input-range only applies without calibration data (ranges come from the {source})")
    extra = {"calibration": source, "source_model": str(model_folder)}
    compress_json = Path(model_folder) / "compress.json"
    if compress_json.is_file():
        report = json.loads(compress_json.read_text())
        if report.get("metric_dense") is not None:
            extra["metric_dense"] = {"name": report.get("metric_name"), "value": report["metric_dense"]}
    q = quantize_graph(graph, x, weights=weights, input_bound=input_range, provenance=extra)
    out_folder = Path(out_folder)
    q.save(out_folder)
    (out_folder / "float").mkdir(exist_ok=True)
    graph.save(out_folder / "float")
    return q


def run(args) -> int:
    from stapes.emit.model_c import summary
    from stapes.fsutil import atomic_dir
    from stapes.ir.float_graph import FloatGraph

    graph = FloatGraph.load(args.model)
    with atomic_dir(args.out) as tmp:
        q = quantize_folder(graph, args.model, tmp, args.weights, args.calibration, args.calib_sequences,
                            args.seed, args.input_range)
    source = q.provenance["calibration"]
    s = summary(q)
    print(f"quantize: {q.kind} N={q.hidden_size} weights {args.weights}, input {q.input_fmt.describe()}, "
          f"output {q.readout.out_fmt.describe()}, ranges from {source}")
    print(f"quantize: {s['macs_per_frame']} MACs/frame, {s['weight_bytes'] + s['table_bytes']} bytes of weights+tables")
    if isinstance(q.provenance["overflow_proof"], dict):
        for name, note in q.provenance["overflow_proof"].items():
            print(f"quantize: overflow proof: {name}: {note}")
    print(f"quantize: wrote {args.out}")
    return 0
