"""Regenerate the emitter's golden files: python tests/golden/regenerate.py [--new-graphs]

Each case is a small FloatGraph (saved here, so the test does not depend on random streams or
LAPACK signs), the quantization policy (case.json) and the exact text emit() produced for it.
By default only the C text is rewritten, from the saved graphs; ``--new-graphs`` draws the
graphs again (only when a case changes). Review the diff before committing: a change here is a
change of the generated C.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from stapes.emit.model_c import emit
from stapes.fixed.quantize import quantize_graph
from stapes.host.random_models import random_graph
from stapes.ir.float_graph import FloatGraph

HERE = Path(__file__).resolve().parent
CASES = {
    "rnn_dense_int8": dict(
        graph=dict(seed=11, kind="rnn", hidden=3, inputs=2, outputs=1), weights="int8", prefix="rnn3"
    ),
    "mgu_lowrank_int16": dict(
        graph=dict(
            seed=12,
            kind="mgu",
            hidden=4,
            inputs=2,
            outputs=2,
            rank=2,
            readout_mode="final",
            readout_activation="sigmoid",
        ),
        weights="int16",
        prefix="mgu4",
    ),
}


def expected_files(case_dir: Path) -> dict[str, str]:
    """emit() of the case's saved float graph under its saved policy."""
    spec = json.loads((case_dir / "case.json").read_text())
    q = quantize_graph(FloatGraph.load(case_dir / "float"), None, weights=spec["weights"])
    return emit(q, spec["prefix"])


def new_case(case_dir: Path, spec: dict) -> None:
    """A fresh case folder: the float graph drawn from `spec`, and its quantization policy."""
    shutil.rmtree(case_dir, ignore_errors=True)
    (case_dir / "float").mkdir(parents=True)
    random_graph(**spec["graph"]).save(case_dir / "float")
    (case_dir / "case.json").write_text(
        json.dumps({"weights": spec["weights"], "prefix": spec["prefix"]}, indent=2, sort_keys=True) + "\n"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Regenerate the emitter's golden files.")
    parser.add_argument("--new-graphs", action="store_true", help="draw the float graphs again, not only the C")
    args = parser.parse_args(argv)
    for name, spec in CASES.items():
        case_dir = HERE / name
        if args.new_graphs or not (case_dir / "case.json").is_file():
            new_case(case_dir, spec)
        for old in [*case_dir.glob("*.c"), *case_dir.glob("*.h")]:
            old.unlink()
        for fname, text in expected_files(case_dir).items():
            (case_dir / fname).write_text(text)
        print(f"wrote {case_dir}")


if __name__ == "__main__":
    main()
