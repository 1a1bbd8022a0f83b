"""argparse ``type=`` validators: a bad value is argparse's one-line error with exit code 2.

Numbers are checked for NaN, Inf, sign and size (each validator names its bounds, so the
``--help`` text can quote them); names and paths for what the later stages need (a C prefix
that is a legal, unreserved identifier; a board name that is a folder name; a path without NUL
bytes; a calibration ``.npy`` that is one finite real float array). Cheap to import: heavy
modules load inside the validators that need them.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

# C11 keywords (and C23's new ones): a prefix that is one is not a usable identifier.
C_KEYWORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto if inline int long "
    "register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while "
    "_Alignas _Alignof _Atomic _Bool _Complex _Generic _Imaginary _Noreturn _Static_assert _Thread_local "
    "alignas alignof bool constexpr false nullptr static_assert thread_local true typeof typeof_unqual".split()
)
PREFIX_MAX = 40
_PREFIX = re.compile(r"[a-z][a-z0-9_]*")
_BOARD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SEED_MAX = 2**32 - 1
MAX_CALIBRATION_BYTES = 1 << 30
# The IR's and the trainer's limits (stapes.ir.float_graph.MAX_HIDDEN, stapes.frontend.train.MAX_*),
# restated so that building the parser imports neither numpy nor torch; tests/test_bad_inputs.py
# checks that they agree.
MAX_HIDDEN = 4096
MAX_TRAIN_STEPS = 1_000_000
MAX_BATCH = 4096
MAX_SEQUENCE_STEPS = 100_000
MAX_BATCH_VALUES = 1 << 28  # batch x sequence steps x hidden size
MAX_THREADS = 256
# Limits of the commands' own counts (sequences drawn, frames run): generous for a check, small
# enough that one command cannot allocate gigabytes by accident.
MAX_SEQUENCES = 65536
MAX_FRAMES = 100_000


def _fail(message: str):
    raise argparse.ArgumentTypeError(message)


def _bounds(lo, hi) -> str:
    if lo is None:
        return f"<= {hi}"
    return f"{lo}..{hi}" if hi is not None else f">= {lo}"


def int_range(lo: int | None, hi: int | None = None, what: str = ""):
    """An integer in lo..hi (lo None: the command checks the lower bound itself; hi None: no upper
    bound); `what` names it in the message."""
    lead = f"{what} " if what else ""

    def parse(text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            _fail(f"{lead}expected an integer {'in ' if lo is not None else ''}{_bounds(lo, hi)}, got {text!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            _fail(f"{lead}must be an integer {'in ' if lo is not None else ''}{_bounds(lo, hi)}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def float_range(lo: float, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False, what: str = ""):
    """A finite number in [lo, hi] (either end open with lo_open / hi_open; hi None: no bound);
    `what` names it in the message."""
    left, right = "(" if lo_open else "[", ")" if hi_open or hi is None else "]"
    span = f"{left}{lo:g}, {'inf' if hi is None else f'{hi:g}'}{right}"
    lead = f"{what} " if what else ""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            _fail(f"{lead}expected a number in {span}, got {text!r}")
        if not math.isfinite(value):
            _fail(f"{lead}must be a finite number in {span}, got {text!r}")
        if value < lo or (lo_open and value == lo) or (hi is not None and (value > hi or (hi_open and value == hi))):
            _fail(f"{lead}must be in {span}, got {value:g}")
        return value

    parse.__name__ = "number"
    return parse


seed = int_range(0, SEED_MAX)
positive_float = float_range(0.0, lo_open=True)
finite_float = float_range(-math.inf)  # the command checks the range and says what it means


def int_list(lo: int, hi: int | None = None):
    """Integers in lo..hi separated by commas or spaces (at least one)."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(v, 10) for v in text.replace(",", " ").split()]
        except ValueError:
            _fail(f"expected integers separated by commas, got {text!r}")
        if not values:
            _fail("empty list")
        bad = [v for v in values if v < lo or (hi is not None and v > hi)]
        if bad:
            _fail(f"each value must be in {_bounds(lo, hi)}, got {bad[0]}")
        return values

    parse.__name__ = "integer list"
    return parse


def c_prefix(text: str) -> str:
    """A prefix for the generated C symbols (<prefix>_step, <PREFIX>_H, ...): a lower-case C identifier
    that starts with a letter (a leading underscore is reserved), has no double underscore or
    trailing underscore (<PREFIX>__H would be reserved in C++), is no keyword and is not the runtime's."""
    if not _PREFIX.fullmatch(text) or len(text) > PREFIX_MAX:
        _fail(
            f"{text!r} is not a lower-case C identifier starting with a letter "
            f"(a-z, 0-9, _; at most {PREFIX_MAX} characters)"
        )
    if "__" in text or text.endswith("_"):
        _fail(f"{text!r}: a double or trailing underscore makes reserved identifiers such as {text.upper()}_H")
    if text in C_KEYWORDS:
        _fail(f"{text!r} is a C keyword")
    if text == "stp" or text.startswith("stp_"):
        _fail(f"{text!r}: stp_ is the runtime's prefix")
    return text


def board_name(text: str) -> str:
    """A board profile name: a plain folder name (see `stapes board list`)."""
    if not _BOARD.fullmatch(text):
        _fail(f"{text!r} is not a board name (letters, digits, '.', '_', '-'; see `stapes board list`)")
    return text


def path(text: str) -> str:
    """A file or folder path: not empty, no NUL byte."""
    if not text or "\0" in text:
        _fail(f"{text!r} is not a usable path")
    return text


def byte_size(text: str) -> str:
    """A size such as 4096, 32k or 1M: not NaN or Inf (the command parses it and checks the rest)."""
    t = str(text).strip().lower()
    try:
        finite = math.isfinite(float(t[:-1] if t[-1:] in ("k", "m") else t))
    except ValueError:
        finite = True  # not a number at all: the command names the problem
    if not finite:
        _fail(f"size must be finite, got {text!r}")
    return text


def calibration_file(text: str) -> str:
    """A calibration ``.npy`` file: one finite, real, not all-zero float array of rank 3
    (batch, time, inputs); checked here so every problem names the file."""
    import numpy as np

    from stapes.errors import UserError
    from stapes.fsutil import npy_header

    p = Path(path(text))
    try:
        if not p.is_file():
            return text  # the command says that it cannot read it
        size = p.stat().st_size
        if size == 0:
            _fail(f"{p}: empty file, not a .npy array")
        if size > MAX_CALIBRATION_BYTES:
            _fail(f"{p}: {size} bytes; a calibration file is at most {MAX_CALIBRATION_BYTES >> 20} MiB")
        with open(p, "rb") as f:
            if f.read(2) == b"PK":
                _fail(f"{p}: an .npz archive; give one .npy array (batch, time, inputs)")
            f.seek(0)
            shape, fortran, dtype = npy_header(f, size, str(p))
            data = f.read()
    except argparse.ArgumentTypeError:
        raise
    except OSError as e:
        _fail(f"{p}: cannot read ({e.strerror or e})")
    except UserError as e:
        _fail(str(e))
    except Exception as e:  # numpy's header parser raises several types for a damaged file
        _fail(f"{p}: not a .npy array ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    if dtype.kind not in "fiu":
        _fail(f"{p}: dtype {dtype}; calibration inputs are real numbers")
    if len(shape) != 3 or 0 in shape:
        _fail(f"{p}: shape {shape}; calibration inputs have shape (batch, time, inputs)")
    x = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    if not np.all(np.isfinite(x)):
        _fail(f"{p}: contains NaN or Inf")
    if not np.any(x):
        _fail(f"{p}: every value is 0, so it says nothing about the input range")
    return text
