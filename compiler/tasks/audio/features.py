"""Front ends, defined exactly so that a C front end can match them (docs/audio-tasks.md §Features).

Input everywhere: int16 samples at 16 kHz, read as ``x = int16 / 32768``.

Log-mel (VAD, KWS), one frame per 10 ms:
  frame t = x[160 t : 160 t + 400], t = 0 .. 1 + (n - 400) // 160 - 1 (no padding);
  window w[i] = 0.5 - 0.5 cos(2π i / 400) (periodic Hann); P = |rfft(frame · w, 512)|² (257 bins);
  E_m = Σ_k M[m, k] P[k] with 40 triangular HTK-mel filters (peak 1) between 20 Hz and 8 kHz;
  feature = ln(E_m + 1e-8).
Band energies (denoising), one frame per 8 ms:
  xp = 128 zeros, x, zeros; frame t = xp[128 t : 128 t + 256], t = 0 .. ceil(n / 128);
  window w[i] = sin(π i / 256) (square root of the periodic Hann: w² overlap-adds to 1 at hop 128);
  X = rfft(frame · w, 256) (129 bins); E_b = Σ_k B[b, k] |X[k]|² with 20 triangular bands whose
  centres are mel-spaced from 0 Hz to 8 kHz and whose weights sum to 1 in every bin;
  feature = ln(E_b + 1e-8).  Re-synthesis: Y[k] = X[k] Σ_b B[b, k] g_b, y = overlap-add of
  irfft(Y) · w, then drop the first 128 samples.
The model sees each feature standardised per band with the train split's mean and standard
deviation (stored in the task config).
"""

from __future__ import annotations

import functools

import numpy as np

from stapes.tasks.audio.engine import SAMPLE_RATE

LOG_OFFSET = 1e-8

MEL_WINDOW, MEL_HOP, MEL_FFT, MEL_BANDS, MEL_FMIN, MEL_FMAX = 400, 160, 512, 40, 20.0, 8000.0
BAND_FRAME, BAND_HOP, BAND_COUNT = 256, 128, 20
GAIN_EPS = 1e-12


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


@functools.cache
def mel_filterbank() -> np.ndarray:
    """(40, 257) triangular filters: band m rises from edge m to edge m+1 and falls to edge m+2."""
    edges = mel_to_hz(np.linspace(hz_to_mel(MEL_FMIN), hz_to_mel(MEL_FMAX), MEL_BANDS + 2))
    freqs = np.arange(MEL_FFT // 2 + 1) * SAMPLE_RATE / MEL_FFT
    lo, centre, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lo) / (centre - lo)
    falling = (hi - freqs) / (hi - centre)
    return np.clip(np.minimum(rising, falling), 0.0, None)


@functools.cache
def band_matrix() -> np.ndarray:
    """(20, 129) interpolation weights: bin k between centres c_b <= k <= c_{b+1} is shared linearly.

    Centres c_b = mel-spaced from 0 Hz (bin 0) to 8 kHz (bin 128); every column sums to 1, so
    the same matrix maps bin energies to bands and band gains back to bins.
    """
    bins = BAND_FRAME // 2 + 1
    centres = mel_to_hz(np.linspace(0.0, hz_to_mel(SAMPLE_RATE / 2), BAND_COUNT)) * BAND_FRAME / SAMPLE_RATE
    k = np.arange(bins, dtype=np.float64)
    weights = np.zeros((BAND_COUNT, bins))
    for b in range(BAND_COUNT):
        if b > 0:
            left = (k - centres[b - 1]) / (centres[b] - centres[b - 1])
            weights[b] = np.where((k >= centres[b - 1]) & (k <= centres[b]), left, weights[b])
        if b < BAND_COUNT - 1:
            right = (centres[b + 1] - k) / (centres[b + 1] - centres[b])
            weights[b] = np.where((k >= centres[b]) & (k <= centres[b + 1]), right, weights[b])
    return weights


def to_float(audio: np.ndarray) -> np.ndarray:
    """int16 -> float64 in [-1, 1)."""
    return np.asarray(audio, np.float64) / 32768.0


def _frames(x: np.ndarray, length: int, hop: int) -> np.ndarray:
    """(..., n) -> (..., T, length) with T = 1 + (n - length) // hop (a view)."""
    count = 1 + (x.shape[-1] - length) // hop
    windows = np.lib.stride_tricks.sliding_window_view(x, length, axis=-1)
    return windows[..., : count * hop : hop, :]


def mel_frame_count(samples: int) -> int:
    return 1 + (samples - MEL_WINDOW) // MEL_HOP


def log_mel(audio: np.ndarray) -> np.ndarray:
    """int16 (..., n) -> float32 (..., T, 40) log-mel energies every 10 ms (see the module doc)."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(MEL_WINDOW) / MEL_WINDOW)
    power = np.abs(np.fft.rfft(_frames(to_float(audio), MEL_WINDOW, MEL_HOP) * window, MEL_FFT)) ** 2
    return np.log(power @ mel_filterbank().T + LOG_OFFSET).astype(np.float32)


def frame_energy_db(audio: np.ndarray) -> np.ndarray:
    """(n,) -> (T,) mean square of each unwindowed 10 ms log-mel frame, in dB."""
    frames = _frames(to_float(audio), MEL_WINDOW, MEL_HOP)
    return 10.0 * np.log10(np.mean(frames**2, axis=-1) + 1e-12)


def _synthesis_window() -> np.ndarray:
    return np.sin(np.pi * np.arange(BAND_FRAME) / BAND_FRAME)


def band_frame_count(samples: int) -> int:
    return -(-samples // BAND_HOP) + 1


def stft(audio_or_float: np.ndarray) -> np.ndarray:
    """(..., n) samples (int16 or float) -> complex (..., T, 129), T = ceil(n / 128) + 1."""
    x = np.asarray(audio_or_float)
    x = to_float(x) if x.dtype == np.int16 else x.astype(np.float64)
    n = x.shape[-1]
    count = band_frame_count(n)
    pad = [(0, 0)] * (x.ndim - 1) + [(BAND_HOP, count * BAND_HOP - n)]
    xp = np.pad(x, pad)
    return np.fft.rfft(_frames(xp, BAND_FRAME, BAND_HOP) * _synthesis_window(), BAND_FRAME)


def istft(spectrum: np.ndarray, samples: int) -> np.ndarray:
    """complex (..., T, 129) -> float64 (..., samples): windowed overlap-add, inverse of stft()."""
    frames = np.fft.irfft(spectrum, BAND_FRAME) * _synthesis_window()
    count = frames.shape[-2]
    out = np.zeros(frames.shape[:-2] + ((count + 1) * BAND_HOP,))
    for half in range(2):  # each output hop gets the second half of frame t-1 and the first of frame t
        chunk = frames[..., half * BAND_HOP : (half + 1) * BAND_HOP]
        out[..., half * BAND_HOP : half * BAND_HOP + count * BAND_HOP] += chunk.reshape(chunk.shape[:-2] + (-1,))
    return out[..., BAND_HOP : BAND_HOP + samples]


def band_energies(spectrum: np.ndarray) -> np.ndarray:
    """complex (..., T, 129) -> (..., T, 20)."""
    return (np.abs(spectrum) ** 2) @ band_matrix().T


def log_bands(spectrum: np.ndarray) -> np.ndarray:
    return np.log(band_energies(spectrum) + LOG_OFFSET).astype(np.float32)


def ideal_gains(clean_spectrum: np.ndarray, noisy_spectrum: np.ndarray) -> np.ndarray:
    """g_b = clip(sqrt(E_clean_b / E_noisy_b), 0, 1) per frame and band, float32."""
    ratio = band_energies(clean_spectrum) / (band_energies(noisy_spectrum) + GAIN_EPS)
    return np.clip(np.sqrt(ratio), 0.0, 1.0).astype(np.float32)


def apply_gains(noisy_spectrum: np.ndarray, gains: np.ndarray, samples: int) -> np.ndarray:
    """Spread band gains (..., T, 20) to bins with the band matrix, filter, re-synthesise."""
    return istft(noisy_spectrum * (np.asarray(gains, np.float64) @ band_matrix()), samples)


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """10 log10(Σ ref² / Σ (ref - est)²) over the last axis."""
    err = np.sum((reference - estimate) ** 2, axis=-1)
    return 10.0 * np.log10(np.sum(reference**2, axis=-1) / np.maximum(err, 1e-20))
