"""The pip-only speech engine: libespeak-ng from the ``espeakng-loader`` wheel, through ctypes.

The library keeps synthesizer state from one call to the next (the same text twice in a row
gives different samples), so an item's audio would depend on the order of calls. To keep every
utterance deterministic on its own, this process initialises the library once and never
synthesizes; each utterance is synthesized in a forked child that starts from that pristine state
and sends the samples back through a pipe. (POSIX only; a fork costs about a millisecond.)
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os

import numpy as np

# espeak-ng's voice file ids differ from the language names the command line accepts
LIBRARY_VOICE_IDS = {
    "en-us": "en-US",
    "en-gb": "en",
    "en-gb-scotland": "en-GB-scotland",
    "en-gb-x-rp": "en-GB-x-rp",
    "en-029": "en-029",
    "en-us-nyc": "en-US-nyc",
    "en-gb-x-gbclan": "en-GB-x-gbclan",
    "en-gb-x-gbcwmd": "en-GB-x-gbcwmd",
}
_RATE, _VOLUME, _PITCH = 1, 2, 3  # espeak_PARAMETER values
_SYNCHRONOUS = 2  # AUDIO_OUTPUT_SYNCHRONOUS
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def available() -> bool:
    return hasattr(os, "fork") and importlib.util.find_spec("espeakng_loader") is not None


class _Library:
    """The initialised library, its sample rate and the chunks the callback collects."""

    def __init__(self):
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Info.restype = ctypes.c_char_p
        self.chunks: list[np.ndarray] = []
        self.callback = _CALLBACK(self._collect)  # keep a reference: the library holds the pointer
        self.rate = self.lib.espeak_Initialize(_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if self.rate <= 0:
            raise RuntimeError("libespeak-ng failed to initialise")
        self.lib.espeak_SetSynthCallback(self.callback)
        self.version = self.lib.espeak_Info(None).decode()

    def _collect(self, wav, count, events) -> int:
        if count > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    def synthesize(self, text: str, voice: str, speed: int, pitch: int, amplitude: int) -> np.ndarray:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"libespeak-ng has no voice {voice!r}")
        for param, value in ((_RATE, speed), (_PITCH, pitch), (_VOLUME, amplitude)):
            self.lib.espeak_SetParameter(param, int(value), 0)
        self.chunks.clear()
        data = text.encode() + b"\0"
        self.lib.espeak_Synth(data, len(data), 0, 1, 0, 0, None, None)
        self.lib.espeak_Synchronize()
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)


@functools.lru_cache(maxsize=1)
def _library() -> _Library:
    """Initialised once per process; forked workers inherit it in its pristine state."""
    return _Library()


def version() -> str:
    from importlib.metadata import version as package_version

    return f"libespeak-ng {_library().version} (espeakng-loader {package_version('espeakng-loader')})"


def synthesize(text: str, accent: str, variant: str, speed: int, pitch: int, amplitude: int) -> tuple[np.ndarray, int]:
    """int16 samples and their rate, synthesized in a forked child (see the module doc)."""
    lib = _library()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: synthesize from the pristine state, send the samples, exit at once
        status = 1
        try:
            os.close(read_end)
            samples = lib.synthesize(
                text, f"{LIBRARY_VOICE_IDS.get(accent, accent)}+{variant}", speed, pitch, amplitude
            )
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(samples.astype("<i2").tobytes())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError(f"libespeak-ng failed to synthesize {text!r} with {accent}+{variant}")
    return np.frombuffer(data, dtype="<i2"), lib.rate
