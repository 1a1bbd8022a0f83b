"""Six noise types: white, pink, brown, mains hum, babble (espeak-ng talkers), sfx (real recordings).

The real recordings are the OpenSFX set of Debian's ``openttd-opensfx`` package (73 sounds:
traffic, aircraft, wind, crowds, machinery, animals; CC0 / CC-BY-3.0 / CC-BY-SA-3.0, credit
"OpenSFX contributors"). Without the package the "sfx" type is left out (and the cache key says so).
Train/val and test use disjoint recordings, and babble uses the split's own voices.

A noise bank holds `seconds` of each type for one (seed, split); items cut random windows from it.
"""

from __future__ import annotations

import functools
import os
import struct

import numpy as np

from stapes.errors import UserError
from stapes.tasks.audio.dsp import rms
from stapes.tasks.audio.engine import SAMPLE_RATE, engine_version, resample_to_16k, say
from stapes.tasks.audio.speech import SENTENCES, random_voice, split_index
from stapes.tasks.audio.wav import parse_wav

OPENSFX_CATALOGUE = "/usr/share/games/openttd/baseset/opensfx/opensfx.cat"
SYNTHETIC_TYPES = ("white", "pink", "brown", "hum", "babble")


def opensfx_path() -> str | None:
    path = os.environ.get("STAPES_OPENSFX", OPENSFX_CATALOGUE)
    return path if os.path.isfile(path) else None


def check_noise_types(kinds) -> tuple[str, ...]:
    """`kinds` as a tuple of known noise types that can be generated here; a UserError names the
    first that cannot (the real recordings need openttd-opensfx), so a task's recorded data is
    rebuilt exactly or not at all."""
    if isinstance(kinds, str) or not isinstance(kinds, (list, tuple)) or not kinds:
        raise UserError(f"task parameter noise_types must be a non-empty list of noise types, got {kinds!r}")
    known = (*SYNTHETIC_TYPES, "sfx")
    for kind in kinds:
        if kind not in known:
            raise UserError(f"unknown noise type {kind!r} in noise_types: expected some of {', '.join(known)}")
    if len(set(kinds)) != len(kinds):
        raise UserError(f"noise_types lists a type twice: {list(kinds)}")
    if "sfx" in kinds and opensfx_path() is None:
        raise UserError(
            "this task's data uses the real noise recordings (noise type 'sfx'), which are not installed "
            "here: install them (apt-get install openttd-opensfx) or point STAPES_OPENSFX at opensfx.cat"
        )
    return tuple(kinds)


def noise_types() -> tuple[str, ...]:
    """The noise types available here: the five synthetic ones, plus "sfx" with openttd-opensfx."""
    return SYNTHETIC_TYPES + (("sfx",) if opensfx_path() else ())


@functools.lru_cache(maxsize=2)
def opensfx_recordings(path: str) -> tuple[tuple[str, np.ndarray], ...]:
    """(credit line, float32 16 kHz samples) for each PCM recording of an OpenTTD sound catalogue.

    The catalogue starts with a table of (offset, size) uint32 pairs; each entry is a one-byte
    length, a NUL-terminated description (title, author, licence) and a WAVE file.
    """
    with open(path, "rb") as f:
        blob = f.read()
    count = (struct.unpack_from("<I", blob, 0)[0] & 0x7FFFFFFF) // 8
    sounds = []
    for k in range(count):
        offset, size = struct.unpack_from("<II", blob, 8 * k)
        offset &= 0x7FFFFFFF
        name_len = blob[offset]
        credit = blob[offset + 1 : offset + 1 + name_len].rstrip(b"\0").decode("latin-1")
        try:
            x, rate = parse_wav(blob[offset + 1 + name_len : offset + size])
        except ValueError:
            continue
        if len(x) > rate // 10:
            sounds.append((credit, resample_to_16k(x, rate)))
    return tuple(sounds)


def _colored(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Gaussian noise with power spectrum ∝ 1/f^exponent (1: pink, 2: brown), unit variance."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    f[0] = f[1]
    y = np.fft.irfft(spectrum / f ** (exponent / 2), n)
    return y / (y.std() + 1e-12)


def _hum(rng: np.random.Generator, n: int) -> np.ndarray:
    """Mains hum (50 or 60 Hz) with 10 harmonics of random level and phase, plus a little white noise."""
    t = np.arange(n) / SAMPLE_RATE
    f0 = float(rng.choice([50.0, 60.0]))
    y = sum(
        rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) for k in range(1, 12)
    )
    return y + 0.05 * rng.standard_normal(n)


def _babble(rng: np.random.Generator, n: int, split: str, talkers: int = 6) -> np.ndarray:
    """The sum of `talkers` streams of random sentences, each by random voices of the split."""
    y = np.zeros(n, np.float64)
    for _ in range(talkers):
        parts, length = [], 0
        while length < n:
            u = say(str(rng.choice(SENTENCES)), random_voice(rng, split))
            parts.append(u / rms(u))
            length += len(u)
        stream = np.concatenate(parts)
        start = int(rng.integers(0, len(stream) - n + 1))
        y += stream[start : start + n]
    return y


def _recordings(rng: np.random.Generator, n: int, split: str) -> np.ndarray:
    """Random OpenSFX recordings (each at a random level ±6 dB) end to end; test uses every 4th sound."""
    sounds = [s for i, (_, s) in enumerate(opensfx_recordings(opensfx_path())) if (i % 4 == 0) == (split == "test")]
    parts, length = [], 0
    while length < n:
        s = sounds[int(rng.integers(len(sounds)))]
        parts.append(s / rms(s) * 10 ** (rng.uniform(-6, 6) / 20))
        length += len(s)
    stream = np.concatenate(parts)
    start = int(rng.integers(0, len(stream) - n + 1))
    return stream[start : start + n]


def make_noise_bank(seed: int, split: str, seconds: float, kinds: tuple[str, ...]) -> dict[str, np.ndarray]:
    """`seconds` of each noise type in `kinds` for (seed, split), unit variance, float32, read-only,
    in the order of `kinds` (a clip's noise type is its index there).

    Kept in memory (the last few banks, per engine and noise types): VAD, denoise and KWS sets
    of one seed share them."""
    return _noise_bank(seed, split, seconds, engine_version(), tuple(kinds))


@functools.lru_cache(maxsize=4)
def _noise_bank(seed: int, split: str, seconds: float, engine: str, kinds: tuple[str, ...]) -> dict[str, np.ndarray]:
    n = int(seconds * SAMPLE_RATE)
    bank = {}
    for k, kind in enumerate(kinds):
        rng = np.random.default_rng([seed, split_index(split), 1000 + k])
        if kind == "white":
            y = rng.standard_normal(n)
        elif kind in ("pink", "brown"):
            y = _colored(rng, n, 1.0 if kind == "pink" else 2.0)
        elif kind == "hum":
            y = _hum(rng, n)
        elif kind == "babble":
            y = _babble(rng, n, split)
        else:
            y = _recordings(rng, n, split)
        bank[kind] = (y / (np.std(y) + 1e-12)).astype(np.float32)
        bank[kind].setflags(write=False)
    return bank


def cut(rng: np.random.Generator, bank: dict[str, np.ndarray], n: int) -> tuple[int, np.ndarray]:
    """A random noise type (its index in the bank) and a random n-sample window of it."""
    kinds = tuple(bank)
    k = int(rng.integers(len(kinds)))
    source = bank[kinds[k]]
    start = int(rng.integers(0, len(source) - n + 1))
    return k, source[start : start + n].copy()
