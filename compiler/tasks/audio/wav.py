"""A minimal RIFF/WAVE reader for 8- and 16-bit PCM (espeak-ng's stdout and the OpenSFX catalogue)."""

from __future__ import annotations

import numpy as np


def parse_wav(buf: bytes) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1) and the sample rate of a PCM WAVE byte string.

    The data chunk's declared length is capped at the bytes present: espeak-ng's ``--stdout``
    declares a placeholder length. Raises ValueError for anything but 8/16-bit PCM.
    """
    fmt = buf.find(b"fmt ")
    data = buf.find(b"data")
    if buf[:4] != b"RIFF" or fmt < 0 or data < 0:
        raise ValueError("not a RIFF/WAVE stream")
    channels = int.from_bytes(buf[fmt + 10 : fmt + 12], "little")
    rate = int.from_bytes(buf[fmt + 12 : fmt + 16], "little")
    bits = int.from_bytes(buf[fmt + 22 : fmt + 24], "little")
    declared = int.from_bytes(buf[data + 4 : data + 8], "little")
    pcm = buf[data + 8 : data + 8 + declared]
    width = bits // 8
    if bits == 16:
        pcm = pcm[: len(pcm) // (width * channels) * width * channels]
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    elif bits == 8:
        pcm = pcm[: len(pcm) // channels * channels]
        x = (np.frombuffer(pcm, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    else:
        raise ValueError(f"unsupported WAVE sample width: {bits} bits")
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    return x, rate
