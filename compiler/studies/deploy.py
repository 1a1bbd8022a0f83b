"""Deployment steps that read and write folders: calibrated quantization into a QModel folder and
the emitted C with the runtime beside it. The CLI, the demo and the Python API share them."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np

from stapes.emit.model_c import emit
from stapes.errors import UserError
from stapes.fixed.quantize import quantize_graph
from stapes.fsutil import atomic_dir, read_json
from stapes.ir.float_graph import FloatGraph
from stapes.ir.qgraph import QGraph
from stapes.tasks import task_from_config

# The runtime folders an emitted model needs beside it, as they are laid out in runtime_c/.
RUNTIME_PARTS = ("include", "src", "host")
# The build fragments a firmware project includes (runtime_c/CMakeLists.txt, runtime_c/stapes.mk).
RUNTIME_BUILD_FILES = ("CMakeLists.txt", "stapes.mk")


def calibration_inputs(graph: FloatGraph, calibration=None, sequences: int = 256, seed: int = 0):
    """(float inputs (B, T, I) or None, description) for calibrating `graph`: the given array,
    a ``.npy`` file, else `sequences` sequences of the task's train split, else None (analytic)."""
    if isinstance(calibration, (str, Path)):
        try:
            x = np.load(calibration, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"calibration file {calibration}: cannot read ({e})") from None
        return x, f"file {calibration}"
    if calibration is not None:
        return np.asarray(calibration, dtype=np.float64), "inputs given by the caller"
    if graph.task:
        if sequences < 1:
            raise UserError(f"calibration sequences must be >= 1, got {sequences}")
        task = task_from_config(graph.task)
        return (
            task.sample("train", sequences, seed).x,
            f"task {graph.task.get('name')} train split, {sequences} sequences, seed {seed}",
        )
    return None, "analytic"


def quantize_calibrated(
    graph: FloatGraph,
    calibration=None,
    *,
    weights: str = "int16",
    input_range: float | None = None,
    sequences: int = 256,
    seed: int = 0,
    provenance: dict | None = None,
) -> QGraph:
    """Quantize `graph` with ranges from :func:`calibration_inputs`, or from ``|x| <= input_range``
    when there is no calibration data."""
    x, source = calibration_inputs(graph, calibration, sequences, seed)
    if input_range is not None and x is not None:
        raise UserError(f"an input range only applies without calibration data (ranges come from the {source})")
    return quantize_graph(
        graph, x, weights=weights, input_bound=input_range, provenance={"calibration": source, **(provenance or {})}
    )


def _recorded_dense_metric(path: Path) -> dict | None:
    """{"name", "value"} of the dense model's metric that `compress` recorded beside a compressed
    model, or None (no report, or a model without a task)."""
    if not path.is_file():
        return None
    report = read_json(path, "compression report")
    if not isinstance(report, dict):
        raise UserError(f"{path}: not a compression report (a JSON object)")
    value, name = report.get("metric_dense"), report.get("metric_name")
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not np.isfinite(value)
        or not isinstance(name, str)
    ):
        raise UserError(f"{path}: metric_dense must be a finite number and metric_name a string")
    return {"name": name, "value": float(value)}


def quantize_folder(model_folder, out_folder, **kwargs) -> QGraph:
    """Quantize the model folder `model_folder` into the new QModel folder `out_folder`
    (qgraph.json/npz, plus the float graph in float/), written atomically."""
    graph = FloatGraph.load(model_folder)
    extra = {"source_model": str(model_folder)}
    dense = _recorded_dense_metric(Path(model_folder) / "compress.json")
    if dense is not None:
        extra["metric_dense"] = dense
    q = quantize_calibrated(graph, provenance=extra, **kwargs)
    with atomic_dir(out_folder) as tmp:
        q.save(tmp)
        (tmp / "float").mkdir()
        graph.save(tmp / "float")
    return q


def runtime_files() -> list[tuple[str, Path]]:
    """(relative path, file) of every runtime source and header an emitted model builds with."""
    root = importlib.resources.files("stapes.runtime_c")
    files = []
    for part in RUNTIME_PARTS:
        folder = Path(str(root / part))
        if folder.is_dir():
            files += [(f"{part}/{p.name}", p) for p in sorted(folder.iterdir()) if p.suffix in (".c", ".h")]
    files += [(name, Path(str(root / name))) for name in RUNTIME_BUILD_FILES]
    return files


def write_c_folder(q: QGraph, out, prefix: str = "model", with_runtime: bool = True) -> dict[str, str]:
    """Emit `q` as ``<prefix>.c/.h`` into the new folder `out` (atomically), with the runtime in
    ``runtime/`` unless `with_runtime` is False, so the folder builds on its own. Returns the
    generated files (name -> text)."""
    files = emit(q, prefix)
    with atomic_dir(out) as tmp:
        for name, text in files.items():
            (tmp / name).write_text(text)
        if with_runtime:
            for rel, path in runtime_files():
                target = tmp / "runtime" / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(path.read_bytes())
    return files
