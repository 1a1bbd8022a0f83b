"""Audio tasks: generation (CI sizes), determinism, the Task protocol, learnability, the CLI.

Generation needs the espeak-ng program; those tests skip with a reason when it is absent (CI
installs it). The engine-missing path is tested everywhere by pointing STAPES_ESPEAK_NG elsewhere.
"""

import json

import numpy as np
import pytest

from stapes.errors import UserError
from stapes.tasks import Batch, make_task, task_from_config
from stapes.tasks.audio import espeak_library, generate
from stapes.tasks.audio.engine import engine_route
from stapes.tasks.audio.tasks import CI_SIZES

needs_espeak = pytest.mark.skipif(
    engine_route() is None, reason="no speech engine: apt-get install espeak-ng (CI installs it)"
)
needs_library = pytest.mark.skipif(
    not espeak_library.available(), reason="the pip-only engine is not installed (pip install espeakng-loader)"
)
pytestmark = pytest.mark.audio


@pytest.fixture(scope="module")
def audio_cache(tmp_path_factory):
    """A fresh cache folder for this module: the CI-sized sets are generated once, here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STAPES_CACHE", str(tmp_path_factory.mktemp("stapes-cache")))
        yield


@pytest.fixture(scope="module")
def tasks(audio_cache):
    """The three tasks at CI sizes (VAD and denoise share one generated set of streams)."""
    return {name: make_task(name, progress=False, **CI_SIZES[name]) for name in ("vad", "denoise", "kws")}


@pytest.fixture
def no_engine(monkeypatch):
    """Neither the espeak-ng program nor the pip-only library."""
    monkeypatch.setenv("STAPES_ESPEAK_NG", "/nonexistent/espeak-ng")
    monkeypatch.setattr(espeak_library, "available", lambda: False)


def test_engine_missing_gives_a_clear_user_error(no_engine):
    for name in ("vad", "denoise", "kws"):
        with pytest.raises(UserError, match="apt-get install espeak-ng"):
            make_task(name, **CI_SIZES[name])


def test_engine_missing_cli_exits_2_with_one_line(no_engine, tmp_path, capsys):
    from stapes.cli import main

    assert main(["train", "--task", "vad", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert "espeak-ng" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_forcing_an_unknown_engine_route_is_a_user_error(monkeypatch):
    monkeypatch.setenv("STAPES_SPEECH_ENGINE", "festival")
    with pytest.raises(UserError, match="STAPES_SPEECH_ENGINE"):
        engine_route()


@needs_library
def test_library_engine_is_deterministic_per_item(tmp_path, monkeypatch):
    """libespeak-ng keeps state between calls in a process; forked synthesis makes items independent."""
    monkeypatch.setenv("STAPES_SPEECH_ENGINE", "library")
    monkeypatch.setenv("STAPES_CACHE", str(tmp_path))
    spec = generate.StreamSpec(seed=5, seconds=1.0, bank_seconds=2.0)
    one = generate.load_streams(spec, "train", 8, workers=1, use_cache=False, progress=False)
    two = generate.load_streams(spec, "train", 8, workers=2, use_cache=False, progress=False)
    assert one["clean"].tobytes() == two["clean"].tobytes()
    assert np.abs(one["clean"]).max() > 1000


@needs_espeak
def test_generation_is_deterministic_and_independent_of_workers(tmp_path, monkeypatch):
    monkeypatch.setenv("STAPES_CACHE", str(tmp_path))
    spec = generate.StreamSpec(seed=3, seconds=1.0, bank_seconds=3.0)
    one = generate.load_streams(spec, "test", 8, workers=1, use_cache=False, progress=False)
    two = generate.load_streams(spec, "test", 8, workers=2, use_cache=False, progress=False)
    for key in one:
        assert one[key].tobytes() == two[key].tobytes(), key
    kspec = generate.KeywordSpec(seed=3, bank_seconds=3.0)
    a = generate.load_keywords(kspec, "train", 12, workers=2, use_cache=False, progress=False)
    b = generate.load_keywords(kspec, "train", 12, workers=1, use_cache=False, progress=False)
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    assert a["audio"].dtype == np.int16 and a["label"].tolist() == list(range(12))
    # another seed gives other audio; the cache returns the same bytes it stored
    assert (
        generate.load_streams(
            generate.StreamSpec(seed=4, seconds=1.0, bank_seconds=3.0),
            "test",
            8,
            workers=2,
            use_cache=False,
            progress=False,
        )["clean"].tobytes()
        != one["clean"].tobytes()
    )
    stored = generate.load_streams(spec, "test", 8, workers=2, progress=False)
    again = generate.load_streams(spec, "test", 8, workers=2, progress=False)
    assert stored["clean"].tobytes() == one["clean"].tobytes() == again["clean"].tobytes()
    assert len(list((tmp_path / "audio").glob("streams-test-*.npz"))) == 1


@needs_espeak
def test_the_noise_types_are_recorded_and_a_task_that_needs_missing_recordings_is_refused(monkeypatch):
    """The task config names its noise types, so a model's data never changes silently with an
    optional package: rebuilding a task that used the real recordings where they are missing
    is a clear error, and a task of synthetic noise only is the same with or without them."""
    monkeypatch.setenv("STAPES_OPENSFX", "/nonexistent/opensfx.cat")
    synthetic = make_task("vad", progress=False, **CI_SIZES["vad"])
    assert synthetic.config()["noise_types"] == ["white", "pink", "brown", "hum", "babble"]
    with pytest.raises(UserError, match="openttd-opensfx"):
        task_from_config({**synthetic.config(), "noise_types": [*synthetic.config()["noise_types"], "sfx"]})
    for bad in ([], "white", ["white", "white"], ["rain"]):
        with pytest.raises(UserError, match="noise"):
            make_task("vad", progress=False, noise_types=bad, **CI_SIZES["vad"])


@needs_espeak
def test_protocol_shapes_and_config_round_trip(tasks):
    expected = {
        "vad": ((40,), 1, "per_step", "sigmoid", "bce", "accuracy"),
        "denoise": ((20,), 20, "per_step", "sigmoid", "mse", "snr_improvement_db"),
        "kws": ((40,), 12, "final", "linear", "ce", "accuracy"),
    }
    for name, task in tasks.items():
        (inputs,), outputs, mode, act, loss, primary = expected[name]
        assert (
            task.input_size,
            task.output_size,
            task.readout_mode,
            task.readout_activation,
            task.loss_kind,
            task.primary_metric,
        ) == (inputs, outputs, mode, act, loss, primary)
        config = json.loads(json.dumps(task.config()))
        rebuilt = task_from_config(config)
        assert rebuilt.config() == task.config()
        batch, again = task.sample("train", 5, seed=7), rebuilt.sample("train", 5, seed=7)
        assert isinstance(batch, Batch) and batch.x.dtype == np.float32
        np.testing.assert_array_equal(batch.x, again.x)
        assert not np.array_equal(batch.x, task.sample("train", 5, seed=8).x)
        assert batch.x.shape[0] == 5 and batch.x.shape[2] == inputs
        assert 0.5 < task.coherence() < 1.0
    train_x = tasks["vad"].sample("train", CI_SIZES["vad"]["train_clips"], seed=0).x
    assert abs(float(train_x.mean())) < 0.2 and 0.8 < float(train_x.std()) < 1.2  # standardised
    test = tasks["kws"].sample("test", 10**6, seed=0)
    assert len(test) == CI_SIZES["kws"]["test_clips"] and test.y.dtype == np.int64 and test.mask is None


@needs_espeak
def test_baselines_and_oracle(tasks):
    vad = tasks["vad"]
    batch = vad.sample("test", 10**6, seed=0)
    always = vad.metrics(np.ones(batch.y.shape), batch)
    assert always["accuracy"] == pytest.approx(always["always_speech_accuracy"])
    assert 0.5 < always["accuracy"] < 0.85 and always["f1"] > 0.6
    assert {"accuracy_white", "f1_babble", "accuracy_snr_lt5"} <= set(always)
    den = tasks["denoise"]
    batch = den.sample("test", 10**6, seed=0)
    identity = den.metrics(np.ones(batch.y.shape), batch)
    assert identity["snr_improvement_db"] == pytest.approx(0.0, abs=1e-6)
    assert identity["gain_mse"] == pytest.approx(identity["identity_gain_mse"], rel=1e-5)
    oracle = den.metrics(batch.y.astype(np.float64), batch)
    assert oracle["snr_improvement_db"] >= 6.0 and oracle["gain_mse"] == 0.0
    cropped = make_task("denoise", progress=False, train_frames=50, **CI_SIZES["denoise"])
    windows = cropped.sample("train", 2, seed=0)
    assert windows.x.shape[1] == windows.y.shape[1] == 50
    with pytest.raises(UserError, match="whole clips"):
        cropped.metrics(windows.y, windows)


def _train(task, hidden: int, steps: int, batch: int):
    from stapes.frontend.models import RecurrentModel
    from stapes.frontend.train import TrainConfig, model_config_for, train

    model = RecurrentModel(model_config_for(task, "mgu", hidden), seed=0)
    cfg = TrainConfig(steps=steps, batch=batch, lr=1e-2, eval_every=max(steps // 3, 1), eval_n=64, threads=1)
    return train(model, task, cfg, progress=False)["test"]


@needs_espeak
@pytest.mark.quality
def test_vad_mgu_beats_always_speech(audio_cache):
    task = make_task("vad", progress=False, train_frames=100, **CI_SIZES["vad"])
    test = _train(task, hidden=16, steps=100, batch=16)
    assert test["accuracy"] >= test["always_speech_accuracy"] + 0.10, test


@needs_espeak
@pytest.mark.quality
def test_kws_mgu_beats_twice_chance(tasks):
    test = _train(tasks["kws"], hidden=32, steps=250, batch=32)
    assert test["accuracy"] >= 2.0 / 12, test


@needs_espeak
@pytest.mark.quality
def test_denoise_trained_beats_identity_and_oracle_beats_6db(audio_cache):
    task = make_task("denoise", progress=False, train_frames=100, **CI_SIZES["denoise"])
    test = _train(task, hidden=16, steps=150, batch=16)
    assert test["oracle_snr_improvement_db"] >= 6.0, test
    assert test["snr_improvement_db"] > 0.0, test
    assert test["gain_mse"] < test["identity_gain_mse"], test
