"""The audio tasks (Task protocol of the team brief): ``vad``, ``denoise``, ``kws``.

Each task owns a generated data set (train / val / test clips, see generate.py), built on first
use and cached on disk. ``sample(split, n, seed)`` serves from that set:

* train: n clips drawn at random (seeded by ``seed``; with replacement only if n exceeds the set);
* val / test: the first min(n, size) clips in order (the same batch for every seed), so every
  evaluation of a split sees the same clips.

Inputs are standardised per band with the train split's mean and standard deviation; both are
stored in ``config()`` so that ``make_task(**config)`` rebuilds the task exactly without
recomputing them. ``coherence()`` is the pooled lag-1 autocorrelation of the standardised test
inputs (strongly coherent: speech features change slowly from one 8-10 ms frame to the next).
"""

from __future__ import annotations

import sys
from collections import OrderedDict

import numpy as np

from stapes.errors import UserError
from stapes.tasks import MAX_SEQUENCES, Batch, Task, lag1_autocorrelation
from stapes.tasks.audio import features
from stapes.tasks.audio.engine import require_engine
from stapes.tasks.audio.generate import KeywordSpec, StreamSpec, load_keywords, load_streams, noisy_int16, vad_labels
from stapes.tasks.audio.noise import check_noise_types
from stapes.tasks.audio.noise import noise_types as available_noise_types
from stapes.tasks.audio.speech import KEYWORDS, SPLITS

# Sizes used by the tests (seconds to generate) and by benchmarks/bench_audio.py (minutes).
CI_SIZES = {
    "vad": dict(train_clips=96, val_clips=16, test_clips=32, seconds=2.0, bank_seconds=10.0),
    "denoise": dict(train_clips=96, val_clips=16, test_clips=32, seconds=2.0, bank_seconds=10.0),
    "kws": dict(train_clips=480, val_clips=60, test_clips=120, bank_seconds=10.0),
}
BENCH_SIZES = {
    "vad": dict(train_clips=400, val_clips=40, test_clips=60, seconds=4.0),
    "denoise": dict(train_clips=1000, val_clips=40, test_clips=60, seconds=4.0),
    "kws": dict(train_clips=2400, val_clips=240, test_clips=600),
}


class _SplitMemo:
    """The last few generated splits of this process, read-only. Rebuilding a task from its config
    (every evaluation of a sweep does) then costs nothing instead of recomputing every feature."""

    def __init__(self, size: int):
        self.size, self.items = size, OrderedDict()

    def get(self, key):
        if key in self.items:
            self.items.move_to_end(key)
        return self.items.get(key)

    def put(self, key, data: dict):
        for value in data.values():
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
        self.items[key] = data
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return data


_GENERATED = _SplitMemo(size=9)  # three tasks' train/val/test


MAX_CLIPS = 100_000  # per split, checked before anything is generated


def _count(name: str, value, maximum: int = MAX_CLIPS) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= maximum:
        raise UserError(f"task parameter {name} must be an integer in 1..{maximum}, got {value!r}")
    return int(value)


def _number(name: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not low <= value <= high:
        raise UserError(f"task parameter {name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _stats(name: str, value, size: int) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (size,) or not np.all(np.isfinite(arr)):
        raise UserError(f"task parameter {name} must be a list of {size} finite numbers")
    return arr


def _split_name(split: str) -> str:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    return split


class AudioTask(Task):
    """Shared parts: parameters, the generated splits, standardisation, sampling, per-group metrics."""

    feature_count: int

    def __init__(
        self,
        *,
        seed: int,
        train_clips: int,
        val_clips: int,
        test_clips: int,
        snr_low: float,
        snr_high: float,
        p_reverb: float,
        bank_seconds: float,
        feature_mean,
        feature_std,
        workers: int,
        progress: bool,
        noise_types=None,
    ):
        require_engine()
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise UserError(f"task parameter seed must be an integer >= 0, got {seed!r}")
        self.seed = int(seed)
        self.sizes = {
            "train": _count("train_clips", train_clips),
            "val": _count("val_clips", val_clips),
            "test": _count("test_clips", test_clips),
        }
        self.snr_low = _number("snr_low", snr_low, -30.0, 60.0)
        self.snr_high = _number("snr_high", snr_high, self.snr_low, 60.0)
        self.p_reverb = _number("p_reverb", p_reverb, 0.0, 1.0)
        self.bank_seconds = _number("bank_seconds", bank_seconds, 2.0, 3600.0)
        # Recorded in the config, so the same data is rebuilt (or refused) wherever the model goes;
        # a new task takes every type available here (the real recordings need openttd-opensfx).
        self.noise_types = check_noise_types(available_noise_types() if noise_types is None else noise_types)
        # progress None: a generation progress bar only when stderr is a terminal
        self.workers = _count("workers", workers, maximum=256)
        self.progress = sys.stderr.isatty() if progress is None else bool(progress)
        self.input_size = self.feature_count
        self._splits: dict[str, dict[str, np.ndarray]] = {}
        mean = _stats("feature_mean", feature_mean, self.feature_count)
        std = _stats("feature_std", feature_std, self.feature_count)
        if (mean is None) != (std is None):
            raise UserError("task parameters feature_mean and feature_std go together")
        if std is not None and np.any(std <= 0):
            raise UserError("task parameter feature_std must be positive")
        if mean is None:  # train statistics over every frame of every train clip
            raw = self._raw_split("train")["features"].reshape(-1, self.feature_count).astype(np.float64)
            mean, std = raw.mean(axis=0), np.maximum(raw.std(axis=0), 1e-6)
        self.feature_mean, self.feature_std = mean, std

    # ---- to be provided by each task
    def _generate(self, split: str) -> dict[str, np.ndarray]:
        """Raw features (N, T, I) float32 under "features", targets under "y", and per-clip data."""
        raise NotImplementedError

    def _task_params(self) -> dict:
        raise NotImplementedError

    # ---- shared
    def _common_params(self) -> dict:
        return {
            "seed": self.seed,
            "train_clips": self.sizes["train"],
            "val_clips": self.sizes["val"],
            "test_clips": self.sizes["test"],
            "snr_low": self.snr_low,
            "snr_high": self.snr_high,
            "p_reverb": self.p_reverb,
            "bank_seconds": self.bank_seconds,
            "noise_types": list(self.noise_types),
        }

    def config(self) -> dict:
        return {
            "name": self.name,
            **self._common_params(),
            **self._task_params(),
            "feature_mean": [float(v) for v in self.feature_mean],
            "feature_std": [float(v) for v in self.feature_std],
        }

    def describe(self) -> str:
        params = ", ".join(
            f"{k}={v}" for k, v in self.config().items() if k not in ("name", "feature_mean", "feature_std")
        )
        return f"{self.name}({params})"

    @property
    def eval_size(self) -> int:  # evaluation uses the whole test split by default
        return self.sizes["test"]

    def _raw_split(self, split: str) -> dict[str, np.ndarray]:
        if split not in self._splits:
            key = (self.name, repr(sorted({**self._common_params(), **self._task_params()}.items())), split)
            self._splits[split] = _GENERATED.get(key) or _GENERATED.put(key, self._generate(split))
        return self._splits[split]

    def standardise(self, raw: np.ndarray) -> np.ndarray:
        """(…, I) raw features -> model inputs (float32), with the stored train statistics."""
        return ((raw - self.feature_mean) / self.feature_std).astype(np.float32)

    def _indices(self, split: str, n: int, seed: int) -> np.ndarray:
        size = self.sizes[split]
        if split != "train":
            return np.arange(min(n, size))
        rng = np.random.default_rng([int(seed), SPLITS.index(split)])
        return rng.choice(size, size=n, replace=n > size)

    def sample(self, split: str, n: int, seed: int) -> Batch:
        data = self._raw_split(_split_name(split))
        idx = self._indices(split, _count("n", n, maximum=MAX_SEQUENCES), seed)
        x = self.standardise(data["features"][idx])
        return self._batch(x, data, idx)

    def _batch(self, x: np.ndarray, data: dict[str, np.ndarray], idx: np.ndarray) -> Batch:
        raise NotImplementedError

    def coherence(self) -> float:
        return lag1_autocorrelation(self.sample("test", self.sizes["test"], seed=0).x)

    def _groups(self, batch: Batch) -> dict[str, np.ndarray]:
        """Boolean clip masks by noise type and by SNR band (< 5 dB, >= 5 dB) for per-group metrics."""
        kinds, snr = batch.extra["noise_type"], batch.extra["snr"]
        groups = {name: kinds == k for k, name in enumerate(self.noise_types)}
        if np.any(kinds < 0):
            groups["clean"] = kinds < 0
        groups["snr_lt5"] = (kinds >= 0) & (snr < 5.0)
        groups["snr_ge5"] = (kinds >= 0) & (snr >= 5.0)
        return {k: v for k, v in groups.items() if np.any(v)}


class _StreamTask(AudioTask):
    """Tasks on speech streams (VAD, denoise): per-step readout, all steps count."""

    readout_mode = "per_step"
    readout_activation = "sigmoid"

    def __init__(self, *, seconds: float, train_frames: int, **common):
        self.seconds = _number("seconds", seconds, 0.5, 600.0)
        if isinstance(train_frames, bool) or not isinstance(train_frames, (int, np.integer)) or train_frames < 0:
            raise UserError(f"task parameter train_frames must be an integer >= 0, got {train_frames!r}")
        self.train_frames = int(train_frames)
        super().__init__(**common)

    def sample(self, split: str, n: int, seed: int) -> Batch:
        """As AudioTask.sample; train batches are cut to a random window of `train_frames` frames
        per clip when 0 < train_frames < clip length (shorter backpropagation, more variety)."""
        batch = super().sample(split, n, seed)
        steps = batch.x.shape[1]
        if split != "train" or not 0 < self.train_frames < steps:
            return batch
        rng = np.random.default_rng([int(seed), SPLITS.index(split), 1])
        start = rng.integers(0, steps - self.train_frames + 1, size=len(batch))
        window = start[:, None] + np.arange(self.train_frames)
        rows = np.arange(len(batch))[:, None]
        extra = {k: v for k, v in batch.extra.items() if k in ("noise_type", "snr")}
        return Batch(batch.x[rows, window], batch.y[rows, window], batch.mask[rows, window], extra)

    def _spec(self) -> StreamSpec:
        return StreamSpec(
            seed=self.seed,
            seconds=self.seconds,
            snr_low=self.snr_low,
            snr_high=self.snr_high,
            p_reverb=self.p_reverb,
            bank_seconds=self.bank_seconds,
            noise_types=self.noise_types,
        )

    def _streams(self, split: str) -> dict[str, np.ndarray]:
        return load_streams(self._spec(), split, self.sizes[split], workers=self.workers, progress=self.progress)

    def _task_params(self) -> dict:
        return {"seconds": self.seconds, "train_frames": self.train_frames}


class VadTask(_StreamTask):
    """Voice activity per 10 ms frame from 40 log-mel energies; 1 sigmoid output, BCE.

    Metrics: ``accuracy`` (frames, threshold 0.5; primary), ``f1`` (speech = positive),
    ``always_speech_accuracy`` (the trivial baseline on the same frames), and ``accuracy_<group>`` /
    ``f1_<group>`` per noise type and SNR band.
    """

    name = "vad"
    output_size = 1
    loss_kind = "bce"
    primary_metric = "accuracy"
    feature_count = features.MEL_BANDS

    def _generate(self, split: str) -> dict[str, np.ndarray]:
        s = self._streams(split)
        noisy = noisy_int16(s["clean"], s["noise"])
        labels = np.stack([vad_labels(c) for c in s["clean"]]).astype(np.float32)
        return {
            "features": features.log_mel(noisy),
            "y": labels[..., None],
            "noise_type": s["noise_type"],
            "snr": s["snr"],
        }

    def _batch(self, x, data, idx) -> Batch:
        mask = np.ones(x.shape[:2], dtype=bool)
        return Batch(x, data["y"][idx], mask, {"noise_type": data["noise_type"][idx], "snr": data["snr"][idx]})

    def metrics(self, outputs: np.ndarray, batch: Batch) -> dict[str, float]:
        pred = np.asarray(outputs)[..., 0] >= 0.5
        truth = batch.y[..., 0] >= 0.5

        def scores(clips: np.ndarray) -> tuple[float, float]:
            p, t = pred[clips], truth[clips]
            tp = float(np.sum(p & t))
            f1 = 2 * tp / max(float(np.sum(p) + np.sum(t)), 1.0)
            return float(np.mean(p == t)), f1

        everything = np.ones(len(batch), dtype=bool)
        accuracy, f1 = scores(everything)
        out = {"accuracy": accuracy, "f1": f1, "always_speech_accuracy": float(truth.mean())}
        for group, clips in self._groups(batch).items():
            out[f"accuracy_{group}"], out[f"f1_{group}"] = scores(clips)
        return out


class DenoiseTask(_StreamTask):
    """RNNoise-style band gains: per 8 ms frame, 20 log band energies in, 20 gains in [0, 1] out (MSE).

    Target g_b = clip(sqrt(E_clean_b / E_noisy_b), 0, 1). Metrics: ``snr_improvement_db`` (primary:
    mean over clips of SNR(clean, re-synthesised) − SNR(clean, noisy)), ``gain_mse``, the same for
    the oracle gains (``oracle_snr_improvement_db``) and identity gains (``identity_gain_mse``; its
    SNR improvement is 0 dB because the STFT reconstructs exactly), and ``snr_improvement_db_<group>``.
    ``Batch.extra`` carries the clean and noisy int16 audio the metric needs.
    """

    name = "denoise"
    output_size = features.BAND_COUNT
    loss_kind = "mse"
    primary_metric = "snr_improvement_db"
    feature_count = features.BAND_COUNT

    def _generate(self, split: str) -> dict[str, np.ndarray]:
        s = self._streams(split)
        noisy = noisy_int16(s["clean"], s["noise"])
        noisy_spec, clean_spec = features.stft(noisy), features.stft(s["clean"])
        return {
            "features": features.log_bands(noisy_spec),
            "y": features.ideal_gains(clean_spec, noisy_spec),
            "clean": s["clean"],
            "noisy": noisy,
            "noise_type": s["noise_type"],
            "snr": s["snr"],
        }

    def _batch(self, x, data, idx) -> Batch:
        mask = np.ones(x.shape[:2], dtype=bool)
        extra = {k: data[k][idx] for k in ("clean", "noisy", "noise_type", "snr")}
        return Batch(x, data["y"][idx], mask, extra)

    def metrics(self, outputs: np.ndarray, batch: Batch) -> dict[str, float]:
        if "clean" not in batch.extra:
            raise UserError("denoise metrics need whole clips (a val or test batch), not cropped train windows")
        gains = np.clip(np.asarray(outputs, np.float64), 0.0, 1.0)
        clean = features.to_float(batch.extra["clean"])
        noisy = features.to_float(batch.extra["noisy"])
        spec = features.stft(noisy)
        n = clean.shape[-1]
        before = features.snr_db(clean, noisy)
        improvement = features.snr_db(clean, features.apply_gains(spec, gains, n)) - before
        oracle = features.snr_db(clean, features.apply_gains(spec, batch.y, n)) - before
        out = {
            "snr_improvement_db": float(improvement.mean()),
            "gain_mse": float(np.mean((gains - batch.y) ** 2)),
            "oracle_snr_improvement_db": float(oracle.mean()),
            "identity_gain_mse": float(np.mean((1.0 - batch.y) ** 2)),
            "input_snr_db": float(before.mean()),
        }
        for group, clips in self._groups(batch).items():
            out[f"snr_improvement_db_{group}"] = float(improvement[clips].mean())
        return out


class KwsTask(AudioTask):
    """Keyword spotting: 1 s clips (98 frames of 40 log-mel energies) -> 12 logits (CE) at the end.

    Words: zero … nine, yes, no (balanced). The test split uses voices never heard in training.
    Metrics: ``accuracy`` (primary) and ``accuracy_<group>`` per noise type ("clean": no noise) and SNR band.
    """

    name = "kws"
    output_size = len(KEYWORDS)
    readout_mode = "final"
    readout_activation = "linear"
    loss_kind = "ce"
    primary_metric = "accuracy"
    feature_count = features.MEL_BANDS

    def __init__(self, *, p_noise: float, **common):
        self.p_noise = _number("p_noise", p_noise, 0.0, 1.0)
        super().__init__(**common)

    def _task_params(self) -> dict:
        return {"p_noise": self.p_noise}

    def _generate(self, split: str) -> dict[str, np.ndarray]:
        spec = KeywordSpec(
            seed=self.seed,
            snr_low=self.snr_low,
            snr_high=self.snr_high,
            p_noise=self.p_noise,
            p_reverb=self.p_reverb,
            bank_seconds=self.bank_seconds,
            noise_types=self.noise_types,
        )
        k = load_keywords(spec, split, self.sizes[split], workers=self.workers, progress=self.progress)
        return {
            "features": features.log_mel(k["audio"]),
            "y": k["label"],
            "noise_type": k["noise_type"],
            "snr": k["snr"],
        }

    def _batch(self, x, data, idx) -> Batch:
        return Batch(x, data["y"][idx], None, {"noise_type": data["noise_type"][idx], "snr": data["snr"][idx]})

    def metrics(self, outputs: np.ndarray, batch: Batch) -> dict[str, float]:
        correct = np.asarray(outputs).argmax(axis=-1) == batch.y
        out = {"accuracy": float(correct.mean())}
        for group, clips in self._groups(batch).items():
            out[f"accuracy_{group}"] = float(correct[clips].mean())
        return out


_COMMON_DEFAULTS = dict(
    seed=0,
    snr_low=-5.0,
    snr_high=20.0,
    p_reverb=0.3,
    bank_seconds=30.0,
    feature_mean=None,
    feature_std=None,
    workers=2,
    progress=None,
)


def make_vad_task(**params) -> VadTask:
    """VAD; defaults: 200 train / 30 val / 60 test streams of 4 s (generated in ~10 s, cached)."""
    return VadTask(
        **{
            **_COMMON_DEFAULTS,
            "train_clips": 200,
            "val_clips": 30,
            "test_clips": 60,
            "seconds": 4.0,
            "train_frames": 0,
            **params,
        }
    )


def make_denoise_task(**params) -> DenoiseTask:
    """Denoising gains; defaults: 400 train / 30 val / 60 test streams of 4 s."""
    return DenoiseTask(
        **{
            **_COMMON_DEFAULTS,
            "train_clips": 400,
            "val_clips": 30,
            "test_clips": 60,
            "seconds": 4.0,
            "train_frames": 0,
            **params,
        }
    )


def make_kws_task(**params) -> KwsTask:
    """Keyword spotting; defaults: 2400 train / 240 val / 600 test clips (p_noise 0.8)."""
    return KwsTask(
        **{**_COMMON_DEFAULTS, "train_clips": 2400, "val_clips": 240, "test_clips": 600, "p_noise": 0.8, **params}
    )
