"""Signal helpers for the generators: levels, trimming, rooms, microphones, mixing (numpy/scipy)."""

from __future__ import annotations

import numpy as np
import scipy.signal as ss

from stapes.tasks.audio.engine import SAMPLE_RATE


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2) + 1e-12))


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1) -> int16 (round to nearest, saturate)."""
    return np.clip(np.round(np.asarray(x, np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def trim(x: np.ndarray, threshold_db: float = -40.0) -> np.ndarray:
    """Cut leading and trailing samples quieter than `threshold_db` below the peak."""
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak <= 0.0:
        return x
    loud = np.flatnonzero(np.abs(x) > peak * 10 ** (threshold_db / 20))
    return x[loud[0] : loud[-1] + 1]


def room_impulse_response(rng: np.random.Generator, rt60: float) -> np.ndarray:
    """A cheap room: a direct path after 0-39 samples plus an exponentially decaying noise tail.

    The tail decays by 60 dB in `rt60` seconds; the direct path's weight varies the
    direct-to-reverberant ratio. Unit energy.
    """
    n = int(SAMPLE_RATE * min(1.0, 1.2 * rt60))
    t = np.arange(n) / SAMPLE_RATE
    h = rng.standard_normal(n) * np.exp(-np.log(1000.0) * t / rt60)
    delay = int(rng.integers(0, 40))
    h[:delay] = 0.0
    h[delay] = 1.0 / rng.uniform(0.3, 1.0)
    return (h / np.sqrt(np.sum(h**2))).astype(np.float32)


def reverberate(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    h = room_impulse_response(rng, rt60=float(rng.uniform(0.15, 0.8)))
    return ss.fftconvolve(x, h)[: len(x)].astype(np.float32)


def microphone(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """A random receiver band limit: 2nd-order Butterworth band-pass, 80-300 Hz to 3.5-7.5 kHz."""
    band = [rng.uniform(80.0, 300.0), rng.uniform(3500.0, 7500.0)]
    sos = ss.butter(2, band, "bandpass", fs=SAMPLE_RATE, output="sos")
    return ss.sosfilt(sos, x).astype(np.float32)


def scale_noise_to_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`noise` scaled so that rms(clean) / rms(noise) is `snr_db` over the whole clip."""
    return (noise * (rms(clean) / (rms(noise) * 10 ** (snr_db / 20)))).astype(np.float32)


def slow_modulation(rng: np.random.Generator, n: int) -> np.ndarray:
    """An amplitude envelope 1 + 0.8 sin(2π f t), f in 0.1-2 Hz (makes stationary noise non-stationary)."""
    t = np.arange(n) / SAMPLE_RATE
    return (1.0 + 0.8 * np.sin(2 * np.pi * rng.uniform(0.1, 2.0) * t + rng.uniform(0, 2 * np.pi))).astype(np.float32)
