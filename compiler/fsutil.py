"""Atomic outputs: a folder or file is written completely or not at all, concurrent writers of one
output are safe, and nothing a user keeps is replaced (:func:`check_output` says what may be).

Beside an output NAME, a writer keeps ``.NAME.tmp-PID-XXXX`` while it writes, ``.NAME.old-PID-XXXX``
while it removes the folder it replaced, and ``.NAME.lock`` while it swaps the two (an flock,
removed again on release). It holds an flock on each temporary entry for as long as it owns it, so
an entry nobody holds is the leftover of a writer that died (Ctrl-C, SIGKILL, power loss): the
next writer of NAME removes it, and :func:`remove_stale` clears a whole folder (the paper cache).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no locks, and leftovers are never judged stale
    fcntl = None

# A temporary entry younger than this is never stale: its writer may not hold its lock yet.
STALE_AFTER_S = 2.0
# The names stapes gives them (and gave them before PIDs were in the names): nothing else is touched.
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:tmp-(?:\d+-)?[a-z0-9_]{8}|old-\d+(?:-[0-9a-f]{8})?)$")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# While a command runs (see checked_outputs): absolute output path -> may an entry found there
# at the moment of writing be replaced? The verdict of check_output, enforced again when writing.
_GUARDS: ContextVar[dict[str, Callable[[Path], bool]] | None] = ContextVar("stapes_output_guards", default=None)


def cache_dir(*parts: str) -> Path:
    """stapes' cache folder (``$STAPES_CACHE``, default ``$XDG_CACHE_HOME/stapes`` or
    ``~/.cache/stapes``), joined with `parts`: the one place that knows where the cache lives."""
    root = os.environ.get("STAPES_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "stapes"
    )
    return Path(root).joinpath(*parts)


def check_output(
    target: str | os.PathLike,
    *,
    inputs: Iterable[str | os.PathLike] = (),
    force: bool = False,
    is_output: Callable[[Path], bool] | None = None,
    what: str = "an output of this command",
    option: str = "--out",
    file: bool = False,
) -> Path:
    """Check, before any work, that writing the folder (or with `file`, the file) `target` destroys
    nothing; return it as a Path. Every refusal is a one-line UserError and touches nothing.

    Refused: an empty path; the root folder; the current folder or one containing it; a path that
    is one of `inputs`, contains one or lies inside an input folder (an input folder stays exactly
    as it was); a path below a file; a place where this process
    cannot create files; an existing symbolic link; a folder where a file is to be written or
    anything but a folder where a folder is (a file is never replaced by a folder); and any
    other existing entry, unless `is_output` recognises it as `what` (an earlier output of the
    same command) and `force` is given. An empty folder may always be written: nothing is lost.
    Inside :func:`checked_outputs` the verdict is enforced again at the moment of writing, so an
    entry that appeared meanwhile is not replaced either."""
    from stapes.errors import UserError

    kind = "file" if file else "folder"
    text = os.fspath(target)
    shown = f"{option} {text}"
    if not str(text).strip():
        raise UserError(f"{option} is empty; name the {kind} to write")
    try:
        absolute = Path(os.path.abspath(text))
        real = absolute.resolve()
        cwd = Path.cwd().resolve()
        exists = os.path.lexists(absolute)
    except (OSError, ValueError) as e:
        raise UserError(f"{option} {text!r} is not a usable path ({getattr(e, 'strerror', None) or e})") from None
    if absolute.parent == absolute or real.parent == real:
        raise UserError(f"{shown} is the root folder; name a new {kind} below it")
    if real == cwd:
        raise UserError(f"{shown} is the current folder; name a new {kind}, e.g. {option} ./NAME")
    if cwd.is_relative_to(real):
        raise UserError(f"{shown} contains the current folder; name a new {kind}")
    for given in inputs:
        source = Path(os.path.abspath(given)).resolve()
        if real == source:
            raise UserError(f"{shown} is the input {os.fspath(given)}; choose another {kind}")
        if source.is_relative_to(real):
            raise UserError(f"{shown} contains the input {os.fspath(given)}; choose a {kind} that does not hold it")
        if source.is_dir() and real.is_relative_to(source):
            raise UserError(f"{shown} is inside the input {os.fspath(given)}; choose a {kind} outside it")
    if exists:
        if absolute.is_symlink():
            raise UserError(f"{shown} is a symbolic link; name the {kind} itself")
        if file and absolute.is_dir():
            raise UserError(f"{shown} is a folder; name the file to write")
        if file and not absolute.is_file():
            raise UserError(f"{shown} exists and is not a regular file; refusing to replace it")
        if not file and not absolute.is_dir():
            raise UserError(
                f"{shown} exists and is not a folder; a folder is never written over a file, choose another name"
            )
        if not _empty_dir(absolute):
            if not _recognised(is_output, absolute):
                raise UserError(f"{shown} exists and is not {what}; refusing to replace it, choose another {kind}")
            if not force:
                raise UserError(f"{shown} exists ({what}); add --force to replace it")
    _check_writable(absolute, shown)
    guards = _GUARDS.get()
    if guards is not None:
        guards[str(absolute)] = lambda p: _empty_dir(p) or (force and _recognised(is_output, p))
    return Path(text)


@contextlib.contextmanager
def checked_outputs() -> Iterator[None]:
    """Within this context (the CLI runs each command in one), :func:`atomic_dir` and
    :func:`atomic_write_bytes` refuse to replace an output that :func:`check_output` would refuse
    now: what appears at an output path while a long command works is kept."""
    token = _GUARDS.set({})
    try:
        yield
    finally:
        _GUARDS.reset(token)


def _recognised(is_output: Callable[[Path], bool] | None, path: Path) -> bool:
    try:
        return is_output is not None and bool(is_output(path))
    except (OSError, ValueError):
        return False


def _empty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and not path.is_symlink() and not any(os.scandir(path))
    except OSError:
        return False


def _check_writable(absolute: Path, shown: str) -> None:
    """The nearest existing folder above `absolute` must be one this process can create files in
    (probed by creating and removing an empty folder: permission bits alone do not tell root,
    read-only mounts or /proc)."""
    from stapes.errors import UserError

    ancestor = absolute.parent
    while not os.path.lexists(ancestor):
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{shown}: {ancestor} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".stapes-probe-", dir=ancestor))
    except OSError as e:
        raise UserError(f"{shown}: cannot create files in {ancestor} ({e.strerror or e})") from None


def _output_path(target: str | os.PathLike) -> Path:
    """`target` as an absolute path, refusing what no writer may replace whatever the caller
    checked: the root folder, the current folder and any folder containing it."""
    from stapes.errors import UserError

    text = os.fspath(target)
    if not str(text).strip():
        raise UserError("an output path is empty")
    path = Path(os.path.abspath(text))
    if path.parent == path:
        raise UserError(f"{text}: the root folder cannot be an output")
    cwd = Path(os.getcwd())
    if path == cwd or path in cwd.parents:
        raise UserError(f"{text} is the current folder or contains it; it cannot be an output")
    return path


def _replace_allowed(path: Path) -> bool:
    guards = _GUARDS.get()
    rule = guards.get(str(path)) if guards is not None else None
    return rule is None or rule(path)


def _hold(path: str | os.PathLike) -> int:
    """An open descriptor of `path` holding a shared flock, which says a live writer owns it
    (shared: a writer nested in another, whose target is the outer one's temporary folder, holds
    it too)."""
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
    return fd


def _unowned(path: Path) -> bool:
    """True when the temporary entry `path` is a dead writer's: not created just now and no
    process holds its lock."""
    if fcntl is None:
        return False
    try:
        if time.time() - path.lstat().st_mtime < STALE_AFTER_S:
            return False
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def remove_stale(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove the ``.NAME.tmp-*`` / ``.NAME.old-*`` entries in `folder` (of output `name` only,
    when given) that their writer left behind when it died; returns what was removed. Entries
    another process is still writing are kept."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    removed = []
    for entry in entries:
        match = _LEFTOVER.match(entry.name)
        if not match or (name is not None and match["name"] != name) or not _unowned(Path(entry.path)):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
        removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def _name_lock(parent: Path, name: str) -> Iterator[None]:
    """Exclusive lock of the output `name` in `parent` across threads and processes: an flock on
    ``.NAME.lock``, which the holder deletes on release (a waiter that then holds a deleted file
    sees it is not the current one and tries again), so no lock file stays behind."""
    if fcntl is None:
        yield
        return
    path = parent / f".{name}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False)):
                break
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `target`, on error it vanishes.

    The temporary folder lives next to `target` so the final rename stays on one filesystem. An
    existing `target` is replaced only once the new content is complete, and only if it is a
    folder (never a file or a symbolic link) that the command's :func:`check_output` allows.
    Concurrent writers of one `target` each build their own folder and swap under a lock: the
    result is one writer's complete folder, and no temporary entry survives a writer."""
    from stapes.errors import UserError

    target = _output_path(target)
    parent, name = target.parent, target.name
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-{os.getpid()}-", dir=parent))
    except OSError as e:
        raise UserError(f"{target}: cannot create ({e.strerror or e})") from None
    held = _hold(tmp)
    old = old_held = None
    try:
        yield tmp
        if not os.path.samestat(os.fstat(held), os.stat(tmp)):  # a nested atomic_dir replaced it
            os.close(held)
            held = _hold(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a finished output folder is an ordinary folder
        with _name_lock(parent, name):
            remove_stale(parent, name)
            if os.path.lexists(target):
                if target.is_symlink() or not target.is_dir():
                    raise UserError(f"{target} exists and is not a folder; a folder is never written over it")
                if not _replace_allowed(target):
                    raise UserError(f"{target} appeared while stapes was working; it was kept, nothing written")
                old = parent / f".{name}.old-{os.getpid()}-{secrets.token_hex(4)}"
                old_held = _hold(target)
                os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                if old is not None:
                    os.replace(old, target)
                    old = None
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(held)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        if old_held is not None:
            os.close(old_held)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file (held with an flock while it is written)
    and a rename; an existing `path` that the command's :func:`check_output` would refuse now is kept."""
    from stapes.errors import UserError

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(data)
        os.fchmod(fd, 0o644)  # mkstemp makes it 0600; outputs are ordinary files
        if os.path.lexists(path) and not _replace_allowed(Path(os.path.abspath(path))):
            raise UserError(f"{path} appeared while stapes was working; it was kept, nothing written")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> None:
    """Deterministic JSON (sorted keys, 2-space indent, trailing newline), written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


# Limits of the versioned readers, checked before anything is allocated: a metadata file and the
# arrays beside it are small (a 4096-unit dense MGU in float64 is about 270 MB of arrays).
MAX_JSON_BYTES = 16 << 20
MAX_JSON_DEPTH = 64
MAX_NPZ_BYTES = 1 << 30  # the arrays of one .npz together, uncompressed
MAX_NPZ_MEMBERS = 256


def read_versioned_json(path: str | os.PathLike, fmt: str, version: int) -> dict:
    """A JSON file that declares ``format`` `fmt` and ``version`` `version`; every problem
    (unreadable, too large, not UTF-8, invalid or too deeply nested JSON, wrong format or
    version) is a one-line UserError naming the file."""
    from stapes.errors import UserError

    name = fmt.split(".")[-1]
    meta = read_json(path, name)
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise UserError(f"{path}: not a {name} (format {found!r})")
    found = meta.get("version")
    if type(found) is not int or found != version:
        raise UserError(f"{path}: {name} version {found!r} is not supported (this stapes reads version {version})")
    return meta


def read_json(path: str | os.PathLike, name: str):
    """The parsed JSON of a `name` file; unreadable, too large, not UTF-8, invalid or too deeply
    nested is a one-line UserError naming the file."""
    from stapes.errors import UserError

    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise UserError(f"{path}: not a file")
        if size > MAX_JSON_BYTES:
            raise UserError(f"{path}: {size} bytes; a {name} file is at most {MAX_JSON_BYTES >> 20} MiB")
        data = path.read_bytes()
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    if not data.strip():
        raise UserError(f"{path}: empty file, not a {name}")
    try:
        meta = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (invalid byte at offset {e.start})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: invalid JSON ({e})") from None
    except RecursionError:
        raise UserError(f"{path}: JSON nested more than {MAX_JSON_DEPTH} levels deep") from None
    if _json_depth(meta) > MAX_JSON_DEPTH:
        raise UserError(f"{path}: JSON nested more than {MAX_JSON_DEPTH} levels deep")
    return meta


def _json_depth(obj) -> int:
    """Nesting depth of a parsed JSON value, up to MAX_JSON_DEPTH + 1 (iterative: a deep value
    cannot exhaust the stack)."""
    depth, level = 0, [obj]
    while level and depth <= MAX_JSON_DEPTH:
        depth += 1
        level = [v for o in level if isinstance(o, (dict, list)) for v in (o.values() if isinstance(o, dict) else o)]
    return depth


def read_versioned(folder: str | os.PathLike, stem: str, fmt: str, version: int, missing: str) -> tuple[dict, dict]:
    """Read `<stem>.json` (checked by :func:`read_versioned_json`) and `<stem>.npz` from a folder.

    Returns (meta, arrays). Every problem is a UserError naming the file; `missing` is the message
    for a folder without the two files. The archive is checked before any array is allocated:
    at most MAX_NPZ_MEMBERS ``.npy`` members and MAX_NPZ_BYTES of data, no pickled objects, each
    member's header consistent with its size; a truncated or corrupt archive is a UserError."""
    from stapes.errors import UserError

    folder = Path(folder)
    meta_path, npz_path = folder / f"{stem}.json", folder / f"{stem}.npz"
    try:
        present = meta_path.is_file() and npz_path.is_file()
    except (OSError, ValueError):
        present = False
    if not present:
        raise UserError(f"{folder}: {missing}")
    meta = read_versioned_json(meta_path, fmt, version)
    try:
        arrays = _read_npz(npz_path)
    except UserError:
        raise
    except Exception as e:  # zipfile, zlib and numpy raise many types for a damaged archive
        why = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
        raise UserError(
            f"{npz_path}: not a readable .npz archive ({type(e).__name__}{': ' + why if why else ''})"
        ) from None
    return meta, arrays


def _read_npz(path: Path) -> dict:
    import zipfile

    from stapes.errors import UserError

    size = path.stat().st_size
    if size == 0:
        raise UserError(f"{path}: empty file, not an .npz archive")
    if size > MAX_NPZ_BYTES:
        raise UserError(f"{path}: {size} bytes; an .npz here is at most {MAX_NPZ_BYTES >> 20} MiB")
    arrays = {}
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_NPZ_MEMBERS:
            raise UserError(f"{path}: {len(infos)} members; at most {MAX_NPZ_MEMBERS} arrays are read")
        total = sum(i.file_size for i in infos)
        if total > MAX_NPZ_BYTES:
            raise UserError(f"{path}: {total} bytes of arrays; at most {MAX_NPZ_BYTES >> 20} MiB are read")
        for info in infos:
            key = info.filename.removesuffix(".npy")
            if key == info.filename or not key:
                raise UserError(f"{path}: member {info.filename!r} is not a .npy array")
            if key in arrays:
                raise UserError(f"{path}: array {key!r} appears twice")
            with zf.open(info) as f:
                arrays[key] = _read_npy(f, info.file_size, f"{path}: array {key!r}")
    return arrays


def _read_npy(f, file_size: int, where: str):
    """One .npy member: the header must describe exactly the data that follows."""
    import numpy as np

    from stapes.errors import UserError

    shape, fortran, dtype = npy_header(f, file_size, where)
    nbytes = file_size - f.tell()
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise UserError(f"{where}: truncated ({len(data)} of {nbytes} bytes)")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def npy_header(f, file_size: int, where: str) -> tuple[tuple, bool, object]:
    """(shape, fortran order, dtype) from the .npy header at the start of `f`, a stream of
    `file_size` bytes, checked before any data is read: numbers (no pickled objects, no records),
    and exactly as many bytes after the header as the shape and dtype say. A UserError names `where`."""
    import math

    import numpy as np

    from stapes.errors import UserError

    fmt = np.lib.format
    major = fmt.read_magic(f)
    if major == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(f)
    elif major in ((2, 0), (3, 0)):
        shape, fortran, dtype = fmt.read_array_header_2_0(f)
    else:
        raise UserError(f"{where}: unsupported .npy version {major}")
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise UserError(f"{where}: has dtype {dtype} (Python objects or records); numbers expected")
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise UserError(f"{where}: invalid shape {shape}")
    nbytes, follow = math.prod(shape) * dtype.itemsize, file_size - f.tell()
    if nbytes != follow:
        raise UserError(f"{where}: the header says {shape} {dtype} ({nbytes} bytes) but {follow} bytes follow")
    return shape, fortran, dtype
