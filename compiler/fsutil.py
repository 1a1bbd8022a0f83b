"""Atomic outputs: a folder or file is written completely or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """stapes' cache folder (``$STAPES_CACHE``, default ``$XDG_CACHE_HOME/stapes`` or
    ``~/.cache/stapes``), joined with `parts`: the one place that knows where the cache lives."""
    root = os.environ.get("STAPES_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "stapes"
    )
    return Path(root).joinpath(*parts)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `target`, on error it vanishes.

    The temporary folder lives next to `target` so the final rename stays on one filesystem.
    An existing `target` is replaced only once the new content is complete.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a finished output folder is an ordinary folder
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> None:
    """Deterministic JSON (sorted keys, 2-space indent, trailing newline), written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_versioned_json(path: str | os.PathLike, fmt: str, version: int) -> dict:
    """A JSON file that declares ``format`` `fmt` and ``version`` `version`; every problem is a
    UserError naming the file."""
    from stapes.errors import UserError

    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: invalid JSON ({e})") from None
    name = fmt.split(".")[-1]
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise UserError(f"{path}: not a {name} (format {found!r})")
    if meta.get("version") != version:
        raise UserError(
            f"{path}: {name} version {meta.get('version')} is not supported (this stapes reads version {version})"
        )
    return meta


def read_versioned(folder: str | os.PathLike, stem: str, fmt: str, version: int, missing: str) -> tuple[dict, dict]:
    """Read `<stem>.json` (checked by :func:`read_versioned_json`) and `<stem>.npz` from a folder.

    Returns (meta, arrays). Every problem is a UserError naming the file; `missing` is the message
    for a folder without the two files."""
    import numpy as np

    from stapes.errors import UserError

    folder = Path(folder)
    meta_path, npz_path = folder / f"{stem}.json", folder / f"{stem}.npz"
    if not meta_path.is_file() or not npz_path.is_file():
        raise UserError(f"{folder}: {missing}")
    meta = read_versioned_json(meta_path, fmt, version)
    with np.load(npz_path) as z:
        arrays = {k: z[k] for k in z.files}
    return meta, arrays
