"""Truncated-SVD compression of the recurrent matrices of a FloatGraph (numpy only).

Each recurrent matrix ``U`` (N, N) (``u`` for the RNN, ``u_f`` and ``u_h`` for the MGU) is
replaced by ``LowRank(a, b, sigma)`` with ``U ≈ a @ b``:

balanced (default) or unbalanced factors (:mod:`stapes.ir.lowrank`, which owns the factor
algebra). Both give the same product, so the float behaviour is identical; only quantization differs.

Cost: a dense step costs N² MACs per matrix, a low-rank one ``N r + r N = 2 N r`` (``z = b h``
then ``a z``). Low rank saves MACs only when ``r < N/2``; :func:`recurrent_cost` says so.

MGU ``joint`` mode factors the stacked ``[U_f; U_h]`` (2N, N) once, so both matrices share
the same ``b`` factor. That saves parameters (3Nr instead of 4Nr) but **not** MACs: ``U_f``
multiplies ``h`` while ``U_h`` multiplies ``f ⊙ h``, so ``b h`` and ``b (f ⊙ h)`` are two
different products every step.

Rank policies (:class:`RankPolicy`): a fixed rank, an energy fraction, a maximum relative
spectral or Frobenius error, or a maximum predicted metric drop. The last one needs the task and
the first-order perturbation model, so :mod:`stapes.compress.degradation` applies it; this module
depends on neither.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stapes.errors import UserError
from stapes.ir.float_graph import FloatGraph, LowRank, Matrix, MGUCell, dense
from stapes.ir.lowrank import check_rank, svd, truncated_factors

POLICY_KINDS = ("rank", "energy", "spectral", "frobenius", "degradation")


@dataclass(frozen=True)
class RankPolicy:
    """How to pick the rank of each recurrent matrix.

    * ``rank``: a fixed rank ``r`` (an integer ≥ 1; clipped to N is an error, not silent).
    * ``energy``: the smallest r with ``Σ_{i≤r} σ_i² ≥ value · Σ σ_i²`` (0 < value ≤ 1).
    * ``spectral``: the smallest r with ``σ_{r+1} / σ_1 ≤ value`` (relative 2-norm error).
    * ``frobenius``: the smallest r with ``sqrt(Σ_{i>r} σ_i²) / ‖U‖_F ≤ value``.
    * ``degradation``: the smallest common rank whose first-order *predicted* task metric is
      within ``value`` of the uncompressed one (needs the graph's task, so it is applied by
      :func:`stapes.compress.degradation.compress_with_policy`, not here).
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


def choose_rank(sigma: np.ndarray, policy: RankPolicy) -> int:
    """The rank a spectrum-based policy picks for singular values `sigma` (descending)."""
    s = np.asarray(sigma, dtype=np.float64)
    n = s.shape[0]
    if policy.kind == "rank":
        check_rank(policy.value, n)
        return int(policy.value)
    if policy.kind == "degradation":
        raise UserError("the degradation policy needs the graph and its task: use stapes.compress.degradation")
    energy = s**2
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
    fnorm = float(np.sqrt(np.sum(s**2)))
    return {
        "spectral": spec,
        "frobenius": frob,
        "spectral_rel": spec / float(s[0]) if s[0] > 0 else 0.0,
        "frobenius_rel": frob / fnorm if fnorm > 0 else 0.0,
        "energy_kept": 1.0 - (frob / fnorm) ** 2 if fnorm > 0 else 1.0,
    }


def compress_graph(graph: FloatGraph, policy: RankPolicy, *, joint: bool = False, balanced: bool = True) -> FloatGraph:
    """A copy of `graph` whose recurrent matrices are truncated-SVD LowRank factors.

    Matrices are factored separately (each gets the rank `policy` picks for its own spectrum),
    or, for an MGU with ``joint=True``, as the stacked ``[U_f; U_h]`` sharing one ``b`` factor.
    A matrix that is already LowRank is re-factored from its dense value. The graph's
    provenance gains a ``compress`` entry (policy, ranks, errors). Every policy but
    ``degradation``, which needs the task (:mod:`stapes.compress.degradation`).
    """
    if policy.kind == "degradation":
        raise UserError("the degradation policy needs the graph's task: use stapes.compress.degradation")
    mats = {k: dense(m) for k, m in graph.cell.recurrent().items()}
    new: dict[str, LowRank] = {}
    report: dict[str, dict] = {}
    if joint:
        if not isinstance(graph.cell, MGUCell):
            raise UserError("--joint needs an MGU (it factors [U_f; U_h] together)")
        n = graph.hidden_size
        p, s, qt = svd(np.vstack([mats["u_f"], mats["u_h"]]))
        r = choose_rank(s, policy)
        a, b = truncated_factors(p, s, qt, r, balanced)
        new["u_f"], new["u_h"] = LowRank(a[:n], b, s[:r]), LowRank(a[n:], b, s[:r])
        report["u_f+u_h"] = {"rank": r, **truncation_errors(s, r)}
    else:
        for name, w in mats.items():
            p, s, qt = svd(w)
            r = choose_rank(s, policy)
            new[name] = LowRank(*truncated_factors(p, s, qt, r, balanced), s[:r])
            report[name] = {"rank": r, **truncation_errors(s, r)}
    cell = type(graph.cell)(**{**_cell_fields(graph.cell), **new})
    info = {"policy": policy.describe(), "joint": joint, "balanced": balanced, "matrices": report}
    return graph.replace_cell(cell, compress=info)


def _cell_fields(cell) -> dict:
    return {k: getattr(cell, k) for k in cell.__dataclass_fields__}


def with_rank(graph: FloatGraph, rank: int, *, joint: bool = False, balanced: bool = True) -> FloatGraph:
    """Shorthand: every recurrent matrix at the same fixed `rank`."""
    return compress_graph(graph, RankPolicy("rank", rank), joint=joint, balanced=balanced)


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
    return {"rank": r, "shape": [n, k], "macs": macs, "params": params, "dense_macs": n * k, "dense_params": n * k}


def _shares_b(cell) -> bool:
    return (
        isinstance(cell, MGUCell)
        and isinstance(cell.u_f, LowRank)
        and isinstance(cell.u_h, LowRank)
        and cell.u_f.b.shape == cell.u_h.b.shape
        and np.array_equal(cell.u_f.b, cell.u_h.b)
    )


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
        "hidden_size": n,
        "matrices": mats,
        "joint_shared_b": shared,
        "recurrent_macs": rec_macs,
        "recurrent_macs_dense": dense_rec,
        "recurrent_params": rec_params,
        "recurrent_params_dense": dense_rec,
        "step_macs": input_macs + rec_macs + per_step_readout,
        "step_macs_dense": input_macs + dense_rec + per_step_readout,
        "params": other_params + rec_params,
        "params_dense": other_params + dense_rec,
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
            parts.append(
                f"{name}: rank {r} >= N/2 = {n / 2:g}, low rank saves nothing "
                f"({c['macs']} MACs/step vs {c['dense_macs']} dense); keep it dense"
            )
        else:
            parts.append(
                f"{name}: rank {r}, {c['macs']} MACs/step vs {c['dense_macs']} dense "
                f"({100 * (1 - c['macs'] / c['dense_macs']):.0f}% fewer)"
            )
    if shared:
        parts.append(
            "u_f and u_h share one b factor: fewer parameters, the same MACs (u_h multiplies f*h, u_f multiplies h)"
        )
    return "; ".join(parts)
