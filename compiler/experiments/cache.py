"""A content-addressed cache of finished runs, so the suite is resumable.

Each run is keyed by a hash of its kind, its parameters, the stapes version and the suite's own
version (bump `SUITE_VERSION` when an experiment's computation changes meaning). A JSON result is
one file `runs/<key>.json`; a trained model is one folder `models/<key>/`. Both are written
atomically, so an interrupted suite leaves only finished entries behind.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from stapes._version import __version__
from stapes.fsutil import atomic_dir, write_json

SUITE_VERSION = 1


def run_key(kind: str, params: dict) -> str:
    """A stable hash of what determines a run's result."""
    blob = json.dumps(
        {"kind": kind, "params": params, "stapes": __version__, "suite": SUITE_VERSION},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class RunCache:
    """`root/runs/<key>.json` for results, `root/models/<key>/` for model folders."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        # Served from the cache vs computed, for results and for trained models separately.
        self.stats = {"results_cached": 0, "results_computed": 0, "models_cached": 0, "models_trained": 0}

    def folders(self) -> tuple[Path, Path]:
        """The folders entries are written in (temporary ones beside them while they are)."""
        return self.root / "runs", self.root / "models"

    def result_path(self, kind: str, params: dict) -> Path:
        return self.root / "runs" / f"{kind}-{run_key(kind, params)}.json"

    def result(self, kind: str, params: dict, compute: Callable[[], dict]) -> dict:
        """The cached result of (kind, params), computing and storing it first if needed."""
        path = self.result_path(kind, params)
        if path.is_file():
            self.stats["results_cached"] += 1
            return json.loads(path.read_text())["result"]
        self.stats["results_computed"] += 1
        value = compute()
        write_json(
            path, {"kind": kind, "params": params, "stapes": __version__, "suite": SUITE_VERSION, "result": value}
        )
        return value

    def model_path(self, kind: str, params: dict) -> Path:
        return self.root / "models" / f"{kind}-{run_key(kind, params)}"

    def has_model(self, kind: str, params: dict) -> bool:
        # params.json is written last: its presence marks the folder complete.
        return (self.model_path(kind, params) / "params.json").is_file()

    def model_dir(self, kind: str, params: dict, build: Callable[[Path], None]) -> Path:
        """The cached model folder of (kind, params); `build(tmp)` writes it when missing."""
        path = self.model_path(kind, params)
        if self.has_model(kind, params):
            self.stats["models_cached"] += 1
            return path
        self.stats["models_trained"] += 1
        with atomic_dir(path) as tmp:
            build(tmp)
            write_json(
                tmp / "params.json", {"kind": kind, "params": params, "stapes": __version__, "suite": SUITE_VERSION}
            )
        return path
