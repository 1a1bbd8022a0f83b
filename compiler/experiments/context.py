"""What the runner and its worker processes share: the `Context` an experiment computes in and the
one-line description of a failure."""

from __future__ import annotations

import io
from pathlib import Path

from stapes.experiments.cache import RunCache
from stapes.experiments.settings import Settings
from stapes.fsutil import atomic_write_bytes


class Context:
    """What an experiment's `compute` and `summarize` get: settings, cache, figure output."""

    def __init__(self, out: Path, settings: Settings):
        self.out = Path(out)
        self.settings = settings
        self.cache = RunCache(self.out / "cache")
        self.figures_dir = self.out / "figures"

    def save_figure(self, fig, name: str) -> str:
        """Save a matplotlib figure as figures/<name>.png (atomically); return its report path."""
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        atomic_write_bytes(self.figures_dir / f"{name}.png", buf.getvalue())
        return f"figures/{name}.png"


def describe(e: Exception) -> str:
    """One line naming the exception and where it was raised (the report must say what broke)."""
    import traceback

    frame = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
    return f"{type(e).__name__}: {e}{where}".replace("\n", " ")
