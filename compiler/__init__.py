"""stapes: small recurrent networks -> compressed, bit-exact fixed-point C for low-power audio devices.

The Python API, in pipeline order (``docs/python-api.md`` has a complete example)::

    graph = stapes.load("model")                 # or stapes.from_torch(rnn, linear), stapes.train(...)
    small = stapes.compress_model(graph, rank=8) # truncated SVD of the recurrent matrices
    q = stapes.quantize(small, calibration=x)    # fixed point, ranges from calibration inputs
    stapes.emit_c(q, "c")                        # <prefix>.c/.h + the runtime, a folder that builds
    result = stapes.verify(q, x)                 # the C against the integer reference, bit for bit
    print(stapes.budget(q, "mps2-an386", frame_ms=8).format())

Every function imports its stage when called, so ``import stapes`` stays light (no torch).
The names differ from the stage packages they call (``compress_model`` uses ``stapes.compress``,
``emit_c`` uses ``stapes.emit``) because a subpackage, once imported, is an attribute of its parent.
"""

from __future__ import annotations

import importlib

from stapes._version import __version__

__all__ = [
    "FloatGraph",
    "QGraph",
    "VerifyResult",
    "Budget",
    "load",
    "from_torch",
    "train",
    "compress_model",
    "quantize",
    "emit_c",
    "verify",
    "budget",
    "__version__",
]

# Types re-exported lazily: name -> module that defines it.
_TYPES = {
    "FloatGraph": "stapes.ir.float_graph",
    "QGraph": "stapes.ir.qgraph",
    "VerifyResult": "stapes.studies.verify",
    "Budget": "stapes.target.budget",
}


def __getattr__(name: str):
    if name in _TYPES:
        return getattr(importlib.import_module(_TYPES[name]), name)
    raise AttributeError(f"module 'stapes' has no attribute {name!r}")


def load(folder):
    """A model folder (graph.json, from `stapes train`/`compress`/`import-onnx`) as a FloatGraph,
    or a QModel folder (qgraph.json, from `stapes quantize`) as a QGraph."""
    from pathlib import Path

    from stapes.errors import UserError
    from stapes.ir.float_graph import FloatGraph, is_model_folder
    from stapes.ir.qgraph import QGraph, is_qmodel_folder

    if is_qmodel_folder(folder):
        return QGraph.load(folder)
    if is_model_folder(folder):
        return FloatGraph.load(folder)
    raise UserError(
        f"{Path(folder)}: neither a model folder (graph.json + graph.npz) nor a QModel folder "
        "(qgraph.json + qgraph.npz)"
    )


def from_torch(module, linear=None, *, readout_mode: str = "per_step", readout_activation: str = "linear"):
    """A torch model as a FloatGraph: a ``torch.nn.RNN`` (tanh, one forward layer) with an optional
    ``torch.nn.Linear`` readout, or a stapes ``RecurrentModel`` (from :func:`train`'s frontend)."""
    from stapes.frontend.extract import to_graph
    from stapes.frontend.models import RecurrentModel
    from stapes.frontend.onnx_import import from_torch_rnn

    if isinstance(module, RecurrentModel):
        return to_graph(module)
    return from_torch_rnn(module, linear, readout_mode=readout_mode, readout_activation=readout_activation)


def train(
    task: str = "memorization",
    *,
    cell: str = "mgu",
    hidden: int = 64,
    steps: int | None = None,
    seed: int = 0,
    target: float = 1.0,
    progress: bool = False,
    **task_params,
):
    """Train a `cell` ("rnn" or "mgu") of `hidden` units on a registered task (``task_params`` go
    to the task, e.g. ``delay=20``) and return it as a FloatGraph that remembers its task."""
    from stapes.frontend.train import train_new
    from stapes.tasks import make_task

    trained = train_new(
        make_task(task, **task_params), cell, hidden, progress=progress, steps=steps, seed=seed, target=target
    )
    return trained.graph({"source": "stapes.train"})


def compress_model(
    graph,
    *,
    rank: int | None = None,
    energy: float | None = None,
    max_error: float | None = None,
    max_drop: float | None = None,
    error_norm: str = "spectral",
    joint: bool = False,
):
    """`graph` with its recurrent matrices replaced by truncated-SVD factors. Give exactly one
    policy: a fixed `rank`, the `energy` (fraction of Σσ²) to keep, the largest relative truncation
    error `max_error`, or the largest predicted metric drop `max_drop` (needs the graph's task)."""
    from stapes.compress.degradation import compress_with_policy
    from stapes.studies.compress_report import rank_policy

    return compress_with_policy(graph, rank_policy(rank, energy, max_error, max_drop, error_norm), joint=joint)


def quantize(
    graph,
    calibration=None,
    *,
    weights: str = "int16",
    input_range: float | None = None,
    sequences: int = 256,
    seed: int = 0,
):
    """The fixed-point QGraph of `graph` (int8 or int16 weights). Ranges come from `calibration`
    (float inputs (B, T, I), or a .npy file), else from `sequences` sequences of the graph's task,
    else from the analytic worst case with ``|x| <= input_range``."""
    from stapes.studies.deploy import quantize_calibrated

    return quantize_calibrated(
        graph, calibration, weights=weights, input_range=input_range, sequences=sequences, seed=seed
    )


def emit_c(q, out=None, *, prefix: str = "model", runtime: bool = True) -> dict:
    """The C of QGraph `q`: ``{"<prefix>.c": text, "<prefix>.h": text}``. With `out`, also written
    into that new folder (atomically) with the runtime beside it, so the folder builds on its own."""
    if out is None:
        from stapes.emit.model_c import emit

        return emit(q, prefix)
    from stapes.studies.deploy import write_c_folder

    return write_c_folder(q, out, prefix, with_runtime=runtime)


def verify(
    q, x=None, *, sequences: int = 512, steps: int = 100, rank: int | None = None, seed: int = 1234, float_graph=None
):
    """Build the C of `q` on this machine, run it on float inputs `x` (B, T, I) (default: the
    task's test split, or seeded random inputs), and compare every state and output with the
    integer reference. Returns a :class:`VerifyResult` (``mismatches``, ``first_mismatch``, op
    counts, task metrics float vs fixed)."""
    from stapes.studies.verify import verify as run_verify

    return run_verify(q, x, sequences=sequences, steps=steps, rank=rank, seed=seed, float_graph=float_graph)


def budget(
    model, board: str = "mps2-an386", frame_ms: float = 8.0, *, weights: str = "int16", clock_hz: int | None = None
):
    """Flash, RAM, MACs, instructions and cycles per frame of `model` (a QGraph, or a FloatGraph
    at `weights` width) on the named board profile, before any build. Returns a Budget
    (``.format()`` gives the table `stapes budget` prints)."""
    from stapes.target.budget import budget_for

    return budget_for(model, board, frame_ms, weights=weights, clock_hz=clock_hz)
