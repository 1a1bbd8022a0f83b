"""Audio front ends and signal helpers: exact properties that need no speech engine."""

import numpy as np
import pytest

from stapes.tasks.audio import dsp, features
from stapes.tasks.audio.generate import noisy_int16, vad_labels
from stapes.tasks.audio.wav import parse_wav


def _tone(freq: float, seconds: float = 0.5, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return dsp.to_int16(level * np.sin(2 * np.pi * freq * t))


def test_stft_then_istft_reconstructs_exactly():
    x = np.random.default_rng(0).integers(-20000, 20000, size=(2, 3001)).astype(np.int16)
    spec = features.stft(x)
    assert spec.shape == (2, features.band_frame_count(3001), 129)
    np.testing.assert_allclose(features.istft(spec, 3001), features.to_float(x), atol=1e-12)


def test_band_matrix_is_a_partition_of_unity_with_no_empty_band():
    bands = features.band_matrix()
    assert bands.shape == (20, 129)
    np.testing.assert_allclose(bands.sum(axis=0), 1.0, atol=1e-12)
    assert np.all(bands.sum(axis=1) > 0.5)
    # DC only in band 0, Nyquist only in band 19
    assert bands[0, 0] == pytest.approx(1.0) and bands[-1, -1] == pytest.approx(1.0)


def test_mel_filterbank_peaks_in_order():
    mel = features.mel_filterbank()
    assert mel.shape == (40, 257)
    assert np.all(np.diff(mel.argmax(axis=1)) >= 0)
    assert np.all(mel.max(axis=1) > 0.5)


def test_log_mel_frames_and_tone_location():
    low, high = features.log_mel(_tone(300.0)), features.log_mel(_tone(3000.0))
    assert low.shape == (features.mel_frame_count(8000), 40) and low.dtype == np.float32
    assert low.mean(axis=0).argmax() < high.mean(axis=0).argmax()
    silent = features.log_mel(np.zeros(800, np.int16))
    np.testing.assert_allclose(silent, np.log(features.LOG_OFFSET), rtol=1e-6)


def test_ideal_gains_are_one_without_noise_and_oracle_improves_snr():
    rng = np.random.default_rng(1)
    clean = _tone(500.0, seconds=1.0, level=0.2)
    clean_spec = features.stft(clean)
    np.testing.assert_allclose(features.ideal_gains(clean_spec, clean_spec)[2:-2], 1.0, atol=1e-3)
    noise = dsp.to_int16(0.05 * rng.standard_normal(clean.shape))
    noisy = noisy_int16(clean, noise)
    noisy_spec = features.stft(noisy)
    gains = features.ideal_gains(clean_spec, noisy_spec)
    assert gains.min() >= 0.0 and gains.max() <= 1.0
    ref, noisy_f = features.to_float(clean), features.to_float(noisy)
    before = features.snr_db(ref, noisy_f)
    after = features.snr_db(ref, features.apply_gains(noisy_spec, gains, len(clean)))
    identity = features.snr_db(ref, features.apply_gains(noisy_spec, np.ones_like(gains), len(clean)))
    assert after > before + 6.0
    assert identity == pytest.approx(before, abs=1e-6)


def test_vad_labels_close_short_gaps_only():
    x = np.zeros(16000, np.float32)
    x[1600:4800] = 0.3  # speech, 0.2 s
    x[5200:8000] = 0.3  # after a 25 ms pause: closed
    x[12000:14000] = 0.3  # after a 250 ms pause: kept open
    labels = vad_labels(dsp.to_int16(x))

    def centre(sample):  # the frame whose window is centred near `sample`
        return (sample - 200) // 160

    assert labels[centre(3000)] == 1 and labels[centre(5000)] == 1 and labels[centre(6000)] == 1
    assert labels[centre(10000)] == 0 and labels[centre(13000)] == 1
    assert labels[0] == 0 and labels[-1] == 0


def test_dsp_helpers():
    rng = np.random.default_rng(2)
    assert dsp.to_int16(np.array([1.5, -1.5, 0.5])).tolist() == [32767, -32768, 16384]
    assert dsp.trim(np.array([0.0, 0.0001, 0.5, 0.2, 0.0], np.float32)).tolist() == pytest.approx([0.5, 0.2])
    clean = rng.standard_normal(4000).astype(np.float32)
    noise = dsp.scale_noise_to_snr(clean, rng.standard_normal(4000).astype(np.float32), 10.0)
    assert 20 * np.log10(dsp.rms(clean) / dsp.rms(noise)) == pytest.approx(10.0, abs=1e-4)
    h = dsp.room_impulse_response(rng, 0.3)
    assert np.sum(h.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-5)


def _wav(samples: np.ndarray, rate: int, bits: int, declared: int | None = None) -> bytes:
    data = samples.tobytes()
    fmt = (
        b"fmt "
        + (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little")
        + (1).to_bytes(2, "little")
        + rate.to_bytes(4, "little")
        + (rate * bits // 8).to_bytes(4, "little")
        + (bits // 8).to_bytes(2, "little")
        + bits.to_bytes(2, "little")
    )
    size = len(data) if declared is None else declared
    return (
        b"RIFF" + (36 + len(data)).to_bytes(4, "little") + b"WAVE" + fmt + b"data" + size.to_bytes(4, "little") + data
    )


def test_parse_wav_16_and_8_bit_and_placeholder_length():
    pcm = np.array([0, 16384, -32768, 32767], "<i2")
    x, rate = parse_wav(_wav(pcm, 22050, 16, declared=0x7FFFFFFF))  # espeak-ng's placeholder length
    assert rate == 22050 and x.tolist() == pytest.approx([0, 0.5, -1, 32767 / 32768])
    x8, _ = parse_wav(_wav(np.array([128, 255, 0], np.uint8), 8000, 8))
    assert x8.tolist() == pytest.approx([0, 127 / 128, -1])
    with pytest.raises(ValueError):
        parse_wav(b"not a wave file")
