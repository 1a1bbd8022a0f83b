"""Torch models with explicit equations: the Elman RNN and the minimal gated unit (MGU).

Same equations as :mod:`stapes.ir.float_graph`, torch-style weights (``w`` is (out, in)):

* Elman RNN: ``h_t = tanh(W x_t + U h_{t-1} + b)``
* MGU:       ``f_t = sigmoid(W_f x_t + U_f h_{t-1} + b_f)``
             ``c_t = tanh(W_h x_t + U_h (f_t * h_{t-1}) + b_h)``
             ``h_t = (1 - f_t) * h_{t-1} + f_t * c_t``   (computed as ``h + f * (c - h)``)
* readout:   ``y_t = act(V h_t + c)`` on every step or on the last step only.

A recurrent matrix (``u``; ``u_f``, ``u_h``) is a submodule, :class:`DenseMatrix` or
:class:`LowRankMatrix` (trainable factors ``a`` (N, r), ``b`` (r, N)), so a compressed graph runs
in torch and its factors can be fine-tuned.

Speed: the input projections of the whole sequence are one matmul before the time loop; inside the
loop each step is one ``addmm`` per recurrent matrix plus the pointwise ops. The loop multiplies by
the dense value of each recurrent matrix (``a @ b`` is formed once per forward for a low-rank
matrix), which is mathematically the same product and is faster in torch for the small sizes here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from stapes.errors import UserError

CELLS = ("rnn", "mgu")
RECURRENT_NAMES = {"rnn": ("u",), "mgu": ("u_f", "u_h")}

# Initial input-weight scale per cell. The tanh RNN's state has no gate to protect it: at scale 1
# every one-hot input step drives the units into saturation and overwrites what the orthogonal U
# was carrying, so memorization does not learn beyond T = 20 (recall at chance at T = 50). At 0.2
# the units stay near the linear range and it learns T = 50 (N = 32, 64, 128) and N = 128 at
# T = 20 in 50-1400 steps on every seed tried, with the same frequency-task accuracy
# (docs/models-and-tasks.md). The MGU's gate already does this.
DEFAULT_INPUT_SCALE = {"rnn": 0.2, "mgu": 1.0}


@dataclass
class ModelConfig:
    """Everything needed to rebuild a :class:`RecurrentModel` (JSON-able via ``asdict``).

    ``ranks``: None (all recurrent matrices dense), an int (every recurrent matrix low-rank with that
    rank) or a dict ``{"u_f": 8, "u_h": 16}`` (the named ones low-rank; a missing name stays dense).
    ``spectral_radius``: the recurrent matrices are scaled at init so their largest |eigenvalue| is
    this (None: keep the raw init). ``recurrent_init``: "orthogonal" or "normal".
    ``gate_bias``: initial MGU gate bias ``b_f``; negative means a slow update (long memory).
    ``input_scale``: input weights start as ``N(0, input_scale²/I)``; None takes the cell's
    :data:`DEFAULT_INPUT_SCALE`.
    """

    cell: str = "mgu"
    input_size: int = 1
    hidden_size: int = 64
    output_size: int = 1
    readout_mode: str = "per_step"
    readout_activation: str = "linear"
    recurrent_init: str = "orthogonal"
    spectral_radius: float | None = 1.0
    input_scale: float | None = None
    gate_bias: float = 0.0
    ranks: int | dict | None = None

    def __post_init__(self):
        if self.cell not in CELLS:
            raise UserError(f"unknown cell {self.cell!r}: expected one of {', '.join(CELLS)}")
        for name in ("input_size", "hidden_size", "output_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"{name.replace('_', ' ')} must be a positive integer, got {value!r}")
        if self.input_scale is None:
            self.input_scale = DEFAULT_INPUT_SCALE[self.cell]
        if not (isinstance(self.input_scale, (int, float)) and not isinstance(self.input_scale, bool)) or not (
            math.isfinite(self.input_scale) and self.input_scale > 0
        ):
            raise UserError(f"input scale must be a positive number, got {self.input_scale!r}")
        if self.readout_mode not in ("per_step", "final"):
            raise UserError(f"readout mode {self.readout_mode!r} is not 'per_step' or 'final'")
        if self.readout_activation not in ("linear", "sigmoid"):
            raise UserError(f"readout activation {self.readout_activation!r} is not 'linear' or 'sigmoid'")
        if self.recurrent_init not in ("orthogonal", "normal"):
            raise UserError(f"recurrent init {self.recurrent_init!r} is not 'orthogonal' or 'normal'")
        if self.spectral_radius is not None and not self.spectral_radius > 0:
            raise UserError(f"spectral radius must be positive, got {self.spectral_radius}")
        self.ranks = self.normalized_ranks()

    def normalized_ranks(self) -> dict[str, int] | None:
        names = RECURRENT_NAMES[self.cell]
        if self.ranks is None:
            return None
        ranks = {n: self.ranks for n in names} if isinstance(self.ranks, int) else dict(self.ranks)
        for name, r in ranks.items():
            if name not in names:
                raise UserError(f"{self.cell} has no recurrent matrix {name!r} (it has {', '.join(names)})")
            if not isinstance(r, int) or not 1 <= r <= self.hidden_size:
                raise UserError(f"rank of {name} must be an integer in 1..{self.hidden_size}, got {r!r}")
        return ranks or None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class DenseMatrix(nn.Module):
    """A dense recurrent matrix U (N, N): ``forward(h) = h @ U.T``."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())

    def dense(self) -> torch.Tensor:
        return self.weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.weight.T

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.weight.shape)


class LowRankMatrix(nn.Module):
    """``U ≈ a @ b`` with trainable a (N, r), b (r, N): ``forward(h) = (h @ b.T) @ a.T``.

    ``sigma`` (r,) is a buffer holding the singular values the factors were balanced for
    (``a = P Σ^½``, ``b = Σ^½ Qᵀ``); :meth:`rebalance_` restores that form after fine-tuning.
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor, sigma: torch.Tensor | None = None):
        super().__init__()
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
            raise UserError(f"low-rank factors have inconsistent shapes a {tuple(a.shape)}, b {tuple(b.shape)}")
        self.a = nn.Parameter(a.clone())
        self.b = nn.Parameter(b.clone())
        self.register_buffer("sigma", torch.zeros(a.shape[1], dtype=a.dtype))
        if sigma is None:
            self.rebalance_()
        else:
            self.sigma.copy_(sigma)

    @property
    def rank(self) -> int:
        return int(self.a.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.a.shape[0]), int(self.b.shape[1]))

    def dense(self) -> torch.Tensor:
        return self.a @ self.b

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return (h @ self.b.T) @ self.a.T

    @torch.no_grad()
    def rebalance_(self) -> None:
        """Rewrite the factors as balanced SVD factors of the same product, σ descending
        (:func:`stapes.ir.lowrank.rebalanced`, in float64)."""
        from stapes.ir.lowrank import rebalanced

        m = rebalanced(self.a.double().numpy(), self.b.double().numpy())
        self.a.copy_(torch.tensor(m.a))
        self.b.copy_(torch.tensor(m.b))
        self.sigma.copy_(torch.tensor(m.sigma))

    def is_svd_form(self, rtol: float = 1e-4) -> bool:
        """True if the factors are SVD factors for ``sigma`` up to a per-component split of σ:
        orthogonal columns of a, orthogonal rows of b, ``|a_k| |b_k| = σ_k`` (to rtol of σ_max),
        σ descending. Balanced factors and the ``P Σ, Qᵀ`` split both qualify."""
        with torch.no_grad():
            a, b, s = self.a.double(), self.b.double(), self.sigma.double()
            if torch.any(s[1:] > s[:-1]) or torch.any(s < 0):
                return False
            ga, gb = a.T @ a, b @ b.T
            da, db = torch.diagonal(ga), torch.diagonal(gb)
            if torch.any(da <= 0) or torch.any(db <= 0):
                return False
            off_a = (ga - torch.diag(da)) / torch.sqrt(da[:, None] * da[None, :])
            off_b = (gb - torch.diag(db)) / torch.sqrt(db[:, None] * db[None, :])
            norms_ok = torch.allclose(torch.sqrt(da * db), s, atol=rtol * float(s.max()), rtol=0)
            return bool(norms_ok and off_a.abs().max() <= rtol and off_b.abs().max() <= rtol)


def _scale_to_spectral_radius(u: torch.Tensor, radius: float) -> torch.Tensor:
    current = torch.linalg.eigvals(u.double()).abs().max().item()
    return u * (radius / current) if current > 0 else u


def _init_recurrent(cfg: ModelConfig, gen: torch.Generator) -> torch.Tensor:
    n = cfg.hidden_size
    g = torch.randn(n, n, generator=gen, dtype=torch.float64)
    if cfg.recurrent_init == "orthogonal":
        q, r = torch.linalg.qr(g)
        u = q * torch.sign(torch.diagonal(r))
    else:
        u = g / math.sqrt(n)
    if cfg.spectral_radius is not None:
        u = _scale_to_spectral_radius(u, cfg.spectral_radius)
    return u.float()


def _make_matrix(u: torch.Tensor, rank: int | None) -> nn.Module:
    if rank is None:
        return DenseMatrix(u)
    p, s, vt = torch.linalg.svd(u.double())
    root = s[:rank].sqrt()
    return LowRankMatrix((p[:, :rank] * root).float(), (root[:, None] * vt[:rank]).float(), s[:rank].float())


class RecurrentModel(nn.Module):
    """An RNN or MGU cell plus a dense readout, batch-first.

    ``forward(x (B, T, I), h0=None) -> (outputs, states)`` with the semantics of
    ``FloatGraph.run``: outputs (B, T, O) per step or (B, O) for a final readout (after the readout
    activation), states (B, T, N). ``step(x_t, h) -> h`` and ``readout(h)`` are the one-step API.
    Weights are initialised from ``seed`` with a private generator (the global RNG is untouched).
    """

    def __init__(self, config: ModelConfig, seed: int = 0):
        super().__init__()
        self.config = config
        gen = torch.Generator().manual_seed(int(seed))
        n, i, o = config.hidden_size, config.input_size, config.output_size
        ranks = config.ranks or {}

        def input_weight():
            return nn.Parameter(torch.randn(n, i, generator=gen) * (config.input_scale / math.sqrt(i)))

        if config.cell == "rnn":
            self.w = input_weight()
            self.b = nn.Parameter(torch.zeros(n))
            self.u = _make_matrix(_init_recurrent(config, gen), ranks.get("u"))
        else:
            self.w_f = input_weight()
            self.b_f = nn.Parameter(torch.full((n,), float(config.gate_bias)))
            self.u_f = _make_matrix(_init_recurrent(config, gen), ranks.get("u_f"))
            self.w_h = input_weight()
            self.b_h = nn.Parameter(torch.zeros(n))
            self.u_h = _make_matrix(_init_recurrent(config, gen), ranks.get("u_h"))
        self.readout_w = nn.Parameter(torch.randn(o, n, generator=gen) / math.sqrt(n))
        self.readout_b = nn.Parameter(torch.zeros(o))

    # ---- structure ------------------------------------------------------------------------
    @property
    def cell(self) -> str:
        return self.config.cell

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def recurrent_matrices(self) -> dict[str, nn.Module]:
        """{"u": m} or {"u_f": m, "u_h": m}: each a DenseMatrix or LowRankMatrix."""
        return {name: getattr(self, name) for name in RECURRENT_NAMES[self.cell]}

    def set_recurrent(self, name: str, matrix: nn.Module) -> None:
        """Replace one recurrent matrix (e.g. by a LowRankMatrix) and keep config.ranks in step."""
        if name not in RECURRENT_NAMES[self.cell]:
            raise UserError(f"{self.cell} has no recurrent matrix {name!r}")
        if tuple(matrix.shape) != (self.hidden_size, self.hidden_size):
            raise UserError(f"{name}: expected shape {(self.hidden_size,) * 2}, got {tuple(matrix.shape)}")
        setattr(self, name, matrix)
        ranks = {k: m.rank for k, m in self.recurrent_matrices().items() if isinstance(m, LowRankMatrix)}
        self.config = dataclasses.replace(self.config, ranks=ranks or None)

    # ---- computation ----------------------------------------------------------------------
    def _input_projection(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.cell == "rnn":
            return (F.linear(x, self.w, self.b),)
        return F.linear(x, self.w_f, self.b_f), F.linear(x, self.w_h, self.b_h)

    def _update(self, proj: tuple[torch.Tensor, ...], h: torch.Tensor, us_t: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """One step from precomputed input projections; ``us_t`` are the transposed dense U's."""
        if self.cell == "rnn":
            return torch.tanh(torch.addmm(proj[0], h, us_t[0]))
        f = torch.sigmoid(torch.addmm(proj[0], h, us_t[0]))
        c = torch.tanh(torch.addmm(proj[1], f * h, us_t[1]))
        return h + f * (c - h)

    def _dense_transposed(self) -> tuple[torch.Tensor, ...]:
        return tuple(m.dense().T for m in self.recurrent_matrices().values())

    def initial_state(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        return torch.zeros(batch, self.hidden_size, dtype=like.dtype, device=like.device)

    def step(self, x_t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One time step: x_t (B, I), h (B, N) -> the next h (B, N)."""
        return self._update(self._input_projection(x_t), h, self._dense_transposed())

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        """act(V h + c) on (..., N)."""
        y = F.linear(h, self.readout_w, self.readout_b)
        return torch.sigmoid(y) if self.config.readout_activation == "sigmoid" else y

    def run_states(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, I) -> every step's hidden state (B, T, N)."""
        if x.ndim != 3 or x.shape[2] != self.config.input_size:
            raise UserError(f"inputs: expected shape (batch, time, {self.config.input_size}), got {tuple(x.shape)}")
        h = self.initial_state(x.shape[0], x) if h0 is None else h0
        us_t = self._dense_transposed()
        per_step = [p.unbind(1) for p in self._input_projection(x)]
        states = []
        for proj in zip(*per_step):
            h = self._update(proj, h, us_t)
            states.append(h)
        return torch.stack(states, dim=1)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.run_states(x, h0)
        if self.config.readout_mode == "final":
            return self.readout(states[:, -1]), states
        return self.readout(states), states
