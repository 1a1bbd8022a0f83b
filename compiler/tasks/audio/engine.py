"""The speech engine: espeak-ng, as the Debian/Ubuntu program or as the pip-only library.

1. The ``espeak-ng`` program (``apt-get install espeak-ng``), one subprocess per utterance:
   every utterance is deterministic on its own. ``STAPES_ESPEAK_NG`` names another program or path.
2. Else the ``espeakng-loader`` wheel (``pip install espeakng-loader``: libespeak-ng through
   ctypes, each utterance in a forked child; see espeak_library.py).

``STAPES_SPEECH_ENGINE`` = ``program`` | ``library`` forces one route (default: the first available).
The engine's version string is part of every cache key: audio is bit-identical only for the same
engine build (Debian bookworm's program is 1.51, the wheel's library 1.52). flite is not used
(``p_flite = 0``); the voices are espeak-ng's.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
import scipy.signal as ss

from stapes.errors import UserError
from stapes.tasks.audio import espeak_library
from stapes.tasks.audio.wav import parse_wav

SAMPLE_RATE = 16000
INSTALL_HINT = (
    "the audio tasks need the espeak-ng speech engine: install it with "
    "`apt-get install espeak-ng` (Debian/Ubuntu) or `pip install espeakng-loader`"
)
ROUTES = ("program", "library")


def espeak_program() -> str | None:
    """The path of the espeak-ng program, or None when it is absent."""
    return shutil.which(os.environ.get("STAPES_ESPEAK_NG", "espeak-ng"))


def engine_route() -> str | None:
    """ "program", "library" or None (no engine here), honouring STAPES_SPEECH_ENGINE."""
    forced = os.environ.get("STAPES_SPEECH_ENGINE", "")
    if forced and forced not in ROUTES:
        raise UserError(f"STAPES_SPEECH_ENGINE must be one of {', '.join(ROUTES)}, got {forced!r}")
    if forced != "library" and espeak_program() is not None:
        return "program"
    if forced != "program" and espeak_library.available():
        return "library"
    return None


def require_engine() -> str:
    """The route in use; a UserError that says how to install an engine when there is none."""
    route = engine_route()
    if route is None:
        raise UserError(INSTALL_HINT)
    return route


@functools.cache
def _program_version(prog: str) -> str:
    try:
        out = subprocess.run([prog, "--version"], capture_output=True, text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise UserError(f"espeak-ng at {prog} does not run ({exc}); {INSTALL_HINT}") from None
    # "eSpeak NG text-to-speech: 1.51  Data at: /usr/lib/..." -> keep the version part only,
    # so the cache key does not depend on where the data lives.
    return out.stdout.split("Data at:")[0].strip()


def engine_version() -> str:
    """e.g. ``"eSpeak NG text-to-speech: 1.51"`` or ``"libespeak-ng 1.52… (espeakng-loader 0.2.4)"``."""
    if require_engine() == "program":
        return _program_version(espeak_program())
    return espeak_library.version()


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
    if require_engine() == "library":
        pcm, rate = espeak_library.synthesize(
            text, voice.accent, voice.variant, voice.speed, voice.pitch, voice.amplitude
        )
        return resample_to_16k(pcm.astype(np.float32) / 32768.0, rate)
    cmd = [
        espeak_program(),
        "-v",
        f"{voice.accent}+{voice.variant}",
        "-s",
        str(voice.speed),
        "-p",
        str(voice.pitch),
        "-a",
        str(voice.amplitude),
        "--stdout",
        text,
    ]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    return resample_to_16k(*parse_wav(out))
