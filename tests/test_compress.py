"""Truncated-SVD compression: exact reconstruction, Eckart–Young errors, rank policies, costs, CLI."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stapes.cli import main
from stapes.compress import perturbation
from stapes.compress.degradation import compress_with_policy
from stapes.compress.svd import (
    RankPolicy,
    choose_rank,
    compress_graph,
    recurrent_cost,
    truncation_errors,
    with_rank,
)
from stapes.errors import UserError
from stapes.ir.float_graph import FloatGraph, LowRank, MGUCell, Readout, RNNCell, dense
from stapes.ir.lowrank import svd_factors


def random_graph(kind: str, n: int = 12, i: int = 3, o: int = 2, seed: int = 0, task=None) -> FloatGraph:
    rng = np.random.default_rng(seed)
    if kind == "rnn":
        cell = RNNCell(rng.normal(size=(n, i)), rng.normal(size=(n, n)) * 1.2 / np.sqrt(n), 0.1 * rng.normal(size=n))
    else:
        cell = MGUCell(
            rng.normal(size=(n, i)),
            rng.normal(size=(n, n)) / np.sqrt(n),
            0.1 * rng.normal(size=n),
            rng.normal(size=(n, i)),
            rng.normal(size=(n, n)) * 1.2 / np.sqrt(n),
            0.1 * rng.normal(size=n),
        )
    return FloatGraph(cell, Readout(rng.normal(size=(o, n)), 0.1 * rng.normal(size=o)), task)


@settings(max_examples=25)
@given(n=st.integers(2, 24), m=st.integers(2, 24), seed=st.integers(0, 2**16), balanced=st.booleans())
def test_full_rank_reproduces_w_and_errors_match_eckart_young(n, m, seed, balanced):
    w = np.random.default_rng(seed).normal(size=(n, m))
    s = np.linalg.svd(w, compute_uv=False)
    k = min(n, m)
    np.testing.assert_allclose(svd_factors(w, k, balanced).dense(), w, rtol=0, atol=1e-12 * max(1.0, s[0]))
    for r in range(1, k):
        err = w - svd_factors(w, r, balanced).dense()
        assert np.linalg.norm(err, 2) == pytest.approx(s[r], rel=1e-9, abs=1e-12)
        assert np.linalg.norm(err) == pytest.approx(np.sqrt(np.sum(s[r:] ** 2)), rel=1e-9, abs=1e-12)


def test_balanced_and_unbalanced_factor_scales():
    w = np.random.default_rng(1).normal(size=(10, 10))
    bal, unb = svd_factors(w, 4, True), svd_factors(w, 4, False)
    np.testing.assert_allclose(np.linalg.norm(bal.a, axis=0), np.sqrt(bal.sigma), rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(bal.b, axis=1), np.sqrt(bal.sigma), rtol=1e-12)
    np.testing.assert_allclose(unb.b @ unb.b.T, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(bal.dense(), unb.dense(), atol=1e-12)
    # a prefix of the factors is the best smaller rank (on-the-fly compression is a loop bound)
    np.testing.assert_allclose(bal.truncate(2).dense(), svd_factors(w, 2).dense(), atol=1e-12)


def test_rank_policies_on_a_known_spectrum():
    s = np.array([4.0, 2.0, 1.0, 0.5, 0.0])  # energies 16, 4, 1, 0.25, 0 (total 21.25)
    assert choose_rank(s, RankPolicy("rank", 3)) == 3
    assert choose_rank(s, RankPolicy("energy", 16 / 21.25)) == 1
    assert choose_rank(s, RankPolicy("energy", 0.94)) == 2  # rank 2 keeps 20/21.25 = 0.941
    assert choose_rank(s, RankPolicy("energy", 0.95)) == 3  # rank 3 keeps 21/21.25 = 0.988
    assert choose_rank(s, RankPolicy("energy", 1.0)) == 4  # the zero singular value is free
    assert choose_rank(s, RankPolicy("spectral", 0.25)) == 2  # σ3/σ1 = 0.25
    assert choose_rank(s, RankPolicy("spectral", 0.2)) == 3
    assert choose_rank(s, RankPolicy("spectral", 0.0)) == 4
    frob = np.sqrt(1.25 / 21.25)  # tail after rank 2
    assert choose_rank(s, RankPolicy("frobenius", frob + 1e-12)) == 2
    assert choose_rank(s, RankPolicy("frobenius", frob - 1e-6)) == 3
    errs = truncation_errors(s, 2)
    assert errs["spectral"] == 1.0 and errs["frobenius"] == pytest.approx(np.sqrt(1.25))


@pytest.mark.parametrize("bad", [RankPolicy("rank", 6)])
def test_rank_above_n_is_a_user_error(bad):
    with pytest.raises(UserError, match="outside 1..5"):
        choose_rank(np.ones(5), bad)


@pytest.mark.parametrize(
    "kind,value", [("rank", 0), ("rank", 2.5), ("energy", 0.0), ("energy", 1.5), ("spectral", -1), ("nope", 1)]
)
def test_invalid_policies(kind, value):
    with pytest.raises(UserError):
        RankPolicy(kind, value)


@pytest.mark.parametrize("kind", ["rnn", "mgu"])
def test_compress_graph_keeps_everything_else_and_round_trips(kind, tmp_path):
    g = random_graph(kind)
    c = with_rank(g, 3)
    for name, m in c.cell.recurrent().items():
        assert isinstance(m, LowRank) and m.rank == 3
        np.testing.assert_allclose(m.dense(), svd_factors(dense(g.cell.recurrent()[name]), 3).dense(), atol=1e-12)
    np.testing.assert_array_equal(c.readout.w, g.readout.w)
    assert c.provenance["compress"]["policy"] == {"kind": "rank", "value": 3}
    c.save(tmp_path)
    back = FloatGraph.load(tmp_path)
    x = np.random.default_rng(0).normal(size=(2, 7, g.input_size))
    np.testing.assert_array_equal(back.run(x)[1], c.run(x)[1])
    # full rank behaves like the dense graph
    np.testing.assert_allclose(with_rank(g, g.hidden_size).run(x)[1], g.run(x)[1], atol=1e-12)


def test_costs_are_2nr_and_say_when_low_rank_saves_nothing():
    n = 12
    g = random_graph("mgu", n=n)
    dense_cost = recurrent_cost(g)
    assert dense_cost["recurrent_macs"] == 2 * n * n and dense_cost["mac_saving"] == 0
    for r in (1, 3, 5, 6, 9, 12):
        cost = recurrent_cost(with_rank(g, r))
        assert cost["recurrent_macs"] == 2 * (2 * n * r) and cost["recurrent_params"] == 2 * (2 * n * r)
        for m in cost["matrices"].values():
            assert m["macs"] == 2 * n * r and m["dense_macs"] == n * n
        assert ("saves nothing" in cost["statement"]) == (r >= n / 2)
        assert cost["step_macs_dense"] - cost["step_macs"] == 2 * (n * n - 2 * n * r)


def test_joint_mgu_shares_b_saves_parameters_not_macs():
    n, r = 12, 4
    g = random_graph("mgu", n=n)
    c = compress_graph(g, RankPolicy("rank", r), joint=True)
    assert np.array_equal(c.cell.u_f.b, c.cell.u_h.b)
    stacked = np.vstack([dense(g.cell.u_f), dense(g.cell.u_h)])
    s = np.linalg.svd(stacked, compute_uv=False)
    approx = np.vstack([c.cell.u_f.dense(), c.cell.u_h.dense()])
    assert np.linalg.norm(stacked - approx, 2) == pytest.approx(s[r], rel=1e-9)
    cost = recurrent_cost(c)
    assert cost["joint_shared_b"] and cost["recurrent_params"] == 3 * n * r
    assert cost["recurrent_macs"] == 4 * n * r and "same MACs" in cost["statement"]
    with pytest.raises(UserError, match="MGU"):
        compress_graph(random_graph("rnn"), RankPolicy("rank", 2), joint=True)


def test_degradation_policy_picks_a_rank_whose_predicted_drop_is_small():
    task = {"name": "memorization", "length": 3, "symbols": 2, "delay": 2, "hold": 1}
    g = random_graph("mgu", n=8, i=4, task=task)
    assert compress_with_policy(g, RankPolicy("degradation", 1.0)).cell.u_f.rank == 1
    c = compress_with_policy(g, RankPolicy("degradation", 0.0))
    r = c.cell.u_f.rank
    assert c.cell.u_h.rank == r
    with pytest.raises(UserError, match="degradation"):
        compress_graph(g, RankPolicy("degradation", 0.0))  # the SVD stage alone knows no task

    # The policy's promise: the predicted drop at r is within the bound, and one rank less is not.
    task, batch = perturbation.task_and_batch(g)
    base = perturbation.metric_of(task, g, batch)
    mats = {k: dense(m) for k, m in g.cell.recurrent().items()}

    def predicted_drop(rank):
        low = with_rank(g, rank).cell.recurrent()
        return base - perturbation.predicted_metric(g, {k: dense(low[k]) - mats[k] for k in mats}, batch, task)

    assert predicted_drop(r) <= 0.0
    if r > 1:
        assert predicted_drop(r - 1) > 0.0


def test_compress_modules_import_one_way():
    """svd knows neither the perturbation model nor the degradation policy; degradation sits above both."""
    import ast
    from pathlib import Path

    import stapes.compress

    folder = Path(stapes.compress.__file__).parent

    def imports(name):
        tree = ast.parse((folder / f"{name}.py").read_text())
        found = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        found |= {
            f"{n.module}.{a.name}"
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module
            for a in n.names
        }
        return {m.split(".")[2] for m in found if m.startswith("stapes.compress.")}

    assert imports("svd") == set()
    assert imports("perturbation") == {"svd"}
    assert imports("degradation") == {"perturbation", "svd"}


def _cli(*argv) -> int:
    return main(["compress", *map(str, argv)])


def test_cli_writes_a_model_folder_and_report(tmp_path, capsys):
    g = random_graph("mgu")
    model = tmp_path / "m"
    model.mkdir()
    g.save(model)
    out = tmp_path / "c"
    assert _cli(model, "--out", model / "c", "--rank", 3) == 2  # never inside the input
    assert _cli(model, "--rank", 3, "--out", out) == 0
    rep = json.loads((out / "compress.json").read_text())
    assert rep["compression"]["matrices"]["u_f"]["rank"] == 3 and rep["metric_dense"] is None
    assert FloatGraph.load(out).cell.u_h.rank == 3
    assert _cli(model, "--energy", 0.9, "--joint", "--out", out) == 2  # its own output: only with --force
    assert _cli(model, "--energy", 0.9, "--joint", "--out", out, "--force") == 0
    assert _cli(model, "--max-error", 0.5, "--error-norm", "frobenius", "--unbalanced", "--out", out, "--force") == 0
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["--rank", 0], ["--rank", 99], ["--energy", 2.0], ["--rank", 2, "--finetune", 5]])
def test_cli_user_errors_exit_2(tmp_path, args, capsys):
    random_graph("rnn").save(tmp_path)  # no task: fine-tuning is a user error too
    assert _cli(tmp_path, *args, "--out", tmp_path / "c") == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_cli_missing_folder_exits_2(tmp_path):
    assert _cli(tmp_path / "missing", "--rank", 2, "--out", tmp_path / "c") == 2
