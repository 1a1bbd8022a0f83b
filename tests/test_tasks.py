"""Tasks: generator structure, determinism, masked loss, metrics, registry, coherence, evaluation."""

import numpy as np
import pytest
import torch

from stapes import tasks
from stapes.errors import UserError
from stapes.frontend.extract import to_graph
from stapes.frontend.losses import task_loss
from stapes.frontend.models import RecurrentModel
from stapes.frontend.train import model_config_for
from stapes.tasks import Batch, lag1_autocorrelation, make_task, task_from_config
from stapes.tasks.evaluate import eval_batch, evaluate_graph, metrics_from_outputs


@pytest.mark.parametrize("length,symbols,delay,hold", [(5, 2, 20, 1), (3, 4, 0, 1), (4, 3, 7, 3)])
def test_memorization_structure(length, symbols, delay, hold):
    task = make_task("memorization", length=length, symbols=symbols, delay=delay, hold=hold)
    b = task.sample("train", 64, seed=3)
    steps = length * hold + delay + 1 + length
    assert task.steps == steps
    assert b.x.shape == (64, steps, symbols + 2) and b.x.dtype == np.float32
    assert b.y.shape == (64, steps) and b.y.dtype == np.int64
    assert np.all(b.x.sum(-1) == 1)  # one-hot
    codes = b.x.argmax(-1)
    blank, trigger = symbols, symbols + 1
    patterns = b.extra["patterns"]
    assert patterns.shape == (64, length)
    np.testing.assert_array_equal(codes[:, : length * hold], np.repeat(patterns, hold, axis=1))
    np.testing.assert_array_equal(codes[:, length * hold : length * hold + delay], blank)
    np.testing.assert_array_equal(codes[:, task.trigger_step], trigger)
    np.testing.assert_array_equal(codes[:, task.trigger_step + 1 :], blank)
    assert np.sum(codes == trigger) == 64  # exactly one trigger per sequence
    expected_mask = np.zeros(steps, bool)
    expected_mask[task.trigger_step + 1 :] = True
    assert np.all(b.mask == expected_mask)
    np.testing.assert_array_equal(b.y[:, b.mask[0]], patterns)
    assert task.input_size == symbols + 2 and task.output_size == symbols


def test_memorization_defaults_and_pattern_coverage():
    task = make_task("memorization")
    assert task.config() == {"name": "memorization", "length": 5, "symbols": 2, "delay": 20, "hold": 1}
    patterns = task.sample("train", 2000, seed=0).extra["patterns"]
    assert len({tuple(p) for p in patterns}) == 32  # K^L = 2^5 patterns


def test_sampling_is_deterministic_and_splits_differ():
    for name in ("memorization", "frequency"):
        task = make_task(name)
        a, b = task.sample("train", 32, seed=5), task.sample("train", 32, seed=5)
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
        assert not np.array_equal(a.x, task.sample("test", 32, seed=5).x)
        assert not np.array_equal(a.x, task.sample("train", 32, seed=6).x)


def test_masked_loss_counts_only_recall_steps():
    task = make_task("memorization", delay=4)
    b = task.sample("train", 8, seed=0)
    logits = torch.randn(8, task.steps, 2, requires_grad=True)
    loss = task_loss(task, logits, b)
    loss.backward()
    grad_outside = logits.grad[torch.as_tensor(~b.mask)]
    assert torch.all(grad_outside == 0) and torch.any(logits.grad[torch.as_tensor(b.mask)] != 0)
    # outputs off the mask do not change the loss
    changed = logits.detach().clone()
    changed[torch.as_tensor(~b.mask)] = 100.0
    assert torch.equal(task_loss(task, changed, b), loss.detach())
    # perfect logits on the recall steps give (almost) zero loss
    perfect = torch.full((8, task.steps, 2), -20.0)
    perfect.scatter_(2, torch.as_tensor(b.y)[..., None], 20.0)
    assert task_loss(task, perfect, b).item() < 1e-6


def test_memorization_metrics():
    task = make_task("memorization", delay=2)
    b = task.sample("test", 4, seed=0)
    perfect = np.eye(2)[b.y] * 5.0
    assert task.metrics(perfect, b) == {"recall_accuracy": 1.0, "perfect_fraction": 1.0}
    wrong_one = perfect.copy()
    step = task.trigger_step + 1
    wrong_one[0, step] = wrong_one[0, step, ::-1]  # one symbol wrong in sequence 0
    m = task.metrics(wrong_one, b)
    assert m["recall_accuracy"] == pytest.approx(1 - 1 / 20) and m["perfect_fraction"] == 0.75
    garbage_off_mask = perfect.copy()
    garbage_off_mask[:, : task.trigger_step + 1] = np.array([9.0, -9.0])
    assert task.metrics(garbage_off_mask, b)["recall_accuracy"] == 1.0


def test_frequency_task_structure():
    task = make_task("frequency", classes=3, steps=80, segment=20, settle=5)
    b = task.sample("val", 16, seed=2)
    assert b.x.shape == (16, 80, 1) and b.y.shape == (16, 80) and b.mask.shape == (16, 80)
    assert set(np.unique(b.y)) <= {0, 1, 2}
    assert np.all(~b.mask[:, :5])  # settle steps at the start never count
    switches = np.diff(b.y, axis=1) != 0
    for i, t in zip(*np.nonzero(switches)):
        assert not b.mask[i, t + 1 : t + 6].any()  # nor right after a switch
    segments = np.diff(np.flatnonzero(np.r_[True, switches[0], True]))
    assert segments[:-1].min() >= 10 and segments.max() <= 30
    assert task.primary_metric == "accuracy"


def test_frequency_task_is_solvable_from_the_signal():
    """The frequency is recoverable from a short window: zero crossings give the period."""
    task = make_task("frequency", noise=0.0)
    b = task.sample("test", 8, seed=0)
    x = b.x[..., 0]
    for i in range(8):
        t = np.flatnonzero(b.mask[i])[0]
        label = b.y[i, t]
        # frequency estimate from the mean |difference| vs amplitude, over the settle window
        window = x[i, t - task.settle : t + 1]
        est = np.mean(np.abs(np.diff(window)))
        expected = [np.mean(np.abs(np.diff(np.sin(2 * np.pi * np.arange(200) / p)))) for p in task.periods]
        assert np.argmin(np.abs(np.array(expected) - est)) == label


def test_coherence_numbers():
    assert abs(make_task("memorization").coherence()) < 0.1
    assert make_task("memorization", hold=4).coherence() == pytest.approx(0.75, abs=0.05)
    freq = make_task("frequency")
    assert 0.5 < freq.coherence() < 0.8
    assert make_task("frequency", noise=0.0).coherence() > freq.coherence()


def test_lag1_autocorrelation_reference_values():
    rng = np.random.default_rng(0)
    white = rng.standard_normal((64, 400, 2))
    assert abs(lag1_autocorrelation(white)) < 0.02
    ar = np.zeros((64, 400, 1))
    for t in range(1, 400):
        ar[:, t] = 0.9 * ar[:, t - 1] + rng.standard_normal((64, 1))
    assert lag1_autocorrelation(ar) == pytest.approx(0.9, abs=0.02)


@pytest.mark.parametrize(
    "name,params",
    [
        ("nope", {}),
        ("memorization", {"delay": -1}),
        ("memorization", {"symbols": 1}),
        ("memorization", {"lenght": 3}),
        ("frequency", {"min_period": 10, "max_period": 5}),
        ("frequency", {"settle": 99}),
        # sizes beyond the documented limits are refused before anything is allocated
        ("memorization", {"delay": 10**9}),
        ("memorization", {"length": 20_000, "hold": 10}),
        ("memorization", {"symbols": 10**6}),
        ("frequency", {"steps": 10**7}),
        ("frequency", {"max_period": float("inf")}),
        ("frequency", {"noise": float("inf")}),
        ("frequency", {"noise": float("nan")}),
    ],
)
def test_bad_tasks_are_user_errors(name, params):
    with pytest.raises(UserError):
        make_task(name, **params)


def test_bad_split_and_count():
    task = make_task("memorization")
    with pytest.raises(UserError, match="split"):
        task.sample("dev", 4, 0)
    with pytest.raises(UserError):
        task.sample("train", 0, 0)
    with pytest.raises(UserError, match="1..1000000"):
        task.sample("train", 10**7, 0)


def test_lazy_entry_that_cannot_load_says_why(monkeypatch):
    monkeypatch.setitem(tasks._REGISTRY, "ghost", "stapes.no_such_module:make_ghost")
    with pytest.raises(UserError, match="ghost task is unavailable.*no_such_module"):
        make_task("ghost")


def test_audio_tasks_are_registered_lazily():
    for name in ("vad", "denoise", "kws"):
        assert name in tasks.TASK_NAMES
        assert tasks._REGISTRY[name] == f"stapes.tasks.audio.tasks:make_{name}_task"


def test_config_rebuilds_the_task():
    for task in (make_task("memorization", delay=3, hold=2), make_task("frequency", classes=4)):
        again = task_from_config(task.config())
        assert again.config() == task.config()
        np.testing.assert_array_equal(again.sample("test", 4, 1).x, task.sample("test", 4, 1).x)
    with pytest.raises(UserError):
        task_from_config(None)


def test_evaluate_graph_matches_task_metrics_of_graph_outputs():
    task = make_task("memorization", delay=3)
    model = RecurrentModel(model_config_for(task, "rnn", 8), seed=0)
    graph = to_graph(model, task.config(), {})
    got = evaluate_graph(graph, n=64, seed=9)
    t, batch = eval_batch(task.config(), n=64, seed=9)
    outputs, _ = graph.run(batch.x)
    assert got == task.metrics(outputs, batch)
    assert metrics_from_outputs(task, outputs, batch) == got
    with pytest.raises(UserError, match="shape"):
        metrics_from_outputs(task, outputs[:, :-1], batch)
    with pytest.raises(UserError, match="task"):
        evaluate_graph(to_graph(model, None, {}))
    assert isinstance(batch, Batch) and len(batch) == 64


def test_generic_helpers_without_mask_and_for_final_outputs():
    from stapes.frontend.losses import masked_cross_entropy
    from stapes.tasks import masked_accuracy

    y = np.array([[0, 1, 1], [1, 1, 0]])
    logits = np.eye(2)[y] * 4.0
    logits[1, 2] = [0.0, 4.0]  # one wrong step
    b = Batch(np.zeros((2, 3, 1), np.float32), y, None)
    assert masked_accuracy(logits, b) == (pytest.approx(5 / 6), 0.5)
    full = torch.nn.functional.cross_entropy(torch.tensor(logits).reshape(-1, 2), torch.tensor(y).reshape(-1))
    assert masked_cross_entropy(torch.tensor(logits), b).item() == pytest.approx(full.item())
    final = Batch(np.zeros((3, 3, 1), np.float32), np.array([0, 1, 1]), None)
    assert masked_accuracy(np.array([[1.0, 0], [0, 1], [1, 0]]), final) == (pytest.approx(2 / 3),) * 2
    assert masked_cross_entropy(torch.tensor([[9.0, -9], [-9, 9], [-9, 9]]), final).item() < 1e-6
