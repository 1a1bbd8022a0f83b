"""`stapes export-onnx MODEL --out FILE.onnx`: a model folder as an ONNX model (float32)."""

from __future__ import annotations

from stapes.cli import argtypes as at
from stapes.cli import outputs

NAME = "export-onnx"
HELP = "export a float model (dense or low-rank) to ONNX (RNN / tied-gate GRU operators, or a Scan with the factors)"
CHECK_TOL = 1e-4  # relative: onnxruntime (float32) vs FloatGraph.run (float64) on seeded inputs


def add_arguments(parser) -> None:
    parser.add_argument("model", type=at.path, help="a model folder (graph.json + graph.npz)")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    outputs.add_force(parser)
    parser.add_argument(
        "--lowrank",
        choices=["factors", "dense"],
        default="factors",
        help="low-rank matrices: keep the factors (Scan, two MatMuls per matrix; default) "
        "or multiply them out and use the standard RNN/GRU operator",
    )
    parser.add_argument("--opset", type=at.int_range(14, 99), default=None, help="ONNX opset (default 17, at least 14)")


def run(args) -> int:
    import numpy as np

    from stapes.errors import CheckFailed
    from stapes.frontend.onnx_export import OPSET, export_onnx, run_onnxruntime, save_onnx
    from stapes.ir.float_graph import FloatGraph

    outputs.check(args, NAME, args.model, file=True)
    graph = FloatGraph.load(args.model)
    model = export_onnx(graph, lowrank=args.lowrank, opset=args.opset or OPSET)
    # Self-check before writing: onnxruntime must compute what the FloatGraph computes.
    x = np.random.default_rng(0).uniform(-1, 1, (2, 16, graph.input_size))
    want = graph.run(x)[0]
    got = run_onnxruntime(model, x)[0].astype(np.float64)
    err = float(np.max(np.abs(got - want) / (1.0 + np.abs(want))))
    if not err <= CHECK_TOL:
        raise CheckFailed(
            f"onnxruntime differs from the model by {err:.3g} (relative) on random inputs; nothing written"
        )
    save_onnx(model, args.out)
    props = {p.key: p.value for p in model.metadata_props}
    print(
        f"wrote {args.out} (opset {model.opset_import[0].version}, cell {props['stapes.cell']}, "
        f"lowrank {props['stapes.lowrank']}); onnxruntime agrees to {err:.1e}"
    )
    return 0
