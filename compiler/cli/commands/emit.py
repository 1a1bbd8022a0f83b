"""`stapes emit QMODEL --out DIR [--prefix P]`."""

from __future__ import annotations

from stapes.cli import argtypes as at
from stapes.cli import outputs

NAME = "emit"
HELP = "generate <prefix>.c/.h (const tables + step/run functions) from a QModel folder"
DESCRIPTION = (
    HELP + ". Copies the runtime (runtime_c/include, runtime_c/src and its CMakeLists.txt / "
    "stapes.mk, see docs/boards.md) into runtime/, so the folder builds on its own: "
    "cc -std=c99 -Iruntime/include *.c runtime/src/*.c."
)


def add_arguments(p) -> None:
    p.add_argument("qmodel", metavar="QMODEL", type=at.path, help="QModel folder (qgraph.json + qgraph.npz)")
    p.add_argument(
        "--prefix",
        type=at.c_prefix,
        default="model",
        help="C prefix of the generated symbols: a lower-case C identifier starting with a letter (default model)",
    )
    p.add_argument("--no-runtime", action="store_true", help="write only the generated files")
    p.add_argument("--out", required=True, help="output folder")
    outputs.add_force(p)


def run(args) -> int:
    from stapes.emit.model_c import summary
    from stapes.ir.qgraph import QGraph
    from stapes.studies.deploy import write_c_folder

    outputs.check(args, NAME, args.qmodel)
    q = QGraph.load(args.qmodel)
    files = write_c_folder(q, args.out, args.prefix, with_runtime=not args.no_runtime)
    s = summary(q)
    print(
        f"emit: {', '.join(files)}: {s['macs_per_frame']} MACs/frame "
        f"(all-dense {s['macs_per_frame_dense']}), weights {s['weight_bytes']} B, tables {s['table_bytes']} B, "
        f"state {s['state_bytes']} B, scratch {s['scratch_bytes']} B"
    )
    print(f"emit: wrote {args.out}")
    return 0
