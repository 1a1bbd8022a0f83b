"""The speech engine: the Debian/Ubuntu ``espeak-ng`` program, run as one subprocess per utterance.

One subprocess per utterance keeps every item deterministic on its own (the in-process library
keeps synthesizer state between calls, so its output depends on the call order). The engine's
version string is part of every cache key: audio is bit-identical only for the same build.

``STAPES_ESPEAK_NG`` overrides the program (a name on PATH or a path), e.g. to test the
engine-missing path. flite is not used (``p_flite = 0``); the voices are espeak-ng's.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
import scipy.signal as ss

from ..errors import UserError
from .wav import parse_wav

SAMPLE_RATE = 16000
INSTALL_HINT = ("the audio tasks need the espeak-ng speech engine: install it with "
                "`apt-get install espeak-ng` (Debian/Ubuntu) or put an espeak-ng program on PATH "
                "(or point STAPES_ESPEAK_NG at it)")


def espeak_program() -> str | None:
    """The path of the espeak-ng program, or None when it is absent."""
    return shutil.which(os.environ.get("STAPES_ESPEAK_NG", "espeak-ng"))


def require_engine() -> str:
    """The espeak-ng path; a UserError that says how to install it when it is absent."""
    prog = espeak_program()
    if prog is None:
        raise UserError(INSTALL_HINT)
    return prog


@functools.lru_cache(maxsize=None)
def _version_of(prog: str) -> str:
    try:
        out = subprocess.run([prog, "--version"], capture_output=True, text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise UserError(f"espeak-ng at {prog} does not run ({exc}); {INSTALL_HINT}") from None
    # "eSpeak NG text-to-speech: 1.51  Data at: /usr/lib/..." -> keep the version part only,
    # so the cache key does not depend on where the data lives.
    return out.stdout.split("Data at:")[0].strip()


def engine_version() -> str:
    """e.g. ``"eSpeak NG text-to-speech: 1.51"`` (part of every cache key)."""
    return _version_of(require_engine())


@dataclass(frozen=True)
class Voice:
    """One espeak-ng voice: accent (language id), variant, words per minute, pitch 0-99, amplitude."""

    accent: str
    variant: str
    speed: int
    pitch: int
    amplitude: int


def resample_to_16k(x: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return x.astype(np.float32)
    g = np.gcd(rate, SAMPLE_RATE)
    return ss.resample_poly(x, SAMPLE_RATE // g, rate // g).astype(np.float32)


def say(text: str, voice: Voice) -> np.ndarray:
    """Synthesize `text` with `voice`: float32 samples at 16 kHz (deterministic per call)."""
    cmd = [require_engine(), "-v", f"{voice.accent}+{voice.variant}", "-s", str(voice.speed),
           "-p", str(voice.pitch), "-a", str(voice.amplitude), "--stdout", text]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    return resample_to_16k(*parse_wav(out))
