"""Seeded generators of speech streams (VAD, denoising) and keyword clips, in parallel, cached on disk.

Every item has its own generator ``default_rng([seed, split, index])``, so an item does not
depend on the number of workers or on the other items: one worker and two give the same bytes.
Noise comes from a bank per (seed, speaker pool) built once in the parent process.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from stapes.tasks.audio import cache, dsp, noise
from stapes.tasks.audio.engine import SAMPLE_RATE, say
from stapes.tasks.audio.features import frame_energy_db
from stapes.tasks.audio.speech import KEYWORDS, random_utterance, random_voice, split_index

GENERATOR_VERSION = 1


@dataclass(frozen=True)
class StreamSpec:
    """Streams of one voice's utterances and pauses, plus noise kept apart (noisy = clean + noise)."""

    seed: int = 0
    seconds: float = 4.0
    snr_low: float = -5.0
    snr_high: float = 20.0
    p_reverb: float = 0.3
    bank_seconds: float = 30.0
    noise_types: tuple[str, ...] = noise.SYNTHETIC_TYPES


@dataclass(frozen=True)
class KeywordSpec:
    """1 s clips of one of the 12 keywords (label = index % 12), noise with probability p_noise."""

    seed: int = 0
    snr_low: float = -5.0
    snr_high: float = 20.0
    p_noise: float = 0.8
    p_reverb: float = 0.3
    bank_seconds: float = 30.0
    noise_types: tuple[str, ...] = noise.SYNTHETIC_TYPES


def _bank_split(split: str) -> str:
    """Validation shares the train speaker pool and recordings (unseen clips of seen voices)."""
    return "test" if split == "test" else "train"


_BANK: dict[str, np.ndarray] = {}


def _install_bank(bank: dict[str, np.ndarray]) -> None:
    global _BANK
    _BANK = bank


def _place_speech(
    rng: np.random.Generator, x: np.ndarray, level_db: tuple[float, float], p_reverb: float
) -> np.ndarray:
    """Room (with probability p_reverb), microphone band limit (p = 0.5), level in dBFS."""
    if rng.random() < p_reverb:
        x = dsp.reverberate(rng, x)
    if rng.random() < 0.5:
        x = dsp.microphone(rng, x)
    return (x * 10 ** (rng.uniform(*level_db) / 20) / dsp.rms(x)).astype(np.float32)


def make_stream(spec: StreamSpec, split: str, index: int) -> tuple[np.ndarray, np.ndarray, int, float]:
    """(clean int16 (n,), noise int16 (n,), noise type index, SNR dB) for one stream."""
    rng = np.random.default_rng([spec.seed, split_index(split), index])
    n = int(round(spec.seconds * SAMPLE_RATE))
    clean = np.zeros(n, np.float32)
    voice = random_voice(rng, split)
    pos = int(rng.uniform(0.0, 1.0) * SAMPLE_RATE)
    while pos < n - SAMPLE_RATE // 4:
        x = dsp.trim(say(random_utterance(rng), voice))
        x = x * 10 ** (rng.uniform(-6, 6) / 20) / dsp.rms(x)
        m = min(len(x), n - pos)
        clean[pos : pos + m] += x[:m]
        pos += m + int(rng.uniform(0.15, 1.5) * SAMPLE_RATE)
    clean = _place_speech(rng, clean, (-32.0, -20.0), spec.p_reverb)
    kind, nz = noise.cut(rng, _BANK, n)
    if rng.random() < 0.3:
        nz = nz * dsp.slow_modulation(rng, n)
    snr = float(rng.uniform(spec.snr_low, spec.snr_high))
    return dsp.to_int16(clean), dsp.to_int16(dsp.scale_noise_to_snr(clean, nz, snr)), kind, snr


def make_keyword(spec: KeywordSpec, split: str, index: int) -> tuple[np.ndarray, int, int, float]:
    """(audio int16 (16000,), label, noise type index or -1, SNR dB or NaN) for one clip."""
    rng = np.random.default_rng([spec.seed, split_index(split), index])
    label = index % len(KEYWORDS)
    x = dsp.trim(say(KEYWORDS[label], random_voice(rng, split)))[:SAMPLE_RATE]
    clip = np.zeros(SAMPLE_RATE, np.float32)
    start = int(rng.integers(0, SAMPLE_RATE - len(x) + 1))
    clip[start : start + len(x)] = x
    clip = _place_speech(rng, clip, (-35.0, -15.0), spec.p_reverb)
    kind, snr = -1, float("nan")
    if rng.random() < spec.p_noise:
        kind, nz = noise.cut(rng, _BANK, SAMPLE_RATE)
        snr = float(rng.uniform(spec.snr_low, spec.snr_high))
        clip = clip + dsp.scale_noise_to_snr(clip, nz, snr)
    return dsp.to_int16(clip), label, kind, snr


def _stream_job(args):
    return make_stream(*args)


def _keyword_job(args):
    return make_keyword(*args)


def _run_parallel(job, args: list, bank: dict, workers: int, desc: str, progress: bool) -> list:
    bar = dict(total=len(args), desc=desc, unit="clip", disable=not progress, leave=False)
    if workers <= 1 or len(args) < 8:
        _install_bank(bank)
        return [job(a) for a in tqdm(args, **bar)]
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with ctx.Pool(workers, initializer=_install_bank, initargs=(bank,)) as pool:
        return list(tqdm(pool.imap(job, args, chunksize=4), **bar))


def noisy_int16(clean: np.ndarray, noise_part: np.ndarray) -> np.ndarray:
    """What the microphone delivers: clean + noise, saturated to int16."""
    return np.clip(clean.astype(np.int32) + noise_part, -32768, 32767).astype(np.int16)


def vad_labels(clean: np.ndarray, relative_db: float = -40.0, max_gap: int = 5) -> np.ndarray:
    """int8 (T,) per 10 ms log-mel frame: 1 where the clean frame's energy is above the clip's
    loudest frame + relative_db; pauses of at most max_gap frames between speech are closed."""
    energy = frame_energy_db(clean)
    speech = (energy > energy.max() + relative_db).astype(np.int8)
    idx = np.flatnonzero(speech)
    if len(idx):
        gaps = np.flatnonzero((np.diff(idx) > 1) & (np.diff(idx) <= max_gap + 1))
        for g in gaps:
            speech[idx[g] + 1 : idx[g + 1]] = 1
    return speech


def _load(
    kind: str,
    job,
    spec,
    split: str,
    count: int,
    columns: tuple[tuple[str, type], ...],
    workers: int,
    use_cache: bool,
    progress: bool,
) -> dict[str, np.ndarray]:
    """Items 0..count-1 of `split` from the cache, or generated in parallel and stored; the j-th
    field of every item becomes the array named columns[j][0]."""
    key = dict(kind=kind, version=GENERATOR_VERSION, spec=asdict(spec), split=split, count=count)

    def build() -> dict[str, np.ndarray]:
        bank = noise.make_noise_bank(spec.seed, _bank_split(split), spec.bank_seconds, spec.noise_types)
        items = _run_parallel(job, [(spec, split, i) for i in range(count)], bank, workers, f"{kind}/{split}", progress)
        return {name: np.array([item[j] for item in items], dtype) for j, (name, dtype) in enumerate(columns)}

    return cache.cached_arrays(key, build, use_cache)


def load_streams(
    spec: StreamSpec, split: str, count: int, *, workers: int = 2, use_cache: bool = True, progress: bool = True
) -> dict[str, np.ndarray]:
    """`count` streams of `split`: clean, noise (int16 (count, n)), noise_type (int8), snr (float32)."""
    columns = (("clean", np.int16), ("noise", np.int16), ("noise_type", np.int8), ("snr", np.float32))
    return _load("streams", _stream_job, spec, split, count, columns, workers, use_cache, progress)


def load_keywords(
    spec: KeywordSpec, split: str, count: int, *, workers: int = 2, use_cache: bool = True, progress: bool = True
) -> dict[str, np.ndarray]:
    """`count` keyword clips of `split`: audio int16 (count, 16000), label int64, noise_type int8, snr."""
    columns = (("audio", np.int16), ("label", np.int64), ("noise_type", np.int8), ("snr", np.float32))
    return _load("keywords", _keyword_job, spec, split, count, columns, workers, use_cache, progress)
