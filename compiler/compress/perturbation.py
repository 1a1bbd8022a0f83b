"""First-order perturbation model: how a change ΔU of the recurrent weights moves the hidden state.

Given a FloatGraph, a perturbation ``deltas = {"u": ΔU}`` (RNN) or ``{"u_f": ΔU_f, "u_h": ΔU_h}``
(MGU; a missing key means no change) and input sequences, the perturbed state is
``h'_t = h_t + e_t``. Linearising the cell along the *unperturbed* trajectory gives the
drift recursion (``e_0 = 0``, ``h_0 = 0``):

RNN, ``h_t = tanh(a_t)``, ``a_t = W x_t + U h_{t-1} + b``::

    e_t = D_t (U e_{t-1} + ΔU h_{t-1}),          D_t = diag(1 − h_t²)

MGU, ``f = σ(a_f)``, ``g = f ⊙ h_{t-1}``, ``c = tanh(a_c)``, ``a_c = W_h x + U_h g + b_h``,
``h_t = h_{t-1} + f ⊙ (c − h_{t-1})``; with ``e = e_{t-1}``::

    δa_f = U_f e + ΔU_f h_{t-1}                   (gate pre-activation)
    δf   = f ⊙ (1 − f) ⊙ δa_f                      (gate path)
    δg   = δf ⊙ h_{t-1} + f ⊙ e                    (the reset-like product f ⊙ h)
    δa_c = U_h δg + ΔU_h g
    δc   = (1 − c²) ⊙ δa_c
    e_t  = (1 − f) ⊙ e + (c − h_{t-1}) ⊙ δf + f ⊙ δc

Every term is first order in (e, ΔU); the dropped terms are O(‖e‖², ‖ΔU‖ ‖e‖), so the
prediction converges to the measured drift ``h'_t − h_t`` as ``‖ΔU‖ → 0`` (tested).

Perturbation generators: SVD truncation (:func:`svd_delta`), Gaussian noise of a given
Frobenius norm (:func:`gaussian_delta`) and uniform quantization at b bits
(:func:`quant_delta`). The model itself takes any ΔU.

Saturation: both cells keep every state component in (−1, 1), so the predicted perturbed
state is projected onto that box (:func:`saturate`). This removes only the part of the
linear prediction that is impossible, and matters once the drift is O(1) (strong truncation).
Both the plain (``linear``) and the projected (``saturated``) predictions are reported.

Predicted metrics (e.g. recall on memorization): the predicted states go through the exact
readout and the task's own metric (:func:`predicted_metric`, :func:`recall_by_delay`). A
recalled symbol is predicted lost when the drift, projected on the readout rows, closes the
logit margin ``z_y − max_{k≠y} z_k`` of the unperturbed model, i.e. when
``(v_k − v_y)·e_t > z_y − z_k`` for some k; the only approximation is the first-order e_t.
"""

from __future__ import annotations

import numpy as np

from stapes.compress.svd import with_rank
from stapes.errors import UserError
from stapes.ir.float_graph import FloatGraph, MGUCell, dense

Deltas = dict  # name of a recurrent matrix -> (N, N) float array


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


def _check_deltas(graph: FloatGraph, deltas: Deltas) -> dict[str, np.ndarray]:
    mats = graph.cell.recurrent()
    unknown = set(deltas) - set(mats)
    if unknown:
        raise UserError(f"perturbation of unknown matrices {sorted(unknown)}; this cell has {sorted(mats)}")
    n = graph.hidden_size
    out = {}
    for name in mats:
        d = np.zeros((n, n)) if deltas.get(name) is None else np.asarray(deltas[name], dtype=np.float64)
        if d.shape != (n, n):
            raise UserError(f"perturbation of {name}: expected shape {(n, n)}, got {d.shape}")
        out[name] = d
    return out


# ---- perturbation generators ------------------------------------------------------------


def svd_delta(graph: FloatGraph, rank: int, *, joint: bool = False) -> Deltas:
    """ΔU = U_r − U for the rank-`rank` truncated SVD of every recurrent matrix."""
    low = with_rank(graph, rank, joint=joint).cell.recurrent()
    return {k: dense(low[k]) - dense(m) for k, m in graph.cell.recurrent().items()}


def gaussian_delta(graph: FloatGraph, norms: dict[str, float], seed: int = 0) -> Deltas:
    """I.i.d. Gaussian ΔU per matrix, scaled to the Frobenius norm ``norms[name]``."""
    rng = np.random.default_rng(seed)
    n = graph.hidden_size
    out = {}
    for name in graph.cell.recurrent():
        d = rng.standard_normal((n, n))
        out[name] = d * (float(norms.get(name, 0.0)) / np.linalg.norm(d))
    return out


def quantize_uniform(w: np.ndarray, bits: int) -> np.ndarray:
    """Symmetric uniform quantization, one scale per tensor: step = max|w| / (2^(bits−1) − 1),
    round to nearest. Returns the dequantized values."""
    if int(bits) != bits or not 2 <= bits <= 32:
        raise UserError(f"bits must be an integer in 2..32, got {bits}")
    w = np.asarray(w, dtype=np.float64)
    top = float(np.max(np.abs(w)))
    if top == 0:
        return w.copy()
    step = top / (2 ** (bits - 1) - 1)
    return np.round(w / step) * step


def quant_delta(graph: FloatGraph, bits: int) -> Deltas:
    """ΔU = Q_b(U) − U: the actual rounding error of b-bit symmetric per-tensor quantization
    (bounded by half a step, close to uniform noise for fine steps)."""
    return {k: quantize_uniform(dense(m), bits) - dense(m) for k, m in graph.cell.recurrent().items()}


def frobenius_norms(deltas: Deltas) -> dict[str, float]:
    return {k: float(np.linalg.norm(v)) for k, v in deltas.items()}


# ---- drift: predicted and measured ----------------------------------------------------------


def perturbed_graph(graph: FloatGraph, deltas: Deltas) -> FloatGraph:
    """The graph with every recurrent matrix replaced by the dense ``U + ΔU``."""
    d = _check_deltas(graph, deltas)
    fields = {k: getattr(graph.cell, k) for k in graph.cell.__dataclass_fields__}
    for name, m in graph.cell.recurrent().items():
        fields[name] = dense(m) + d[name]
    return graph.replace_cell(type(graph.cell)(**fields))


def measured_drift(graph: FloatGraph, deltas: Deltas, x: np.ndarray) -> np.ndarray:
    """``h'_t − h_t`` (B, T, N): run the perturbed and the unperturbed graph and subtract."""
    _, h = graph.run(x)
    _, hp = perturbed_graph(graph, deltas).run(x)
    return hp - h


def linearized_drift(graph: FloatGraph, deltas: Deltas, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First-order predicted drift ``e_t`` (B, T, N) and the unperturbed states ``h_t`` (B, T, N).

    One pass along the unperturbed trajectory; see the module docstring for the equations.
    """
    d = _check_deltas(graph, deltas)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[2] != graph.input_size:
        raise UserError(f"inputs: expected shape (batch, time, {graph.input_size}), got {x.shape}")
    _, states = graph.run(x)  # the unperturbed trajectory, exactly as the graph runs it
    bsz, steps, _ = x.shape
    n = graph.hidden_size
    cell = graph.cell
    e = np.zeros((bsz, n))
    drift = np.empty((bsz, steps, n))
    zero = np.zeros((bsz, n))
    if isinstance(cell, MGUCell):
        uf, uh = dense(cell.u_f), dense(cell.u_h)
        xf = x @ cell.w_f.T + cell.b_f
        xh = x @ cell.w_h.T + cell.b_h
        for t in range(steps):
            h = states[:, t - 1] if t else zero
            f = _sigmoid(xf[:, t] + h @ uf.T)
            g = f * h
            c = np.tanh(xh[:, t] + g @ uh.T)
            df = f * (1.0 - f) * (e @ uf.T + h @ d["u_f"].T)
            dc = (1.0 - c * c) * ((df * h + f * e) @ uh.T + g @ d["u_h"].T)
            e = (1.0 - f) * e + (c - h) * df + f * dc
            drift[:, t] = e
    else:
        u = dense(cell.u)
        for t in range(steps):
            h = states[:, t - 1] if t else zero
            ht = states[:, t]
            e = (1.0 - ht * ht) * (e @ u.T + h @ d["u"].T)
            drift[:, t] = e
    return drift, states


def drift_norms(drift: np.ndarray) -> np.ndarray:
    """RMS over the batch of ``‖e_t‖₂`` for every step: (T,)."""
    return np.sqrt(np.mean(np.sum(drift**2, axis=-1), axis=0))


# ---- task-level predictions -------------------------------------------------------------


def saturate(states: np.ndarray, drift: np.ndarray) -> np.ndarray:
    """The predicted perturbed state ``h + e`` projected onto the state box [−1, 1]^N.

    Both cells keep every state component in (−1, 1) (tanh; a convex blend of h and tanh for
    the MGU), so a prediction outside the box is certainly wrong by at least its excess. The
    projection keeps the first-order direction and removes only that impossible part; it
    matters once the linear drift reaches O(1), i.e. for strong truncation.
    """
    return np.clip(states + drift, -1.0, 1.0)


def task_and_batch(graph: FloatGraph, data=None, split: str = "val", n: int = 256, seed: int = 4321):
    """The graph's task (rebuilt from ``graph.task``) and a batch (`data`, or a fresh sample)."""
    if graph.task is None:
        raise UserError("this model has no task (e.g. an ONNX import): a task is needed to measure a metric")
    from stapes.tasks import task_from_config

    task = task_from_config(graph.task)
    batch = data if data is not None else task.sample(split, n, seed)
    return task, batch


def _readout_outputs(graph: FloatGraph, states: np.ndarray) -> np.ndarray:
    if graph.readout.mode == "final":
        return graph.readout.apply(states[:, -1])
    return graph.readout.apply(states)


def _metric(task, graph: FloatGraph, states: np.ndarray, batch) -> float:
    return float(task.metrics(_readout_outputs(graph, states), batch)[task.primary_metric])


def metric_of(task, graph: FloatGraph, batch) -> float:
    """The task's primary metric for `graph` on `batch` (exact float64 run)."""
    outputs, _ = graph.run(batch.x)
    return float(task.metrics(outputs, batch)[task.primary_metric])


def predicted_metric(graph: FloatGraph, deltas: Deltas, batch, task, saturated: bool = True) -> float:
    """The primary metric predicted from the first-order drift: the exact readout of the
    predicted states ``h_t + e_t`` (projected onto [−1, 1]^N when `saturated`)."""
    e, h = linearized_drift(graph, deltas, batch.x)
    return _metric(task, graph, saturate(h, e) if saturated else h + e, batch)


# ---- the analysis `stapes perturb` runs -------------------------------------------------------


def make_perturbations(
    graph: FloatGraph, kinds=("svd", "gaussian", "quant"), ranks=None, bits=None, seed: int = 0
) -> list[dict]:
    """Perturbations to study: SVD truncation at `ranks`, Gaussian noise with the same Frobenius
    norm per matrix as each truncation, and b-bit quantization at `bits`. Each entry is
    ``{"label", "kind", "rank"|"bits", "deltas", "frobenius"}``."""
    n = graph.hidden_size
    ranks = sorted(set(ranks or default_perturb_ranks(n)), reverse=True)
    bad = [r for r in ranks if not 1 <= r <= n]
    if bad:
        raise UserError(f"ranks {bad} are outside 1..{n} (the hidden size)")
    unknown = set(kinds) - {"svd", "gaussian", "quant"}
    if unknown:
        raise UserError(f"unknown perturbation kinds {sorted(unknown)}: use svd, gaussian, quant")
    out = []
    for r in ranks if ("svd" in kinds or "gaussian" in kinds) else []:
        svd_d = svd_delta(graph, r)
        if "svd" in kinds:
            out.append({"label": f"svd r={r}", "kind": "svd", "rank": r, "deltas": svd_d})
        if "gaussian" in kinds:
            out.append(
                {
                    "label": f"gauss~r={r}",
                    "kind": "gaussian",
                    "rank": r,
                    "deltas": gaussian_delta(graph, frobenius_norms(svd_d), seed=seed + r),
                }
            )
    if "quant" in kinds:
        for b in sorted(set(bits or (4, 6, 8))):
            out.append({"label": f"quant {b}b", "kind": "quant", "bits": b, "deltas": quant_delta(graph, b)})
    for p in out:
        p["frobenius"] = frobenius_norms(p["deltas"])
    return out


def default_perturb_ranks(n: int) -> list[int]:
    """3N/4, N/2, N/4, ... down to 1: the interesting range of truncation."""
    ranks, r = {max(1, (3 * n) // 4)}, n // 2
    while r >= 1:
        ranks.add(r)
        r //= 2
    return sorted(ranks, reverse=True)


def pearson(a, b) -> float | None:
    """Pearson correlation of two equal-length sequences (None if either is constant)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.size < 2 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _window_rms(drift: np.ndarray, mask: np.ndarray | None) -> float:
    """RMS of ‖e_t‖ over the steps that count (mask), or over every step."""
    sq = np.sum(drift**2, axis=-1)
    return float(np.sqrt(np.mean(sq[mask] if mask is not None else sq)))


def memory_start(task_config: dict | None) -> int:
    """First step of the memory period: after the pattern on memorization, else 0.

    Drift is compared over steps ≥ this, so "delay" = steps since the pattern was stored.
    """
    cfg = task_config or {}
    if cfg.get("name") == "memorization":
        return int(cfg.get("length", 5)) * int(cfg.get("hold", 1))
    return 0


def analyse(graph: FloatGraph, perturbations: list[dict], batch, task) -> dict:
    """For each perturbation on one batch: per-step RMS drift (first-order ``linear``, first
    order ``saturated`` onto the state box, and measured), drift over the steps that count, and
    the task metric predicted (both ways) and measured. Pearson correlations of predicted vs
    measured drift over (perturbation, step ≥ :func:`memory_start`) pairs, and of the metric."""
    mask = batch.mask if batch.mask is not None and batch.mask.ndim == 2 else None
    start = memory_start(graph.task)
    rows = []
    for p in perturbations:
        e_lin, h = linearized_drift(graph, p["deltas"], batch.x)
        e_sat = saturate(h, e_lin) - h
        outputs, hp = perturbed_graph(graph, p["deltas"]).run(batch.x)
        e_meas = hp - h
        rows.append(
            {
                "label": p["label"],
                "kind": p["kind"],
                "rank": p.get("rank"),
                "bits": p.get("bits"),
                "frobenius": p["frobenius"],
                "drift_linear": drift_norms(e_lin).tolist(),
                "drift_saturated": drift_norms(e_sat).tolist(),
                "drift_measured": drift_norms(e_meas).tolist(),
                "window_drift_linear": _window_rms(e_lin, mask),
                "window_drift_saturated": _window_rms(e_sat, mask),
                "window_drift_measured": _window_rms(e_meas, mask),
                "relative_error_linear": float(np.linalg.norm(e_lin - e_meas) / max(np.linalg.norm(e_meas), 1e-300)),
                "metric_linear": _metric(task, graph, h + e_lin, batch),
                "metric_saturated": _metric(task, graph, h + e_sat, batch),
                "metric_measured": float(task.metrics(outputs, batch)[task.primary_metric]),
            }
        )
    out = {
        "metric_name": task.primary_metric,
        "metric_unperturbed": metric_of(task, graph, batch),
        "memory_start": start,
        "rows": rows,
    }
    for kind in ("svd", "gaussian", "quant", "all"):
        sel = [r for r in rows if kind == "all" or r["kind"] == kind]
        meas = [v for r in sel for v in r["drift_measured"][start:]]
        for how in ("linear", "saturated"):
            pred = [v for r in sel for v in r[f"drift_{how}"][start:]]
            out[f"pearson_drift_{how}_{kind}"] = pearson(pred, meas)
            out[f"pearson_metric_{how}_{kind}"] = pearson(
                [r[f"metric_{how}"] for r in sel], [r["metric_measured"] for r in sel]
            )
    return out


def recall_by_delay(graphs: list[FloatGraph], ranks: list[int], n: int = 256, seed: int = 4321) -> dict:
    """Memorization models trained at different delays T: for each model and each SVD rank, the
    recall accuracy measured and predicted (first order, saturated and linear), and the RMS
    drift over the recall steps. Pearson over (rank, delay) pairs. A model is only ever run at
    the delay it was trained for (one trained at T does not recall at other delays)."""
    per_delay = []
    for graph in graphs:
        if (graph.task or {}).get("name") != "memorization":
            raise UserError("recall vs delay needs models trained on the memorization task")
        task, batch = task_and_batch(graph, split="test", n=n, seed=seed)
        usable = [r for r in ranks if 1 <= r <= graph.hidden_size]
        res = analyse(graph, make_perturbations(graph, ("svd",), usable), batch, task)
        per_delay.append({"delay": int(graph.task["delay"]), **res})
    per_delay.sort(key=lambda d: d["delay"])
    rows = [r for d in per_delay for r in d["rows"]]
    out = {"delays": [d["delay"] for d in per_delay], "ranks": sorted(set(ranks), reverse=True), "per_delay": per_delay}
    for how in ("linear", "saturated"):
        out[f"pearson_recall_drift_{how}"] = pearson(
            [r[f"window_drift_{how}"] for r in rows], [r["window_drift_measured"] for r in rows]
        )
        out[f"pearson_recall_accuracy_{how}"] = pearson(
            [r[f"metric_{how}"] for r in rows], [r["metric_measured"] for r in rows]
        )
    return out
