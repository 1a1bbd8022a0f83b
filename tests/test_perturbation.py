"""First-order perturbation model: finite-difference convergence for both cells, generators, CLI."""

import json

import numpy as np
import pytest
from test_compress import random_graph

from stapes.cli import main
from stapes.compress import perturbation as P
from stapes.errors import UserError
from stapes.ir.float_graph import dense
from stapes.ir.lowrank import svd_factors

MEM = {"name": "memorization", "length": 3, "symbols": 2, "delay": 4, "hold": 1}


@pytest.mark.parametrize("kind", ["rnn", "mgu"])
def test_linearized_drift_converges_to_measured_drift(kind):
    """As ‖ΔU‖ → 0 the prediction error shrinks like ‖ΔU‖² (relative error like ‖ΔU‖), ratio → 1."""
    g = random_graph(kind, n=12)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 25, g.input_size))
    direction = {k: rng.normal(size=(12, 12)) for k in g.cell.recurrent()}
    rel = []
    for eps in (1e-2, 1e-3, 1e-4):
        d = {k: eps * v for k, v in direction.items()}
        e_pred, h = P.linearized_drift(g, d, x)
        e_meas = P.measured_drift(g, d, x)
        np.testing.assert_array_equal(h, g.run(x)[1])
        rel.append(np.linalg.norm(e_pred - e_meas) / np.linalg.norm(e_meas))
        ratio = np.linalg.norm(e_pred) / np.linalg.norm(e_meas)
        assert abs(ratio - 1) < 50 * eps
    assert rel[-1] < 1e-3
    assert rel[1] / rel[0] < 0.2 and rel[2] / rel[1] < 0.2  # first-order: error ∝ eps


@pytest.mark.parametrize("kind", ["rnn", "mgu"])
def test_each_mgu_path_is_linearised(kind):
    """Perturbing one matrix at a time checks each Jacobian path (gate path included)."""
    g = random_graph(kind, n=8, seed=5)
    x = np.random.default_rng(0).normal(size=(3, 15, g.input_size))
    for name in g.cell.recurrent():
        d = {name: 1e-5 * np.random.default_rng(1).normal(size=(8, 8))}
        e_pred, _ = P.linearized_drift(g, d, x)
        e_meas = P.measured_drift(g, d, x)
        assert np.linalg.norm(e_pred - e_meas) < 1e-3 * np.linalg.norm(e_meas)


def test_zero_perturbation_gives_zero_drift_and_bad_deltas_are_user_errors():
    g = random_graph("mgu", n=6)
    x = np.ones((2, 5, g.input_size))
    e, _ = P.linearized_drift(g, {}, x)
    assert not e.any()
    with pytest.raises(UserError, match="unknown"):
        P.linearized_drift(g, {"u": np.zeros((6, 6))}, x)
    with pytest.raises(UserError, match="shape"):
        P.linearized_drift(g, {"u_f": np.zeros((5, 6))}, x)


def test_generators():
    g = random_graph("mgu", n=10)
    svd = P.svd_delta(g, 4)
    for k, m in g.cell.recurrent().items():
        np.testing.assert_allclose(svd[k], svd_factors(dense(m), 4).dense() - dense(m), atol=1e-12)
    norms = P.frobenius_norms(svd)
    gauss = P.gaussian_delta(g, norms, seed=1)
    for k in norms:
        assert np.linalg.norm(gauss[k]) == pytest.approx(norms[k], rel=1e-12)
    for bits in (4, 8):
        q = P.quant_delta(g, bits)
        for k, m in g.cell.recurrent().items():
            step = np.max(np.abs(dense(m))) / (2 ** (bits - 1) - 1)
            assert np.max(np.abs(q[k])) <= step / 2 + 1e-15
            # the quantized matrix holds at most 2^bits - 1 distinct levels
            assert len(np.unique(np.round((dense(m) + q[k]) / step))) <= 2**bits - 1
    with pytest.raises(UserError):
        P.quantize_uniform(np.ones(3), 1)


def test_saturation_keeps_predictions_in_the_state_box():
    h = np.array([[0.9, -0.5]])
    e = np.array([[0.5, -0.2]])
    np.testing.assert_allclose(P.saturate(h, e), [[1.0, -0.7]])


def test_small_perturbation_predicts_the_measured_metric():
    g = random_graph("mgu", n=8, i=4, o=2, task=MEM)
    task, batch = P.task_and_batch(g, n=64)
    deltas = P.svd_delta(g, 7)
    small = {k: 1e-6 * v for k, v in deltas.items()}
    base = P.metric_of(task, g, batch)
    assert P.predicted_metric(g, small, batch, task) == base
    res = P.analyse(g, P.make_perturbations(g, ("svd", "quant"), [4, 2], [8]), batch, task)
    assert res["memory_start"] == 3 and len(res["rows"]) == 3
    assert all(len(r["drift_measured"]) == batch.x.shape[1] for r in res["rows"])


def test_cli_perturb_writes_json_and_plots(tmp_path, capsys):
    folders = []
    for delay in (2, 4):
        g = random_graph("mgu", n=8, i=4, task={**MEM, "delay": delay}, seed=delay)
        folder = tmp_path / f"m{delay}"
        folder.mkdir()
        g.save(folder)
        folders.append(str(folder))
    out = tmp_path / "p"
    assert main(["perturb", *folders, "--out", str(out), "--ranks", "4,2", "--bits", "6", "--sequences", "32"]) == 0
    rep = json.loads((out / "perturb.json").read_text())
    assert rep["recall_by_delay"]["delays"] == [2, 4]
    assert {p.name for p in out.iterdir()} == {"perturb.json", "drift.png", "scatter.png", "recall.png"}
    assert "wrote" in capsys.readouterr().out
    assert main(["perturb", folders[0], "--out", str(out), "--ranks", "99"]) == 2
    assert main(["perturb", str(tmp_path / "missing"), "--out", str(out)]) == 2
