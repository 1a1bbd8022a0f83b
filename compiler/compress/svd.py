"""Truncated-SVD compression of the recurrent matrices of a FloatGraph (numpy only).

Each recurrent matrix ``U`` (N, N) (``u`` for the RNN, ``u_f`` and ``u_h`` for the MGU) is
replaced by ``LowRank(a, b, sigma)`` with ``U ≈ a @ b``:

* balanced (default): ``a = P_r Σ_r^½``, ``b = Σ_r^½ Q_rᵀ`` — both factors have the same scale,
  which gives them similar dynamic ranges for fixed point;
* unbalanced: ``a = P_r Σ_r``, ``b = Q_rᵀ`` (orthonormal rows in ``b``).

Both give the same product, so the float behaviour is identical; only quantization differs.

Cost: a dense step costs N² MACs per matrix, a low-rank one ``N r + r N = 2 N r`` (``z = b h``
then ``a z``). Low rank saves MACs only when ``r < N/2``; :func:`recurrent_cost` says so.

MGU ``joint`` mode factors the stacked ``[U_f; U_h]`` (2N, N) once, so both matrices share
the same ``b`` factor. That saves parameters (3Nr instead of 4Nr) but **not** MACs: ``U_f``
multiplies ``h`` while ``U_h`` multiplies ``f ⊙ h``, so ``b h`` and ``b (f ⊙ h)`` are two
different products every step.

Rank policies (:class:`RankPolicy`): a fixed rank, an energy fraction, a maximum relative
spectral or Frobenius error, or a maximum predicted metric drop (first-order perturbation
model, :mod:`stapes.compress.perturbation`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stapes.errors import UserError
from stapes.ir.float_graph import FloatGraph, LowRank, Matrix, MGUCell, dense

POLICY_KINDS = ("rank", "energy", "spectral", "frobenius", "degradation")


@dataclass(frozen=True)
class RankPolicy:
    """How to pick the rank of each recurrent matrix.

    * ``rank``: a fixed rank ``r`` (an integer ≥ 1; clipped to N is an error, not silent).
    * ``energy``: the smallest r with ``Σ_{i≤r} σ_i² ≥ value · Σ σ_i²`` (0 < value ≤ 1).
    * ``spectral``: the smallest r with ``σ_{r+1} / σ_1 ≤ value`` (relative 2-norm error).
    * ``frobenius``: the smallest r with ``sqrt(Σ_{i>r} σ_i²) / ‖U‖_F ≤ value``.
    * ``degradation``: the smallest common rank whose first-order *predicted* task metric is
      within ``value`` of the uncompressed one (needs the graph's task; see
      :func:`rank_for_degradation`).
    """

    kind: str
    value: float

    def __post_init__(self):
        if self.kind not in POLICY_KINDS:
            raise UserError(f"rank policy {self.kind!r} is not one of {POLICY_KINDS}")
        v = self.value
        if self.kind == "rank" and (int(v) != v or v < 1):
            raise UserError(f"rank must be an integer >= 1, got {v}")
        if self.kind == "energy" and not 0 < v <= 1:
            raise UserError(f"energy fraction must be in (0, 1], got {v}")
        if self.kind in ("spectral", "frobenius", "degradation") and not v >= 0:
            raise UserError(f"maximum {self.kind} error must be >= 0, got {v}")

    def describe(self) -> dict:
        return {"kind": self.kind, "value": self.value}


def svd(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``w = p @ diag(s) @ qt`` with s descending (float64)."""
    return np.linalg.svd(np.asarray(w, dtype=np.float64), full_matrices=False)


def _factors(p, s, qt, rank: int, balanced: bool) -> tuple[np.ndarray, np.ndarray]:
    if balanced:
        root = np.sqrt(s[:rank])
        return p[:, :rank] * root, root[:, None] * qt[:rank]
    return p[:, :rank] * s[:rank], qt[:rank].copy()


def svd_factors(w: np.ndarray, rank: int, balanced: bool = True) -> LowRank:
    """The rank-`rank` truncated SVD of `w` as a LowRank (balanced factors by default).

    ``‖w − a b‖₂ = σ_{rank+1}`` and ``‖w − a b‖_F = sqrt(Σ_{i>rank} σ_i²)`` (Eckart–Young).
    """
    w = np.asarray(w, dtype=np.float64)
    _check_rank(rank, min(w.shape))
    p, s, qt = svd(w)
    a, b = _factors(p, s, qt, rank, balanced)
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


def _check_rank(rank, n: int) -> None:
    if int(rank) != rank or not 1 <= rank <= n:
        raise UserError(f"rank {rank} is outside 1..{n}")


def choose_rank(sigma: np.ndarray, policy: RankPolicy) -> int:
    """The rank a spectrum-based policy picks for singular values `sigma` (descending)."""
    s = np.asarray(sigma, dtype=np.float64)
    n = s.shape[0]
    if policy.kind == "rank":
        _check_rank(policy.value, n)
        return int(policy.value)
    if policy.kind == "degradation":
        raise UserError("the degradation policy needs the graph and its task: use rank_for_degradation")
    energy = s ** 2
    total = energy.sum()
    if total == 0:
        return 1
    # tail[r] = Σ_{i>r} σ_i² for r = 0..n (tail[n] = 0)
    tail = np.concatenate([np.cumsum(energy[::-1])[::-1], [0.0]])
    ranks = np.arange(1, n + 1)
    if policy.kind == "energy":
        ok = 1.0 - tail[1:] / total >= policy.value - 1e-12
    elif policy.kind == "spectral":
        nxt = np.concatenate([s[1:], [0.0]])  # σ_{r+1} for r = 1..n
        ok = nxt / s[0] <= policy.value
    else:  # frobenius
        ok = np.sqrt(tail[1:] / total) <= policy.value
    return int(ranks[ok][0])  # ok[-1] is always True (zero error at full rank)


def truncation_errors(sigma: np.ndarray, rank: int) -> dict:
    """Absolute and relative spectral / Frobenius errors of keeping `rank` of `sigma`."""
    s = np.asarray(sigma, dtype=np.float64)
    spec = float(s[rank]) if rank < s.shape[0] else 0.0
    frob = float(np.sqrt(np.sum(s[rank:] ** 2)))
    fnorm = float(np.sqrt(np.sum(s ** 2)))
    return {"spectral": spec, "frobenius": frob,
            "spectral_rel": spec / float(s[0]) if s[0] > 0 else 0.0,
            "frobenius_rel": frob / fnorm if fnorm > 0 else 0.0,
            "energy_kept": 1.0 - (frob / fnorm) ** 2 if fnorm > 0 else 1.0}


def compress_graph(graph: FloatGraph, policy: RankPolicy, *, joint: bool = False,
                   balanced: bool = True, data=None) -> FloatGraph:
    """A copy of `graph` whose recurrent matrices are truncated-SVD LowRank factors.

    Matrices are factored separately (each gets the rank `policy` picks for its own spectrum),
    or, for an MGU with ``joint=True``, as the stacked ``[U_f; U_h]`` sharing one ``b`` factor.
    A matrix that is already LowRank is re-factored from its dense value. The graph's
    provenance gains a ``compress`` entry (policy, ranks, errors). `data` (a task Batch) is
    only used by the ``degradation`` policy (default: the task's validation split).
    """
    if policy.kind == "degradation":
        rank = rank_for_degradation(graph, policy.value, joint=joint, data=data)
        return compress_graph(graph, RankPolicy("rank", rank), joint=joint, balanced=balanced)
    mats = {k: dense(m) for k, m in graph.cell.recurrent().items()}
    new: dict[str, LowRank] = {}
    report: dict[str, dict] = {}
    if joint:
        if not isinstance(graph.cell, MGUCell):
            raise UserError("--joint needs an MGU (it factors [U_f; U_h] together)")
        n = graph.hidden_size
        p, s, qt = svd(np.vstack([mats["u_f"], mats["u_h"]]))
        r = choose_rank(s, policy)
        a, b = _factors(p, s, qt, r, balanced)
        new["u_f"], new["u_h"] = LowRank(a[:n], b, s[:r]), LowRank(a[n:], b, s[:r])
        report["u_f+u_h"] = {"rank": r, **truncation_errors(s, r)}
    else:
        for name, w in mats.items():
            p, s, qt = svd(w)
            r = choose_rank(s, policy)
            new[name] = LowRank(*_factors(p, s, qt, r, balanced), s[:r])
            report[name] = {"rank": r, **truncation_errors(s, r)}
    cell = type(graph.cell)(**{**_cell_fields(graph.cell), **new})
    info = {"policy": policy.describe(), "joint": joint, "balanced": balanced, "matrices": report}
    return graph.replace_cell(cell, compress=info)


def _cell_fields(cell) -> dict:
    return {k: getattr(cell, k) for k in cell.__dataclass_fields__}


def with_rank(graph: FloatGraph, rank: int, *, joint: bool = False, balanced: bool = True) -> FloatGraph:
    """Shorthand: every recurrent matrix at the same fixed `rank`."""
    return compress_graph(graph, RankPolicy("rank", rank), joint=joint, balanced=balanced)


def rank_for_degradation(graph: FloatGraph, max_drop: float, *, joint: bool = False, data=None) -> int:
    """The smallest common rank whose first-order predicted metric drop is ≤ `max_drop`.

    The prediction linearises the cell along the uncompressed trajectory
    (:func:`stapes.compress.perturbation.predicted_metric`), so no compressed model is ever run.
    Ranks are scanned by bisection, assuming the predicted drop shrinks as rank grows.
    """
    from stapes.compress import perturbation

    task, batch = perturbation.task_and_batch(graph, data)
    base = perturbation.metric_of(task, graph, batch)
    mats = {k: dense(m) for k, m in graph.cell.recurrent().items()}

    def drop(r: int) -> float:
        lowrank = with_rank(graph, r, joint=joint).cell.recurrent()
        deltas = {k: dense(lowrank[k]) - mats[k] for k in mats}
        return base - perturbation.predicted_metric(graph, deltas, batch, task)

    lo, hi = 1, graph.hidden_size
    while lo < hi:
        mid = (lo + hi) // 2
        if drop(mid) <= max_drop:
            hi = mid
        else:
            lo = mid + 1
    return lo


# ---- cost accounting ------------------------------------------------------------------------

def matrix_cost(m: Matrix) -> dict:
    """MACs per step and parameters of one recurrent matrix, with its dense equivalent."""
    if isinstance(m, LowRank):
        (n, k), r = m.shape, m.rank
        macs = n * r + r * k
        params = macs
    else:
        n, k = m.shape
        r, macs, params = None, n * k, n * k
    return {"rank": r, "shape": [n, k], "macs": macs, "params": params, "dense_macs": n * k,
            "dense_params": n * k}


def _shares_b(cell) -> bool:
    return (isinstance(cell, MGUCell) and isinstance(cell.u_f, LowRank) and isinstance(cell.u_h, LowRank)
            and cell.u_f.b.shape == cell.u_h.b.shape and np.array_equal(cell.u_f.b, cell.u_h.b))


def recurrent_cost(graph: FloatGraph) -> dict:
    """MACs per step and parameter counts, dense vs as stored, for the recurrent part and the whole step.

    Returns per-matrix entries, recurrent totals, whole-step totals (input projections +
    recurrent + readout; a ``final`` readout is counted once per sequence, not per step), the
    MAC and parameter savings, and a plain-language ``statement`` (including the warning that a
    rank r ≥ N/2 saves nothing).
    """
    cell = graph.cell
    n = graph.hidden_size
    mats = {k: matrix_cost(m) for k, m in cell.recurrent().items()}
    rec_macs = sum(c["macs"] for c in mats.values())
    rec_params = sum(c["params"] for c in mats.values())
    dense_rec = sum(c["dense_macs"] for c in mats.values())
    shared = _shares_b(cell)
    if shared:
        rec_params -= cell.u_f.b.size  # the joint b factor is stored once
    gates = len(mats)
    input_macs = gates * n * graph.input_size
    readout_macs = graph.output_size * n
    per_step_readout = readout_macs if graph.readout.mode == "per_step" else 0
    other_params = gates * (n * graph.input_size + n) + graph.output_size * (n + 1)
    out = {
        "hidden_size": n, "matrices": mats, "joint_shared_b": shared,
        "recurrent_macs": rec_macs, "recurrent_macs_dense": dense_rec,
        "recurrent_params": rec_params, "recurrent_params_dense": dense_rec,
        "step_macs": input_macs + rec_macs + per_step_readout,
        "step_macs_dense": input_macs + dense_rec + per_step_readout,
        "params": other_params + rec_params, "params_dense": other_params + dense_rec,
    }
    out["mac_saving"] = 1.0 - rec_macs / dense_rec
    out["param_saving"] = 1.0 - rec_params / dense_rec
    out["statement"] = _statement(mats, n, shared)
    return out


def _statement(mats: dict, n: int, shared: bool) -> str:
    parts = []
    for name, c in mats.items():
        r = c["rank"]
        if r is None:
            parts.append(f"{name}: dense, {c['macs']} MACs/step")
        elif 2 * r >= n:
            parts.append(f"{name}: rank {r} >= N/2 = {n / 2:g}, low rank saves nothing "
                         f"({c['macs']} MACs/step vs {c['dense_macs']} dense); keep it dense")
        else:
            parts.append(f"{name}: rank {r}, {c['macs']} MACs/step vs {c['dense_macs']} dense "
                         f"({100 * (1 - c['macs'] / c['dense_macs']):.0f}% fewer)")
    if shared:
        parts.append("u_f and u_h share one b factor: fewer parameters, the same MACs "
                     "(u_h multiplies f*h, u_f multiplies h)")
    return "; ".join(parts)
