"""Figures as files: the non-interactive backend, a tight layout and PNG bytes that do not depend on
the matplotlib version (no "Software" metadata), so the same results give the same files."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

from stapes.fsutil import atomic_write_bytes  # noqa: E402


def png_bytes(fig, **savefig) -> bytes:
    """The figure as PNG bytes; the figure is closed afterwards."""
    buf = io.BytesIO()
    if "bbox_inches" not in savefig:
        fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None}, **savefig)
    plt.close(fig)
    return buf.getvalue()


def write_png(fig, path: str | Path, **savefig) -> None:
    """Write the figure to `path` as PNG, atomically."""
    atomic_write_bytes(path, png_bytes(fig, **savefig))
