"""torch model <-> FloatGraph, exactly: every parameter is copied, nothing is re-derived.

``to_graph(model)`` converts each float32 parameter to float64 (exact), so
``from_graph(to_graph(model))`` has the same weights bit for bit; ``from_graph(graph,
dtype=torch.float64)`` keeps float64 weights, so ``to_graph(from_graph(graph, torch.float64))``
equals the graph. A LowRankMatrix becomes a ``LowRank(a, b, sigma)`` with its factors as they are
(joint MGU factors that share ``b`` stay shared). After fine-tuning, the factors are no longer SVD
factors for ``sigma``: pass ``rebalance=True`` (or call ``LowRankMatrix.rebalance_()``) to restore
σ-ordered balanced factors whose prefixes are the best smaller ranks (this un-shares joint factors).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from stapes.errors import UserError
from stapes.frontend.models import RECURRENT_NAMES, LowRankMatrix, ModelConfig, RecurrentModel
from stapes.ir.float_graph import CELL_TYPES, FloatGraph, LowRank, Readout


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _matrix_to_graph(m, rebalance: bool):
    if not isinstance(m, LowRankMatrix):
        return _np(m.weight)
    if rebalance:
        m = copy.deepcopy(m)
        m.rebalance_()
    return LowRank(_np(m.a), _np(m.b), _np(m.sigma))


def to_graph(
    model: RecurrentModel, task_config: dict | None = None, provenance: dict | None = None, rebalance: bool = False
) -> FloatGraph:
    """The FloatGraph of a torch model; ``rebalance=True`` rewrites low-rank factors as balanced
    SVD factors of the same product first (see the module docstring)."""
    cfg = model.config
    if cfg.cell == "rnn":
        cell = CELL_TYPES["rnn"](_np(model.w), _matrix_to_graph(model.u, rebalance), _np(model.b))
    else:
        cell = CELL_TYPES["mgu"](
            _np(model.w_f),
            _matrix_to_graph(model.u_f, rebalance),
            _np(model.b_f),
            _np(model.w_h),
            _matrix_to_graph(model.u_h, rebalance),
            _np(model.b_h),
        )
    readout = Readout(_np(model.readout_w), _np(model.readout_b), cfg.readout_mode, cfg.readout_activation)
    return FloatGraph(cell, readout, task_config, dict(provenance or {}))


def _tensor(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(np.array(a), dtype=dtype)


def from_graph(graph: FloatGraph, dtype: torch.dtype = torch.float32) -> RecurrentModel:
    """A RecurrentModel computing the graph (dense and low-rank matrices kept as they are)."""
    if not isinstance(graph, FloatGraph):
        raise UserError(f"from_graph expects a FloatGraph, got {type(graph).__name__}")
    recurrent = graph.cell.recurrent()
    ranks = {k: m.rank for k, m in recurrent.items() if isinstance(m, LowRank)}
    cfg = ModelConfig(
        cell=graph.kind,
        input_size=graph.input_size,
        hidden_size=graph.hidden_size,
        output_size=graph.output_size,
        readout_mode=graph.readout.mode,
        readout_activation=graph.readout.activation,
        ranks=ranks or None,
    )
    model = RecurrentModel(cfg, seed=0).to(dtype)
    with torch.no_grad():
        for name in RECURRENT_NAMES[graph.kind]:
            m = recurrent[name]
            target = getattr(model, name)
            if isinstance(m, LowRank):
                target.a.copy_(_tensor(m.a, dtype))
                target.b.copy_(_tensor(m.b, dtype))
                target.sigma.copy_(_tensor(m.sigma, dtype))
            else:
                target.weight.copy_(_tensor(m, dtype))
        names = ("w", "b") if graph.kind == "rnn" else ("w_f", "b_f", "w_h", "b_h")
        for name in names:
            getattr(model, name).copy_(_tensor(getattr(graph.cell, name), dtype))
        model.readout_w.copy_(_tensor(graph.readout.w, dtype))
        model.readout_b.copy_(_tensor(graph.readout.b, dtype))
    return model
