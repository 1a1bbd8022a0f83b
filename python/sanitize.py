"""The C under ASan + UBSan, in a subprocess (an ASan runtime cannot be loaded into a running Python).

* ``run_sanitized`` builds the generated C + the runtime + ``c/stp_host_model_main.c`` and runs it;
* ``run_runtime_sanitized`` runs one cached runtime executable (``c/stp_host_runtime_main.c``)
  that reads the model from a text file (:func:`model_text`): any number of random models, one
  build.

Both use -fno-sanitize-recover; any sanitizer report or non-zero exit is a CheckFailed.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from stapes.emit.model_c import emit
from stapes.emit.model_desc import CArray, Enum, describe, leaves
from stapes.errors import CheckFailed
from stapes.fixed.reference import check_input
from stapes.host.cbuild import (
    ARCH_FLAGS,
    SANITIZE_FLAGS,
    WARNING_FLAGS,
    build_key,
    c_build,
    cache_dir,
    cached_build,
    compiler,
    host_c,
    model_defines,
)
from stapes.host.run import out_shape
from stapes.ir.qgraph import QGraph

_SANITIZER_BUILD_FLAGS = [*WARNING_FLAGS, "-O1", *ARCH_FLAGS, *SANITIZE_FLAGS]
_BITS = {"const int8_t *": 8, "const int16_t *": 16, "const int32_t *": 32}


def run_sanitized(
    qgraph: QGraph, x_q: np.ndarray, rank: int | None = None, prefix: str = "model", cc: str | None = None
):
    """Build the generated C + runtime + a file driver with ASan/UBSan (-fno-sanitize-recover)
    and run it: (outputs, states). Any sanitizer report fails with CheckFailed."""
    x_q = np.ascontiguousarray(check_input(qgraph, x_q))
    r = qgraph.check_rank(rank)
    files = emit(qgraph, prefix)
    with tempfile.TemporaryDirectory(prefix="stapes-asan-") as tmp:
        tmp = Path(tmp)
        for fname, text in files.items():
            (tmp / fname).write_text(text)
        exe = tmp / "model_asan"
        c_build(
            exe,
            [tmp / f"{prefix}.c", host_c("stp_host_batch.c"), host_c("stp_host_model_main.c")],
            [*_SANITIZER_BUILD_FLAGS, *model_defines(prefix)],
            [tmp],
            cc,
        )
        return _run_sanitized_exe([str(exe)], tmp, qgraph, x_q, rank, r)


def model_text(q: QGraph) -> str:
    """Every field of ``describe(q).model`` in declaration order, as c/stp_host_runtime_main.c
    reads them: an int field is its value; a pointer field is its element bits, its element
    count and the elements (count 0: NULL)."""
    parts: list[int] = []
    for path, ctype, value in leaves(describe(q).model):
        if ctype in _BITS:
            data = value.data.reshape(-1).tolist() if isinstance(value, CArray) else []
            parts += [_BITS[ctype], len(data), *data]
        elif ctype == "int":
            parts.append(value.value if isinstance(value, Enum) else int(value or 0))
        else:
            raise CheckFailed(f"stp_model_t field {'.'.join(path)} has a type ({ctype}) the driver cannot read")
    return " ".join(map(str, parts)) + "\n"


def sanitized_runtime_exe(cc: str | None = None) -> Path:
    """The runtime + the model-file driver built with ASan/UBSan (cached like the cffi modules)."""
    cc = cc or compiler()
    key = build_key(*_SANITIZER_BUILD_FLAGS, cc)

    def make(work: Path) -> None:
        c_build(work / "stp_runtime_asan", [host_c("stp_host_runtime_main.c")], _SANITIZER_BUILD_FLAGS, cc=cc)

    return cached_build(cache_dir() / f"asan-runtime-{key}", "stp_runtime_asan", make)


def run_runtime_sanitized(qgraph: QGraph, x_q: np.ndarray, rank: int | None = None):
    """run_runtime, but in the ASan/UBSan runtime executable: (outputs, states)."""
    x_q = np.ascontiguousarray(check_input(qgraph, x_q))
    r = qgraph.check_rank(rank)
    exe = sanitized_runtime_exe()
    with tempfile.TemporaryDirectory(prefix="stapes-asan-") as tmp:
        tmp = Path(tmp)
        (tmp / "model.txt").write_text(model_text(qgraph))
        return _run_sanitized_exe([str(exe), str(tmp / "model.txt")], tmp, qgraph, x_q, rank, r)


def _run_sanitized_exe(argv: list, tmp: Path, qgraph: QGraph, x_q: np.ndarray, rank, r: int):
    """Run a sanitizer driver as `argv + [in.bin, out.bin, batch, steps, rank]` in `tmp`; any
    sanitizer report or a non-zero exit fails with CheckFailed. Returns (outputs, states)."""
    bsz, steps, _ = x_q.shape
    (tmp / "in.bin").write_bytes(x_q.tobytes())
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    proc = subprocess.run(
        [*argv, str(tmp / "in.bin"), str(tmp / "out.bin"), str(bsz), str(steps), str(0 if rank is None else r)],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0 or "runtime error" in proc.stderr or "Sanitizer" in proc.stderr:
        raise CheckFailed(f"sanitizer run failed (exit {proc.returncode}): {proc.stderr.strip()[:2000]}")
    raw = np.frombuffer((tmp / "out.bin").read_bytes(), dtype=np.int16)
    shape = out_shape(qgraph, bsz, steps)
    ysize = int(np.prod(shape))
    return raw[:ysize].reshape(shape).copy(), raw[ysize:].reshape(bsz, steps, qgraph.hidden_size).copy()
