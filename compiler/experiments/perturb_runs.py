"""The perturbation unit shared by R3-R6: one trained model, many ΔW of the recurrent weights
(SVD truncation at each rank of a grid, Gaussian noise of the same Frobenius norms, Gaussian noise
at fixed relative sizes ε, uniform quantization at b bits), each measured (run the perturbed graph)
and predicted (the first-order model of `stapes.compress.perturbation`), as task metric and as
hidden-state drift."""

from __future__ import annotations

import numpy as np

from stapes.experiments.settings import Settings, rank_grid
from stapes.experiments.zoo import model_spec, task_config, trained_graph

QUANT_BITS = (3, 4, 5, 6, 8)
EPS_ZERO = 1e-9  # below this ε a ΔW is round-off (e.g. the rank-N "truncation"), not a perturbation
NOISE_SEEDS = 2
COMPUTE_VERSION = 2  # 2: predictions projected onto the state box, as `stapes perturb` does (plus the linear ones)


def perturb_unit(task: dict, cell: str, hidden: int, seed: int, s: Settings) -> dict:
    return {
        "model": model_spec(task, cell, hidden, seed, s),
        "ranks": rank_grid(hidden, s.rank_points),
        "epsilons": list(s.epsilons),
        "noise_seeds": NOISE_SEEDS,
        "bits": list(QUANT_BITS),
        "eval_sequences": s.eval_sequences,
    }


def memory_units(s: Settings) -> list[dict]:
    """Memorization models for every delay T (one model per T: the task's delay is fixed)."""
    return [
        perturb_unit(task_config("memorization", s, delay=t), c, s.memo_hidden, seed, s)
        for c in s.cells
        for t in s.delays
        for seed in range(s.seeds)
    ]


def compute_perturbations(ctx, unit: dict) -> dict:
    from stapes.compress.perturbation import (
        drift_norms,
        gaussian_delta,
        linearized_drift,
        perturbed_graph,
        quant_delta,
        saturate,
        svd_delta,
    )
    from stapes.ir.float_graph import dense
    from stapes.tasks.evaluate import eval_batch, metrics_from_outputs

    graph = trained_graph(ctx, unit["model"])
    task, batch = eval_batch(graph.task, "test", unit["eval_sequences"])
    outputs, h = graph.run(batch.x)
    name = task.primary_metric
    weights = {k: dense(m) for k, m in graph.cell.recurrent().items()}
    w_norm = float(np.sqrt(sum(np.sum(w**2) for w in weights.values())))

    def readout(states):
        return graph.readout.apply(states[:, -1] if graph.readout.mode == "final" else states)

    def rms(norms):
        return float(np.sqrt(np.mean(norms**2)))

    def point(family: str, deltas: dict, **info) -> dict:
        """ "predicted": the model `stapes perturb` uses (first-order drift, predicted state projected
        onto the state box [-1, 1]^N); "predicted_linear": the plain h + e."""
        eps = float(np.sqrt(sum(np.sum(d**2) for d in deltas.values()))) / w_norm
        out_p, h_p = perturbed_graph(graph, deltas).run(batch.x)
        e, _ = linearized_drift(graph, deltas, batch.x)
        h_pred = saturate(h, e)
        measured, predicted, linear = drift_norms(h_p - h), drift_norms(h_pred - h), drift_norms(e)
        return {
            "family": family,
            "eps": eps,
            **info,
            "measured": metrics_from_outputs(task, out_p, batch)[name],
            "predicted": metrics_from_outputs(task, readout(h_pred), batch)[name],
            "predicted_linear": metrics_from_outputs(task, readout(h + e), batch)[name],
            "drift_measured": rms(measured),
            "drift_predicted": rms(predicted),
            "drift_predicted_linear": rms(linear),
            "drift_measured_t": measured.tolist(),
            "drift_predicted_t": predicted.tolist(),
        }

    points = []
    for r in unit["ranks"]:
        d = svd_delta(graph, r)
        points.append(point("svd", d, rank=r))
        norms = {k: float(np.linalg.norm(v)) for k, v in d.items()}
        for ns in range(unit["noise_seeds"]):
            points.append(point("gaussian_equal", gaussian_delta(graph, norms, seed=ns), rank=r, noise_seed=ns))
    for eps in unit["epsilons"]:
        norms = {k: eps * float(np.linalg.norm(w)) for k, w in weights.items()}
        for ns in range(unit["noise_seeds"]):
            points.append(point("gaussian", gaussian_delta(graph, norms, seed=ns), target_eps=eps, noise_seed=ns))
    for bits in unit["bits"]:
        points.append(point("quant", quant_delta(graph, bits), bits=bits))
    return {
        "metric_name": name,
        "dense": metrics_from_outputs(task, outputs, batch)[name],
        "delay": graph.task.get("delay"),
        "weight_norm": w_norm,
        "points": points,
    }
