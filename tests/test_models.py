"""Models: equations against a hand-written numpy step, sequence == step, init, extract round trip."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stapes.errors import UserError
from stapes.frontend.extract import from_graph, to_graph
from stapes.frontend.models import DenseMatrix, LowRankMatrix, ModelConfig, RecurrentModel
from stapes.ir.float_graph import LowRank


def _np(t):
    return t.detach().double().numpy()


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def numpy_rnn_step(m, x, h):
    u = _np(m.u.dense())
    return np.tanh(x @ _np(m.w).T + h @ u.T + _np(m.b))


def numpy_mgu_step(m, x, h):
    u_f, u_h = _np(m.u_f.dense()), _np(m.u_h.dense())
    f = _sigmoid(x @ _np(m.w_f).T + h @ u_f.T + _np(m.b_f))
    c = np.tanh(x @ _np(m.w_h).T + (f * h) @ u_h.T + _np(m.b_h))
    return (1.0 - f) * h + f * c


NUMPY_STEP = {"rnn": numpy_rnn_step, "mgu": numpy_mgu_step}


def make(cell, ranks=None, mode="per_step", activation="linear", seed=3, **kw):
    cfg = ModelConfig(
        cell=cell,
        input_size=3,
        hidden_size=8,
        output_size=2,
        readout_mode=mode,
        readout_activation=activation,
        ranks=ranks,
        gate_bias=0.3,
        **kw,
    )
    return RecurrentModel(cfg, seed=seed)


@pytest.mark.parametrize("cell", ["rnn", "mgu"])
@pytest.mark.parametrize("ranks", [None, 3])
def test_step_matches_handwritten_numpy_equations(cell, ranks):
    m = make(cell, ranks).double()
    rng = np.random.default_rng(0)
    x, h = rng.standard_normal((4, 3)), rng.uniform(-0.9, 0.9, (4, 8))
    got = m.step(torch.tensor(x), torch.tensor(h)).detach().numpy()
    np.testing.assert_allclose(got, NUMPY_STEP[cell](m, x, h), rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", ["rnn", "mgu"])
@pytest.mark.parametrize("mode,activation", [("per_step", "linear"), ("final", "sigmoid")])
def test_sequence_api_equals_step_api(cell, mode, activation):
    m = make(cell, mode=mode, activation=activation)
    x = torch.randn(5, 9, 3, generator=torch.Generator().manual_seed(1))
    h0 = torch.rand(5, 8, generator=torch.Generator().manual_seed(2)) - 0.5
    outputs, states = m(x, h0)
    h, stepped = h0, []
    for t in range(x.shape[1]):
        h = m.step(x[:, t], h)
        stepped.append(h)
    stepped = torch.stack(stepped, 1)
    torch.testing.assert_close(states, stepped, rtol=0, atol=1e-6)
    expected = m.readout(stepped[:, -1]) if mode == "final" else m.readout(stepped)
    torch.testing.assert_close(outputs, expected, rtol=0, atol=1e-6)
    assert outputs.shape == ((5, 2) if mode == "final" else (5, 9, 2))
    if activation == "sigmoid":
        assert torch.all((outputs > 0) & (outputs < 1))


def test_readout_is_a_dense_layer():
    m = make("mgu").double()
    h = torch.randn(4, 8, dtype=torch.float64)
    expected = _np(h) @ _np(m.readout_w).T + _np(m.readout_b)
    np.testing.assert_allclose(m.readout(h).detach().numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("cell", ["rnn", "mgu"])
def test_forward_matches_float_graph_run(cell):
    m = make(cell, ranks=4)
    g = to_graph(m)
    x = torch.randn(3, 11, 3, generator=torch.Generator().manual_seed(5))
    outputs, states = m(x)
    g_out, g_states = g.run(x.numpy())
    np.testing.assert_allclose(g_states, _np(states), atol=1e-5)
    np.testing.assert_allclose(g_out, _np(outputs), atol=1e-5)


def test_same_seed_same_weights_and_global_rng_untouched():
    torch.manual_seed(0)
    before = torch.rand(1)
    a, b = make("mgu", seed=7), make("mgu", seed=7)
    torch.manual_seed(0)
    assert torch.equal(before, torch.rand(1))  # init does not consume the global generator
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    c = make("mgu", seed=8)
    assert not torch.equal(a.w_f, c.w_f)


@pytest.mark.parametrize("radius", [0.5, 1.2])
def test_spectral_radius_init(radius):
    m = make("rnn", spectral_radius=radius, recurrent_init="normal")
    eig = torch.linalg.eigvals(m.u.weight.double()).abs().max().item()
    assert eig == pytest.approx(radius, rel=1e-5)


def test_orthogonal_init_is_orthogonal_at_radius_one():
    m = make("mgu", spectral_radius=1.0)
    u = m.u_h.weight.double()
    torch.testing.assert_close(u @ u.T, torch.eye(8, dtype=torch.float64), atol=1e-5, rtol=0)


def test_low_rank_init_is_truncated_svd_of_the_dense_init():
    dense, low = make("mgu", seed=4), make("mgu", ranks={"u_h": 3}, seed=4)
    assert isinstance(low.u_f, DenseMatrix) and isinstance(low.u_h, LowRankMatrix)
    assert low.u_h.rank == 3 and low.config.ranks == {"u_h": 3}
    s = torch.linalg.svdvals(dense.u_h.weight.double())
    torch.testing.assert_close(low.u_h.sigma.double(), s[:3], rtol=1e-5, atol=0)
    assert low.u_h.is_svd_form()


def test_rebalance_keeps_the_product_and_restores_svd_form():
    g = torch.Generator().manual_seed(0)
    m = LowRankMatrix(torch.randn(8, 3, generator=g), torch.randn(3, 8, generator=g))
    before = m.dense().detach().clone()
    assert m.is_svd_form()
    with torch.no_grad():
        m.a.add_(0.1 * torch.randn(8, 3, generator=g))  # "fine-tuning"
    assert not m.is_svd_form()
    changed = m.dense().detach().clone()
    m.rebalance_()
    assert m.is_svd_form()
    torch.testing.assert_close(m.dense().detach(), changed, atol=1e-5, rtol=0)
    assert not torch.allclose(before, changed)
    assert torch.all(m.sigma[:-1] >= m.sigma[1:])


def test_low_rank_forward_equals_its_dense_value():
    m = make("rnn", ranks=2).double()
    h = torch.randn(4, 8, dtype=torch.float64)
    torch.testing.assert_close(m.u(h), h @ m.u.dense().T)


def test_set_recurrent_updates_config():
    m = make("mgu")
    m.set_recurrent("u_f", LowRankMatrix(torch.randn(8, 2), torch.randn(2, 8)))
    assert m.config.ranks == {"u_f": 2}
    with pytest.raises(UserError):
        m.set_recurrent("u", DenseMatrix(torch.zeros(8, 8)))
    with pytest.raises(UserError):
        m.set_recurrent("u_h", DenseMatrix(torch.zeros(4, 4)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cell": "lstm"},
        {"hidden_size": 0},
        {"input_size": -1},
        {"output_size": 1.5},
        {"readout_mode": "last"},
        {"readout_activation": "softmax"},
        {"spectral_radius": 0.0},
        {"ranks": 99},
        {"ranks": {"u": 2}},
        {"recurrent_init": "xavier"},
    ],
)
def test_bad_model_config_is_a_user_error(kwargs):
    with pytest.raises(UserError):
        ModelConfig(**{"cell": "mgu", "input_size": 2, "hidden_size": 8, "output_size": 2, **kwargs})


def test_input_shape_is_checked():
    with pytest.raises(UserError):
        make("rnn")(torch.zeros(2, 5, 4))


# ---- extract: exact round trips ---------------------------------------------------------
@pytest.mark.parametrize("cell", ["rnn", "mgu"])
@pytest.mark.parametrize("ranks", [None, 3, {"u_f": 2}])
def test_torch_graph_torch_round_trip_is_exact(cell, ranks):
    if isinstance(ranks, dict) and cell == "rnn":
        ranks = {"u": 2}
    m = make(cell, ranks, mode="final", activation="sigmoid")
    g = to_graph(m, {"name": "memorization"}, {"source": "test"})
    back = from_graph(g)
    structural = ("cell", "input_size", "hidden_size", "output_size", "readout_mode", "readout_activation", "ranks")
    assert all(getattr(back.config, k) == getattr(m.config, k) for k in structural)
    for (k, v), (k2, v2) in zip(m.state_dict().items(), back.state_dict().items()):
        assert k == k2 and v.dtype == v2.dtype and torch.equal(v, v2), k
    x = torch.randn(2, 6, 3)
    assert torch.equal(m(x)[0], back(x)[0])
    assert g.task == {"name": "memorization"} and g.provenance == {"source": "test"}


def test_graph_torch64_graph_round_trip_is_exact():
    m = make("mgu", ranks={"u_h": 3})
    g = to_graph(m)
    # a graph with float64 values that float32 cannot hold
    cell = type(g.cell)(
        **{
            **{k: getattr(g.cell, k) for k in g.cell.__dataclass_fields__},
            "w_f": g.cell.w_f + 1e-12,
            "u_h": LowRank(g.cell.u_h.a + 1e-12, g.cell.u_h.b, g.cell.u_h.sigma),
        }
    )
    g = g.replace_cell(cell)
    g2 = to_graph(from_graph(g, dtype=torch.float64))
    assert np.array_equal(g2.cell.w_f, g.cell.w_f)
    for name in ("u_f", "u_h"):
        a, b = g.cell.recurrent()[name], g2.cell.recurrent()[name]
        assert type(a) is type(b)
        if isinstance(a, LowRank):
            for part in ("a", "b", "sigma"):
                assert np.array_equal(getattr(a, part), getattr(b, part))
        else:
            assert np.array_equal(a, b)


def test_to_graph_rebalance_after_fine_tuning():
    m = make("rnn", ranks=3)
    with torch.no_grad():
        m.u.b.mul_(torch.linspace(0.5, 2.0, 8))
    g_raw, g_bal = to_graph(m), to_graph(m, rebalance=True)
    np.testing.assert_allclose(g_bal.cell.u.dense(), g_raw.cell.u.dense(), atol=1e-6)
    a, b, s = g_bal.cell.u.a, g_bal.cell.u.b, g_bal.cell.u.sigma
    np.testing.assert_allclose(a.T @ a, np.diag(s), atol=1e-5)
    np.testing.assert_allclose(b @ b.T, np.diag(s), atol=1e-5)
    assert m.u.b is not None and not m.u.is_svd_form()  # the model itself is left alone


@settings(max_examples=25)
@given(
    cell=st.sampled_from(["rnn", "mgu"]),
    inputs=st.integers(1, 4),
    hidden=st.integers(1, 10),
    outputs=st.integers(1, 3),
    steps=st.integers(1, 6),
    batch=st.integers(1, 3),
    rank=st.one_of(st.none(), st.integers(1, 10)),
    mode=st.sampled_from(["per_step", "final"]),
    seed=st.integers(0, 2**16),
)
def test_model_equals_its_graph_on_random_shapes(cell, inputs, hidden, outputs, steps, batch, rank, mode, seed):
    ranks = None if rank is None else min(rank, hidden)
    cfg = ModelConfig(
        cell=cell, input_size=inputs, hidden_size=hidden, output_size=outputs, readout_mode=mode, ranks=ranks
    )
    m = RecurrentModel(cfg, seed=seed)
    x = torch.randn(batch, steps, inputs, generator=torch.Generator().manual_seed(seed))
    out, states = m(x)
    g_out, g_states = to_graph(m).run(x.numpy())
    np.testing.assert_allclose(g_states, _np(states), atol=2e-5)
    np.testing.assert_allclose(g_out, _np(out), atol=2e-5)
