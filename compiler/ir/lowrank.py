"""The algebra of truncated-SVD factors: how a :class:`~stapes.ir.float_graph.LowRank` is built.

A matrix ``w = P Σ Qᵀ`` (singular values descending) truncated to rank r is stored as ``a @ b``:

* balanced (the default): ``a = P_r Σ_r^½``, ``b = Σ_r^½ Q_rᵀ``; both factors have the same
  scale, hence similar dynamic ranges in fixed point;
* unbalanced: ``a = P_r Σ_r``, ``b = Q_rᵀ`` (orthonormal rows in ``b``).

Both give the same product. Eckart–Young: ``‖w − a b‖₂ = σ_{r+1}`` and
``‖w − a b‖_F = sqrt(Σ_{i>r} σ_i²)``. Pure linear algebra in float64 (numpy only); the rank
policies and the graph-level compression built on it live in :mod:`stapes.compress.svd`.
"""

from __future__ import annotations

import numpy as np

from stapes.errors import UserError
from stapes.ir.float_graph import LowRank


def svd(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``w = p @ diag(s) @ qt`` with s descending (thin SVD, float64)."""
    return np.linalg.svd(np.asarray(w, dtype=np.float64), full_matrices=False)


def truncated_factors(p, s, qt, rank: int, balanced: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The factors ``(a, b)`` of the rank-`rank` truncation of the SVD ``p, s, qt`` (module docstring)."""
    if balanced:
        root = np.sqrt(s[:rank])
        return p[:, :rank] * root, root[:, None] * qt[:rank]
    return p[:, :rank] * s[:rank], qt[:rank].copy()


def check_rank(rank, n: int) -> None:
    """UserError unless `rank` is an integer in 1..n."""
    if int(rank) != rank or not 1 <= rank <= n:
        raise UserError(f"rank {rank} is outside 1..{n}")


def svd_factors(w: np.ndarray, rank: int, balanced: bool = True) -> LowRank:
    """The rank-`rank` truncated SVD of `w` as a LowRank (balanced factors by default)."""
    w = np.asarray(w, dtype=np.float64)
    check_rank(rank, min(w.shape))
    p, s, qt = svd(w)
    a, b = truncated_factors(p, s, qt, rank, balanced)
    return LowRank(a, b, s[:rank])


def rebalanced(a: np.ndarray, b: np.ndarray) -> LowRank:
    """Balanced SVD factors (σ descending) of the same product ``a @ b``, from the thin factors
    alone: QR of ``a`` and ``bᵀ``, then the SVD of the r×r core (float64)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    qa, ra = np.linalg.qr(a)
    qb, rb = np.linalg.qr(b.T)
    p, s, vt = np.linalg.svd(ra @ rb.T)
    root = np.sqrt(s)
    return LowRank((qa @ p) * root, root[:, None] * (vt @ qb.T), s)
