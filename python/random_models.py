"""Seeded random models and inputs for the equivalence tests, the soak and the benchmarks.

`random_graph` draws a FloatGraph (either cell, dense or low-rank with the balanced SVD factors
of stapes.ir.lowrank.svd_factors, normal or extreme weight scales); `random_qgraph` quantizes it;
`random_inputs` draws int16 input sequences, optionally at the int16 limits.
"""

from __future__ import annotations

import numpy as np

from stapes.fixed.quantize import quantize_graph
from stapes.ir.float_graph import FloatGraph, MGUCell, Readout, RNNCell
from stapes.ir.lowrank import svd_factors
from stapes.ir.qgraph import QGraph


def _matrix(rng: np.random.Generator, n: int, rank: int | None, scale: float):
    u = rng.normal(size=(n, n)) * scale / np.sqrt(n)
    return u if rank is None else svd_factors(u, rank)


def random_graph(
    seed: int,
    kind: str = "rnn",
    hidden: int = 8,
    inputs: int = 2,
    outputs: int = 2,
    rank: int | None = None,
    scale: float = 1.0,
    readout_mode: str = "per_step",
    readout_activation: str = "linear",
) -> FloatGraph:
    """A FloatGraph with N(0, scale^2 / fan-in) weights (scale >> 1: saturating, extreme)."""
    rng = np.random.default_rng(seed)

    def w(rows, cols):
        return rng.normal(size=(rows, cols)) * scale / np.sqrt(cols)

    def b(n):
        return rng.normal(size=n) * 0.3 * scale

    if kind == "rnn":
        cell = RNNCell(w(hidden, inputs), _matrix(rng, hidden, rank, scale), b(hidden))
    else:
        cell = MGUCell(
            w(hidden, inputs),
            _matrix(rng, hidden, rank, scale),
            b(hidden),
            w(hidden, inputs),
            _matrix(rng, hidden, rank, scale),
            b(hidden),
        )
    readout = Readout(w(outputs, hidden), b(outputs), readout_mode, readout_activation)
    return FloatGraph(cell, readout, None, {"random_seed": seed})


def random_qgraph(seed: int, weights: str = "int16", **kwargs) -> QGraph:
    """random_graph quantized with analytic ranges (|x| <= 1)."""
    return quantize_graph(random_graph(seed, **kwargs), None, weights=weights)


def random_inputs(seed: int, q: QGraph, batch: int, steps: int, extreme: bool = False) -> np.ndarray:
    """int16 (batch, steps, I): uniform over int16, or (extreme) only -32768, 0 and 32767."""
    rng = np.random.default_rng(seed)
    shape = (batch, steps, q.input_size)
    if extreme:
        return rng.choice(np.array([-32768, 0, 32767], dtype=np.int16), size=shape)
    return rng.integers(-32768, 32768, size=shape).astype(np.int16)
