"""`stapes import-onnx FILE.onnx --out DIR`: an ONNX RNN / tied-gate GRU as a stapes model folder."""

from __future__ import annotations

NAME = "import-onnx"
HELP = (
    "import an ONNX RNN (tanh; also torch's unrolled dynamo export) or tied-gate GRU (= MGU) "
    "with its readout as a model folder (task None)"
)


def add_arguments(parser) -> None:
    parser.add_argument("onnx_file", help="the .onnx file (e.g. from torch.onnx.export(..., dynamo=False))")
    parser.add_argument("--out", required=True, help="the model folder to write (graph.json + graph.npz)")


def run(args) -> int:
    from pathlib import Path

    from stapes.errors import UserError
    from stapes.frontend.onnx_import import import_onnx, write_model_folder
    from stapes.ir.float_graph import is_model_folder

    out = Path(args.out)
    if out.exists() and not (out.is_dir() and (is_model_folder(out) or not any(out.iterdir()))):
        raise UserError(f"--out {out} exists and is not a model folder (or an empty folder): refusing to replace it")
    graph = import_onnx(args.onnx_file)
    write_model_folder(graph, args.out)
    p = graph.provenance
    print(
        f"wrote {args.out}: {graph.kind} from ONNX {p['operator']} (opset {p['opset']}, producer "
        f"{p['producer']}), input {graph.input_size}, hidden {graph.hidden_size}, output {graph.output_size} "
        f"({graph.readout.mode}, {graph.readout.activation}); onnxruntime agrees to {p['verify_max_rel_diff']:.1e}"
    )
    return 0
