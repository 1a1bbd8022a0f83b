"""`stapes import-onnx FILE.onnx --out DIR`: an ONNX RNN / tied-gate GRU as a stapes model folder."""

from __future__ import annotations

from stapes.cli import argtypes as at
from stapes.cli import outputs

NAME = "import-onnx"
HELP = (
    "import an ONNX RNN (tanh; also torch's unrolled dynamo export) or tied-gate GRU (= MGU) "
    "with its readout as a model folder (task None)"
)


def add_arguments(parser) -> None:
    parser.add_argument(
        "onnx_file", type=at.path, help="the .onnx file (e.g. from torch.onnx.export(..., dynamo=False))"
    )
    parser.add_argument("--out", required=True, help="the model folder to write (graph.json + graph.npz)")
    outputs.add_force(parser)


def run(args) -> int:
    from stapes.frontend.onnx_import import import_onnx, write_model_folder

    outputs.check(args, NAME, args.onnx_file)
    graph = import_onnx(args.onnx_file)
    write_model_folder(graph, args.out)
    p = graph.provenance
    print(
        f"wrote {args.out}: {graph.kind} from ONNX {p['operator']} (opset {p['opset']}, producer "
        f"{p['producer']}), input {graph.input_size}, hidden {graph.hidden_size}, output {graph.output_size} "
        f"({graph.readout.mode}, {graph.readout.activation}); onnxruntime agrees to {p['verify_max_rel_diff']:.1e}"
    )
    return 0
