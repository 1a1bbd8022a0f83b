"""The on-disk cache of generated sets: one plain (uncompressed) .npz per (generator, parameters, split).

The key hashes the generator version and parameters with the speech engine's version and the
noise types available here (whether the OpenSFX recordings are installed), because the audio
is bit-identical only for the same engine build. Root: ``stapes.fsutil.cache_dir("audio")``. Deleting the folder is always safe.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stapes.fsutil import atomic_write_bytes, cache_dir
from stapes.tasks.audio.engine import engine_version
from stapes.tasks.audio.noise import opensfx_path


def cache_root() -> Path:
    return cache_dir("audio")


def cache_key(key: dict) -> str:
    """A hex digest of `key` (which names its noise types) plus the engine version and the
    installed noise recordings."""
    sfx = opensfx_path()
    full = dict(key, engine=engine_version(), opensfx_bytes=os.path.getsize(sfx) if sfx else 0)
    return hashlib.sha256(json.dumps(full, sort_keys=True).encode()).hexdigest()[:24]


def cached_arrays(
    key: dict, build: Callable[[], dict[str, np.ndarray]], use_cache: bool = True
) -> dict[str, np.ndarray]:
    """Load the arrays stored under `key`, or build them (and store them when use_cache)."""
    digest = cache_key(key)  # also raises the engine-missing UserError before any work
    path = cache_root() / f"{key.get('kind', 'set')}-{key.get('split', 'all')}-{digest}.npz"
    if use_cache and path.is_file():
        with np.load(path) as stored:
            return {name: stored[name] for name in stored.files}
    arrays = build()
    if use_cache:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue())
    return arrays
