"""Build generated C + the runtime into a cffi module (API mode, cached) and run it.

* ``build(qgraph, prefix)`` compiles ``emit(qgraph, prefix)`` with the runtime; ``run_c`` runs a
  batch of sequences in one C call (or one call per frame) and returns outputs, states, op counts.
* ``build_runtime()`` compiles the runtime alone; ``run_runtime`` fills the runtime's model
  structs from a QGraph's arrays at run time, so random models need no compilation (tests, soak).
* ``run_sanitized`` builds the generated C as a stand-alone executable with ASan + UBSan (an ASan
  runtime cannot be loaded into a running Python) and runs it in a subprocess;
  ``run_runtime_sanitized`` does the same with one cached runtime executable that reads the model
  from a file (any number of random models, one build).

Modules are cached under $STAPES_CACHE (default ~/.cache/stapes/cffi), keyed by a hash of the
sources, flags and compiler, so a warm cache loads in milliseconds.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from stapes.emit.model_c import check_prefix, emit
from stapes.errors import CheckFailed, UserError
from stapes.fixed.compare import assert_bit_exact, first_mismatch  # noqa: F401  (public via stapes.host)
from stapes.fixed.fixedpoint import LUT_SIZE
from stapes.fixed.reference import OP_KINDS, activation_tables, check_input
from stapes.ir.qgraph import QGraph

WARNING_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Wconversion", "-Werror"]


def host_arch_flags() -> list[str]:
    """["-mavx2"] on an x86-64 Linux host whose CPU has AVX2, else []: the runtime's x86 kernels
    then use 256-bit VPMADDWD (SSE2, part of x86-64, is the fallback). Integer code only, so the
    flag cannot change numerics; it is part of every cache key, and a CPU without AVX2 gets []."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return ["-mavx2"] if "avx2" in flags else []


ARCH_FLAGS = host_arch_flags()
# Speed only (numerics are flag-independent): -fno-wrapv undoes Python's -fwrapv, which blocks
# vectorisation (nothing here overflows); -fno-semantic-interposition lets -fPIC code inline.
OPT_FLAGS = ["-O3", "-fno-semantic-interposition", "-fno-wrapv", *ARCH_FLAGS]
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]
_loaded: dict[str, object] = {}

_CDEF_OPS = """
typedef struct { uint64_t mac; uint64_t add; uint64_t shift; uint64_t sat; uint64_t lut; uint64_t mul; } stp_op_counts_t;
extern stp_op_counts_t stp_ops;
"""

_CDEF_MODEL = """
typedef struct { const int8_t *w8; const int16_t *w16; int rows; int cols; } stp_mat_t;
typedef struct { stp_mat_t w; stp_mat_t u; stp_mat_t b; stp_mat_t a; const int8_t *z_shift;
                 const int8_t *x_shift; const int8_t *h_shift; const int32_t *bias; const int16_t *table; } stp_gate_t;
typedef struct { stp_mat_t w; const int8_t *shift; const int32_t *bias; const int16_t *table; int mode; } stp_readout_t;
typedef struct { int cell; int input_size; int hidden_size; int output_size; int rank_max;
                 stp_gate_t gate_f; stp_gate_t gate_h; stp_readout_t readout; } stp_model_t;
int stp_model_scratch_size(const stp_model_t *m);
int stp_model_step(const stp_model_t *m, const int16_t *x, int16_t *state, int16_t *y, int16_t *scratch, int rank);
int stp_model_run(const stp_model_t *m, const int16_t *x, int steps, int16_t *state, int16_t *y,
                  int16_t *states, int16_t *scratch, int rank);
"""


# ---- where things are -----------------------------------------------------------------------
def runtime_include_dir() -> Path:
    """runtime_c/include (stp_fixed.h, stp_model.h), found through importlib.resources."""
    return Path(str(importlib.resources.files("stapes.runtime_c") / "include"))


def runtime_sources() -> list[Path]:
    """The runtime's .c files, sorted (cross-compile them with the generated model)."""
    src = importlib.resources.files("stapes.runtime_c") / "src"
    return sorted(Path(str(src / name.name)) for name in src.iterdir() if name.name.endswith(".c"))


def cache_dir() -> Path:
    root = os.environ.get("STAPES_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "stapes"
    return base / "cffi"


def compiler() -> str:
    return os.environ.get("CC", "gcc")


def _digest(parts: list) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def _runtime_blob() -> list:
    files = runtime_sources() + sorted(runtime_include_dir().glob("*.h"))
    return [f.name.encode() + f.read_bytes() for f in files]


# ---- cffi build + load ----------------------------------------------------------------------------
def _load_module(name: str, folder: Path):
    if name in _loaded:
        return _loaded[name]
    for f in folder.iterdir():
        if f.name.startswith(name + ".") and f.suffix in (".so", ".pyd"):
            spec = importlib.util.spec_from_file_location(name, f)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            _loaded[name] = mod
            return mod
    return None


def _compile_module(
    name: str, cdef: str, source: str, extra_files: dict[str, str], flags: list[str], defines: list
) -> object:
    """Compile (once per cache key) and load a cffi API-mode module."""
    folder = cache_dir() / name
    mod = _load_module(name, folder) if folder.is_dir() else None
    if mod is not None:
        return mod
    if folder.is_dir():  # an incomplete entry (e.g. a killed build): rebuild it
        shutil.rmtree(folder, ignore_errors=True)
    import cffi

    cache_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir()))
    try:
        for fname, text in extra_files.items():
            (work / fname).write_text(text)
        ffi = cffi.FFI()
        ffi.cdef(cdef)
        sources = [str(s) for s in runtime_sources()] + [str(work / f) for f in extra_files if f.endswith(".c")]
        ffi.set_source(
            name,
            source,
            sources=sources,
            include_dirs=[str(runtime_include_dir()), str(work)],
            extra_compile_args=flags,
            define_macros=defines,
        )
        env_cc = os.environ.get("CC")
        os.environ["CC"] = compiler()
        try:
            ffi.compile(tmpdir=str(work), verbose=False)
        except Exception as e:  # distutils raises its own CompileError / LinkError
            raise CheckFailed(f"C build of {name} failed: {e}") from None
        finally:
            if env_cc is None:
                os.environ.pop("CC", None)
            else:
                os.environ["CC"] = env_cc
        try:
            os.replace(work, folder)
        except OSError:  # another process won the race: use its build
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    mod = _load_module(name, folder)
    if mod is None:
        raise CheckFailed(f"C build of {name} produced no loadable module in {folder}")
    return mod


def _host_wrapper(prefix: str, header: str) -> str:
    """A batch driver compiled into the host module only (not part of the generated model)."""
    P = prefix.upper()
    return f"""#include "{header}"
#include "stp_fixed.h"
static int stp_host_run_batch(const int16_t *x, int batch, int steps, int16_t *y, int16_t *states, int rank)
{{
    int16_t state[{P}_STATE_SIZE];
    int16_t scratch[{P}_SCRATCH_SIZE];
    int b, rc = 0, ysize = ({P}_FINAL_READOUT ? 1 : steps) * {P}_OUTPUT_SIZE;
    for (b = 0; b < batch && rc == 0; b++) {{
        {prefix}_reset(state);
        rc = {prefix}_run(x + (long)b * steps * {P}_INPUT_SIZE, steps, state, y + (long)b * ysize,
                      states + (long)b * steps * {P}_STATE_SIZE, scratch, rank);
    }}
    return rc;
}}
"""


def build(qgraph: QGraph, prefix: str = "model", sanitize: bool = False, count_ops: bool = False):
    """Emit, compile and load `qgraph` as a cffi module (cached). `count_ops` defines
    STP_COUNT_OPS (counters in lib.stp_ops). `sanitize` is not loadable in-process (ASan must
    come first in the process): use run_sanitized, which runs an ASan/UBSan executable."""
    if sanitize:
        raise UserError("an ASan build cannot be loaded into Python: use stapes.host.run_sanitized")
    check_prefix(prefix)
    files = emit(qgraph, prefix)
    flags = WARNING_FLAGS + OPT_FLAGS
    defines = [("STP_COUNT_OPS", "1")] if count_ops else []
    name = f"_stapes_{prefix}_" + _digest(
        [*_runtime_blob(), *files.items(), flags, defines, compiler(), sys.version_info[:2]]
    )
    cdef = f"""
int {prefix}_run(const int16_t *x, int steps, int16_t *state, int16_t *y, int16_t *states, int16_t *scratch, int rank);
int {prefix}_step_rank(const int16_t *x, int16_t *state, int16_t *y, int16_t *scratch, int rank);
void {prefix}_reset(int16_t *state);
int stp_host_run_batch(const int16_t *x, int batch, int steps, int16_t *y, int16_t *states, int rank);
""" + (_CDEF_OPS if count_ops else "")
    return _compile_module(name, cdef, _host_wrapper(prefix, f"{prefix}.h"), files, flags, defines)


def build_runtime(count_ops: bool = False):
    """The runtime alone, with the model structs exposed (models are filled in at run time)."""
    flags = WARNING_FLAGS + OPT_FLAGS
    defines = [("STP_COUNT_OPS", "1")] if count_ops else []
    name = "_stapes_runtime_" + _digest([*_runtime_blob(), flags, defines, compiler(), sys.version_info[:2]])
    cdef = _CDEF_MODEL + (_CDEF_OPS if count_ops else "")
    return _compile_module(name, cdef, '#include "stp_model.h"\n', {}, flags, defines)


# ---- running ------------------------------------------------------------------------------------
def _read_ops(lib) -> dict:
    return {k: int(getattr(lib.stp_ops, k)) for k in OP_KINDS}


def _zero_ops(lib) -> None:
    for k in OP_KINDS:
        setattr(lib.stp_ops, k, 0)


def _out_shape(q: QGraph, bsz: int, steps: int) -> tuple:
    return (bsz, q.output_size) if q.readout.mode == "final" else (bsz, steps, q.output_size)


def _ptr(ffi, ctype: str, arr: np.ndarray):
    return ffi.cast(ctype, ffi.from_buffer(arr))


def _check_rc(rc: int, rank) -> None:
    if rc == -1:
        raise UserError(f"rank {rank} rejected by the C runtime")
    if rc != 0:
        raise CheckFailed(f"C runtime returned status {rc}")


def run_c(
    qgraph: QGraph,
    x_q: np.ndarray,
    per_frame: bool = False,
    rank: int | None = None,
    prefix: str = "model",
    module=None,
):
    """Run the generated C on x_q int16 (B, T, I) -> (outputs, states, ops).

    One C call for the whole batch, or with per_frame one `<prefix>_step_rank` call per frame
    (the streaming API; its readout then runs every frame, also for a final readout, whose output
    is the last frame's). `ops` is the counters' total (None unless `module` was built with
    count_ops)."""
    x_q = np.ascontiguousarray(check_input(qgraph, x_q))
    r = qgraph.check_rank(rank)
    rank_arg = 0 if rank is None else r
    mod = module if module is not None else build(qgraph, prefix)
    ffi, lib = mod.ffi, mod.lib
    counting = hasattr(lib, "stp_ops")
    if counting:
        _zero_ops(lib)
    bsz, steps, _ = x_q.shape
    n, o = qgraph.hidden_size, qgraph.output_size
    states = np.zeros((bsz, steps, n), dtype=np.int16)
    if not per_frame:
        y = np.zeros(_out_shape(qgraph, bsz, steps), dtype=np.int16)
        rc = lib.stp_host_run_batch(
            _ptr(ffi, "int16_t *", x_q), bsz, steps, _ptr(ffi, "int16_t *", y), _ptr(ffi, "int16_t *", states), rank_arg
        )
        _check_rc(rc, rank)
        return y, states, (_read_ops(lib) if counting else None)
    ys = np.zeros((bsz, steps, o), dtype=np.int16)
    state = np.zeros(n, dtype=np.int16)
    scratch = ffi.new("int16_t[]", (3 * n if qgraph.kind == "mgu" else n) + qgraph.rank)
    step = getattr(lib, f"{prefix}_step_rank")
    sp, yp = _ptr(ffi, "int16_t *", state), None
    for b in range(bsz):
        getattr(lib, f"{prefix}_reset")(sp)
        for t in range(steps):
            yp = _ptr(ffi, "int16_t *", ys[b, t])
            _check_rc(step(_ptr(ffi, "const int16_t *", x_q[b, t]), sp, yp, scratch, rank_arg), rank)
            states[b, t] = state
    y = ys[:, -1] if qgraph.readout.mode == "final" else ys
    return y, states, (_read_ops(lib) if counting else None)


class _RuntimeModel:
    """An stp_model_t filled from a QGraph's arrays (kept alive with the arrays it points to)."""

    def __init__(self, ffi, q: QGraph):
        self.keep = []
        self.ffi = ffi
        m = ffi.new("stp_model_t *")
        m.cell = 1 if q.kind == "mgu" else 0
        m.input_size, m.hidden_size, m.output_size, m.rank_max = q.input_size, q.hidden_size, q.output_size, q.rank
        tables = activation_tables(q)
        for name, g in q.gates.items():
            gs = m.gate_f if name == "f" else m.gate_h
            self._mat(gs.w, g.w.data)
            if g.lowrank:
                self._mat(gs.b, g.u.b.data)
                self._mat(gs.a, g.u.a.data)
                gs.z_shift = self._arr("int8_t *", g.u.z_shift)
            else:
                self._mat(gs.u, g.u.data)
            gs.x_shift = self._arr("int8_t *", g.x_shift)
            gs.h_shift = self._arr("int8_t *", g.h_shift)
            gs.bias = self._arr("int32_t *", g.bias.data)
            gs.table = self._arr("int16_t *", tables[g.activation])
        r = q.readout
        self._mat(m.readout.w, r.w.data)
        m.readout.shift = self._arr("int8_t *", r.shift)
        m.readout.bias = self._arr("int32_t *", r.bias.data)
        m.readout.table = self._arr("int16_t *", tables["sigmoid"]) if r.activation == "sigmoid" else ffi.NULL
        m.readout.mode = 1 if r.mode == "final" else 0
        self.model = m

    def _arr(self, ctype: str, a: np.ndarray):
        a = np.ascontiguousarray(a)
        self.keep.append(a)
        return _ptr(self.ffi, ctype, a)

    def _mat(self, mat, data: np.ndarray) -> None:
        if data.dtype == np.int8:
            mat.w8 = self._arr("int8_t *", data)
        else:
            mat.w16 = self._arr("int16_t *", data)
        mat.rows, mat.cols = data.shape


def run_runtime(qgraph: QGraph, x_q: np.ndarray, rank: int | None = None, count_ops: bool = False):
    """Run a QGraph through the compiled runtime (no code generation): (outputs, states, ops)."""
    x_q = np.ascontiguousarray(check_input(qgraph, x_q))
    r = qgraph.check_rank(rank)
    mod = build_runtime(count_ops)
    ffi, lib = mod.ffi, mod.lib
    model = _RuntimeModel(ffi, qgraph)
    if count_ops:
        _zero_ops(lib)
    bsz, steps, _ = x_q.shape
    n = qgraph.hidden_size
    y = np.zeros(_out_shape(qgraph, bsz, steps), dtype=np.int16)
    states = np.zeros((bsz, steps, n), dtype=np.int16)
    state = np.zeros(n, dtype=np.int16)
    scratch = ffi.new("int16_t[]", lib.stp_model_scratch_size(model.model))
    for b in range(bsz):
        state[:] = 0
        rc = lib.stp_model_run(
            model.model,
            _ptr(ffi, "int16_t *", x_q[b]),
            steps,
            _ptr(ffi, "int16_t *", state),
            _ptr(ffi, "int16_t *", y[b]),
            _ptr(ffi, "int16_t *", states[b]),
            scratch,
            0 if rank is None else r,
        )
        _check_rc(rc, rank)
    return y, states, (_read_ops(lib) if count_ops else None)


# ---- sanitizer build (a subprocess) -------------------------------------------------------------
_DRIVER = """#include <stdio.h>
#include <stdlib.h>
#include "{p}.h"
/* argv: in.bin out.bin batch steps rank. in: int16 (batch, steps, I); out: y then states. */
int main(int argc, char **argv)
{{
    FILE *fi, *fo;
    int batch, steps, rank, b, rc = 0, ysize;
    int16_t *x, *y, *states, state[{P}_STATE_SIZE], scratch[{P}_SCRATCH_SIZE];
    if (argc != 6) return 2;
    batch = atoi(argv[3]); steps = atoi(argv[4]); rank = atoi(argv[5]);
    ysize = ({P}_FINAL_READOUT ? 1 : steps) * {P}_OUTPUT_SIZE;
    x = malloc(sizeof(int16_t) * (size_t)(batch * steps * {P}_INPUT_SIZE));
    y = malloc(sizeof(int16_t) * (size_t)(batch * ysize));
    states = malloc(sizeof(int16_t) * (size_t)(batch * steps * {P}_STATE_SIZE));
    fi = fopen(argv[1], "rb");
    if (!x || !y || !states || !fi) return 3;
    if (fread(x, sizeof(int16_t), (size_t)(batch * steps * {P}_INPUT_SIZE), fi)
        != (size_t)(batch * steps * {P}_INPUT_SIZE)) return 4;
    fclose(fi);
    for (b = 0; b < batch && rc == 0; b++) {{
        {p}_reset(state);
        rc = {p}_run(x + b * steps * {P}_INPUT_SIZE, steps, state, y + b * ysize,
                   states + b * steps * {P}_STATE_SIZE, scratch, rank);
    }}
    if (rc != 0) return 5;
    fo = fopen(argv[2], "wb");
    if (!fo) return 6;
    fwrite(y, sizeof(int16_t), (size_t)(batch * ysize), fo);
    fwrite(states, sizeof(int16_t), (size_t)(batch * steps * {P}_STATE_SIZE), fo);
    fclose(fo);
    free(x); free(y); free(states);
    return 0;
}}
"""


def run_sanitized(
    qgraph: QGraph, x_q: np.ndarray, rank: int | None = None, prefix: str = "model", cc: str | None = None
):
    """Build the generated C + runtime + a file driver with ASan/UBSan (-fno-sanitize-recover)
    and run it: (outputs, states). Any sanitizer report fails with CheckFailed."""
    x_q = np.ascontiguousarray(check_input(qgraph, x_q))
    r = qgraph.check_rank(rank)
    files = emit(qgraph, prefix)
    files["driver.c"] = _DRIVER.format(p=prefix, P=prefix.upper())
    with tempfile.TemporaryDirectory(prefix="stapes-asan-") as tmp:
        tmp = Path(tmp)
        for fname, text in files.items():
            (tmp / fname).write_text(text)
        exe = tmp / "model_asan"
        cmd = [
            cc or compiler(),
            *WARNING_FLAGS,
            "-O1",
            *ARCH_FLAGS,
            *SANITIZE_FLAGS,
            f"-I{runtime_include_dir()}",
            f"-I{tmp}",
            *map(str, runtime_sources()),
            str(tmp / f"{prefix}.c"),
            str(tmp / "driver.c"),
            "-o",
            str(exe),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise CheckFailed(f"sanitizer build failed: {proc.stderr.strip()[:2000]}")
        return _run_sanitized_exe([str(exe)], tmp, qgraph, x_q, rank, r)


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
    ysize = int(np.prod(_out_shape(qgraph, bsz, steps)))
    return (
        raw[:ysize].reshape(_out_shape(qgraph, bsz, steps)).copy(),
        raw[ysize:].reshape(bsz, steps, qgraph.hidden_size).copy(),
    )


# ---- the helpers of stp_fixed.h, vectorised, for the twin tests ----------------------------------
_HELPERS_SRC = """#include "stp_fixed.h"
static void stp_host_sat16(const int64_t *v, int16_t *out, long n)
{ long k; for (k = 0; k < n; k++) out[k] = stp_sat16(v[k]); }
static void stp_host_shift_round(const int64_t *v, const int *s, int64_t *out, long n)
{ long k; for (k = 0; k < n; k++) out[k] = stp_shift_round_s64(v[k], s[k]); }
static void stp_host_mul_q15(const int16_t *a, const int16_t *b, int16_t *out, long n)
{ long k; for (k = 0; k < n; k++) out[k] = stp_mul_q15(a[k], b[k]); }
static void stp_host_blend_q15(const int16_t *h, const int16_t *c, const int16_t *f, int16_t *out, long n)
{ long k; for (k = 0; k < n; k++) out[k] = stp_blend_q15(h[k], c[k], f[k]); }
static void stp_host_lut_q15(const int16_t *v, const int16_t *table, int16_t *out, long n)
{ long k; for (k = 0; k < n; k++) out[k] = stp_lut_q15(v[k], table); }
"""
_HELPERS_CDEF = """
void stp_host_sat16(const int64_t *v, int16_t *out, long n);
void stp_host_shift_round(const int64_t *v, const int *s, int64_t *out, long n);
void stp_host_mul_q15(const int16_t *a, const int16_t *b, int16_t *out, long n);
void stp_host_blend_q15(const int16_t *h, const int16_t *c, const int16_t *f, int16_t *out, long n);
void stp_host_lut_q15(const int16_t *v, const int16_t *table, int16_t *out, long n);
"""
# The AVX2 forms of the helpers (test only): python/stp_test_vector.c, appended to the Helpers
# module's source and compiled nowhere else. Each returns -1 when the build has no AVX2. The file
# is not package data (a wheel has no .c in stapes.host): there Helpers has the scalar helpers only.
_VECTOR_SRC_FILE = Path(__file__).with_name("stp_test_vector.c")
_VECTOR_CDEF = """
int stp_test_vector_compiled(void);
int stp_test_sat16_s64x4(const int64_t *v, int16_t *out, long n);
int stp_test_shift_round_s64x4(const int64_t *v, const int8_t *s, int64_t *out, long n);
int stp_test_shift_round_s32x8(const int32_t *v, const int8_t *s, int32_t *out, long n);
int stp_test_mul_q15_x8(const int16_t *a, const int16_t *b, int16_t *out, long n);
int stp_test_blend_q15_x8(const int16_t *h, const int16_t *c, const int16_t *f, int16_t *out, long n);
int stp_test_lut_q15_x8(const int16_t *v, const int16_t *table, int16_t *out, long n);
long stp_test_mul_q15_x8_rows(const int16_t *as, long na, int16_t *first);
"""
NO_AVX2_REASON = "host CPU has no AVX2; the vector helpers are not compiled"


class Helpers:
    """numpy-in, numpy-out access to the C helpers (the twins of stapes.fixed.fixedpoint)."""

    def __init__(self):
        flags = WARNING_FLAGS + OPT_FLAGS
        source, cdef = _HELPERS_SRC, _HELPERS_CDEF
        vector_src = _VECTOR_SRC_FILE.read_text() if _VECTOR_SRC_FILE.is_file() else None
        if vector_src is not None:
            source, cdef = source + vector_src, cdef + _VECTOR_CDEF
        name = "_stapes_helpers_" + _digest([*_runtime_blob(), source, flags, compiler(), sys.version_info[:2]])
        self.mod = _compile_module(name, cdef, source, {}, flags, [])
        # Why the AVX2 forms cannot be tested here (None: they can).
        if vector_src is None:
            self.vector_skip_reason = f"the test-only source {_VECTOR_SRC_FILE.name} is not installed"
        elif not self.mod.lib.stp_test_vector_compiled():
            self.vector_skip_reason = NO_AVX2_REASON
        else:
            self.vector_skip_reason = None

    def _buf(self, a: np.ndarray, ctype: str | None = None):
        ctype = (
            ctype
            or {
                np.dtype(np.int16): "int16_t[]",
                np.dtype(np.int64): "int64_t[]",
                np.dtype(np.intc): "int[]",
                np.dtype(np.int8): "int8_t[]",
            }[a.dtype]
        )
        return self.mod.ffi.from_buffer(ctype, a)

    def _call(self, fn, out_dtype, *arrays):
        arrays = [np.ascontiguousarray(a) for a in arrays]
        out = np.empty(arrays[0].shape, dtype=out_dtype)
        fn(*(self._buf(a) for a in arrays), self._buf(out), out.size)
        return out

    def sat16(self, v):
        return self._call(self.mod.lib.stp_host_sat16, np.int16, np.asarray(v, dtype=np.int64))

    def shift_round(self, v, s):
        v, s = np.broadcast_arrays(np.asarray(v, dtype=np.int64), np.asarray(s, dtype=np.intc))
        return self._call(self.mod.lib.stp_host_shift_round, np.int64, v, s)

    def mul_q15(self, a, b):
        a, b = np.broadcast_arrays(np.asarray(a, dtype=np.int16), np.asarray(b, dtype=np.int16))
        return self._call(self.mod.lib.stp_host_mul_q15, np.int16, a, b)

    def blend_q15(self, h, c, f):
        h, c, f = np.broadcast_arrays(*(np.asarray(a, dtype=np.int16) for a in (h, c, f)))
        return self._call(self.mod.lib.stp_host_blend_q15, np.int16, h, c, f)

    def lut_q15(self, v, table):
        v = np.ascontiguousarray(np.asarray(v, dtype=np.int16))
        table = np.ascontiguousarray(np.asarray(table, dtype=np.int16))
        out = np.empty(v.shape, dtype=np.int16)
        self.mod.lib.stp_host_lut_q15(self._buf(v), self._buf(table), self._buf(out), v.size)
        return out

    # ---- the AVX2 forms (stp_test_vector.c): same arguments and results as the scalar ones ----
    def _vector(self, fname: str, out_dtype, *arrays):
        if self.vector_skip_reason is not None:
            raise CheckFailed(self.vector_skip_reason)
        arrays = [np.ascontiguousarray(a) for a in arrays]
        out = np.empty(arrays[0].shape, dtype=out_dtype)
        # int32 arrays are passed as int32_t (cffi tells int32_t from int, numpy does not)
        bufs = [self._buf(a, "int32_t[]" if a.dtype == np.int32 else None) for a in [*arrays, out]]
        rc = getattr(self.mod.lib, fname)(*bufs, out.size)
        if rc != 0:
            raise CheckFailed(f"{fname} returned {rc}")
        return out

    @staticmethod
    def _shifts(s, lo: int, hi: int) -> np.ndarray:
        s = np.asarray(s)
        if s.size and (s.min() < lo or s.max() > hi):
            raise ValueError(f"shifts must lie in [{lo}, {hi}] for this helper")
        return s.astype(np.int8)

    def sat16_s64x4(self, v):
        """stp_sat16_s64x4 (4 int64 lanes, stored with stp_store_s16x4): twin of sat16."""
        return self._vector("stp_test_sat16_s64x4", np.int16, np.asarray(v, dtype=np.int64))

    def shift_round_s64x4(self, v, s):
        """stp_shift_round_s64x4 (int8 shifts through stp_load_s8x4): twin of shift_round."""
        v, s = np.broadcast_arrays(np.asarray(v, dtype=np.int64), self._shifts(s, -16, 31))
        return self._vector("stp_test_shift_round_s64x4", np.int64, v, s)

    def shift_round_s32x8(self, v, s):
        """stp_shift_round_s32x8 (int32 lanes, shifts 1..31 only): twin of shift_round."""
        v64 = np.asarray(v, dtype=np.int64)
        if v64.size and (v64.min() < -(1 << 31) or v64.max() >= (1 << 31)):
            raise ValueError("stp_shift_round_s32x8 takes int32 values")
        v, s = np.broadcast_arrays(v64.astype(np.int32), self._shifts(s, 1, 31))
        return self._vector("stp_test_shift_round_s32x8", np.int32, v, s)

    def mul_q15_x8(self, a, b):
        a, b = np.broadcast_arrays(np.asarray(a, dtype=np.int16), np.asarray(b, dtype=np.int16))
        return self._vector("stp_test_mul_q15_x8", np.int16, a, b)

    def blend_q15_x8(self, h, c, f):
        h, c, f = np.broadcast_arrays(*(np.asarray(a, dtype=np.int16) for a in (h, c, f)))
        return self._vector("stp_test_blend_q15_x8", np.int16, h, c, f)

    def lut_q15_x8(self, v, table):
        table = np.ascontiguousarray(np.asarray(table, dtype=np.int16))
        if table.shape != (LUT_SIZE,):
            raise ValueError(f"a table has {LUT_SIZE} entries (the gather reads up to entry {LUT_SIZE - 1})")
        v = np.ascontiguousarray(np.asarray(v, dtype=np.int16))
        out = np.empty(v.shape, dtype=np.int16)
        if self.vector_skip_reason is not None:
            raise CheckFailed(self.vector_skip_reason)
        rc = self.mod.lib.stp_test_lut_q15_x8(self._buf(v), self._buf(table), self._buf(out), v.size)
        if rc != 0:
            raise CheckFailed(f"stp_test_lut_q15_x8 returned {rc}")
        return out

    def mul_q15_x8_rows(self, a) -> tuple[int, tuple | None]:
        """stp_mul_q15_x8 against the scalar stp_mul_q15 in C, each value of `a` with every int16 b
        (all 2^32 pairs for a = every int16): (mismatch count, first (a, b, vector, scalar) or None)."""
        if self.vector_skip_reason is not None:
            raise CheckFailed(self.vector_skip_reason)
        a = np.ascontiguousarray(np.asarray(a, dtype=np.int16))
        first = self.mod.ffi.new("int16_t[4]")
        bad = int(self.mod.lib.stp_test_mul_q15_x8_rows(self._buf(a), a.size, first))
        return bad, (tuple(int(x) for x in first) if bad else None)


# ---- the runtime under ASan/UBSan with models read from a file (one build for any model) ---------
_RUNTIME_DRIVER = r"""#include <stdio.h>
#include <stdlib.h>
#include "stp_model.h"
/* argv: model.txt in.bin out.bin batch steps rank. model.txt: whitespace-separated integers
 * (see stapes.host.harness._model_text). in: int16 (batch, steps, I); out: y then states. */
static FILE *mf;
static void *blocks[64];
static int nblocks;
static long rd(void) { long v; if (fscanf(mf, "%ld", &v) != 1) exit(7); return v; }
static void *take(size_t bytes) { void *p = malloc(bytes ? bytes : 1); if (!p || nblocks == 64) exit(8); blocks[nblocks++] = p; return p; }
static const int8_t *r8(int n) { int8_t *p = take((size_t)n); int k; for (k = 0; k < n; k++) p[k] = (int8_t)rd(); return p; }
static const int16_t *r16(int n) { int16_t *p = take(sizeof(int16_t) * (size_t)n); int k; for (k = 0; k < n; k++) p[k] = (int16_t)rd(); return p; }
static const int32_t *r32(int n) { int32_t *p = take(sizeof(int32_t) * (size_t)n); int k; for (k = 0; k < n; k++) p[k] = (int32_t)rd(); return p; }
static void rmat(stp_mat_t *m)
{
    int bits = (int)rd();
    m->rows = (int)rd(); m->cols = (int)rd();
    if (bits == 8) m->w8 = r8(m->rows * m->cols); else m->w16 = r16(m->rows * m->cols);
}
static void rgate(stp_gate_t *g, int n)
{
    int lowrank = (int)rd(), rank;
    rmat(&g->w);
    if (lowrank) { rank = (int)rd(); rmat(&g->b); rmat(&g->a); g->z_shift = r8(rank); }
    else rmat(&g->u);
    g->x_shift = r8(n); g->h_shift = r8(n); g->bias = r32(n); g->table = r16(STP_LUT_SIZE);
}
int main(int argc, char **argv)
{
    static stp_model_t m;
    FILE *fi, *fo;
    int batch, steps, rank, b, rc = 0, ysize, n, in, out, k;
    int16_t *x, *y, *states, *state, *scratch;
    if (argc != 7) return 2;
    mf = fopen(argv[1], "r");
    if (!mf) return 3;
    m.cell = (int)rd(); m.input_size = (int)rd(); m.hidden_size = (int)rd(); m.output_size = (int)rd();
    m.rank_max = (int)rd();
    n = m.hidden_size; in = m.input_size; out = m.output_size;
    if (m.cell == STP_CELL_MGU) rgate(&m.gate_f, n);
    rgate(&m.gate_h, n);
    rmat(&m.readout.w); m.readout.shift = r8(out); m.readout.bias = r32(out);
    m.readout.table = rd() ? r16(STP_LUT_SIZE) : 0;
    m.readout.mode = (int)rd();
    fclose(mf);
    batch = atoi(argv[4]); steps = atoi(argv[5]); rank = atoi(argv[6]);
    ysize = (m.readout.mode == STP_READOUT_FINAL ? 1 : steps) * out;
    x = malloc(sizeof(int16_t) * (size_t)(batch * steps * in));
    y = malloc(sizeof(int16_t) * (size_t)(batch * ysize));
    states = malloc(sizeof(int16_t) * (size_t)(batch * steps * n));
    state = malloc(sizeof(int16_t) * (size_t)n);
    scratch = malloc(sizeof(int16_t) * (size_t)stp_model_scratch_size(&m));  /* exact size: ASan checks it */
    fi = fopen(argv[2], "rb");
    if (!x || !y || !states || !state || !scratch || !fi) return 4;
    if (fread(x, sizeof(int16_t), (size_t)(batch * steps * in), fi) != (size_t)(batch * steps * in)) return 5;
    fclose(fi);
    for (b = 0; b < batch && rc == 0; b++) {
        stp_reset_s16(state, n);
        rc = stp_model_run(&m, x + b * steps * in, steps, state, y + b * ysize, states + b * steps * n, scratch, rank);
    }
    if (rc != 0) return 6;
    fo = fopen(argv[3], "wb");
    if (!fo) return 9;
    fwrite(y, sizeof(int16_t), (size_t)(batch * ysize), fo);
    fwrite(states, sizeof(int16_t), (size_t)(batch * steps * n), fo);
    fclose(fo);
    free(x); free(y); free(states); free(state); free(scratch);
    for (k = 0; k < nblocks; k++) free(blocks[k]);
    return 0;
}
"""


def _model_text(q: QGraph) -> str:
    """The integers of a QGraph in the order _RUNTIME_DRIVER reads them."""
    parts: list = [1 if q.kind == "mgu" else 0, q.input_size, q.hidden_size, q.output_size, q.rank]
    tables = activation_tables(q)

    def mat(a: np.ndarray):
        parts.extend([8 if a.dtype == np.int8 else 16, *a.shape, *a.reshape(-1).tolist()])

    for g in q.gate_list():
        parts.append(1 if g.lowrank else 0)
        mat(g.w.data)
        if g.lowrank:
            parts.append(g.rank)
            mat(g.u.b.data)
            mat(g.u.a.data)
            parts.extend(g.u.z_shift.tolist())
        else:
            mat(g.u.data)
        parts.extend([*g.x_shift.tolist(), *g.h_shift.tolist(), *g.bias.data.tolist(), *tables[g.activation].tolist()])
    r = q.readout
    mat(r.w.data)
    parts.extend([*r.shift.tolist(), *r.bias.data.tolist()])
    parts.extend([1, *tables["sigmoid"].tolist()] if r.activation == "sigmoid" else [0])
    parts.append(1 if r.mode == "final" else 0)
    return " ".join(str(int(v)) for v in parts) + "\n"


def sanitized_runtime_exe(cc: str | None = None) -> Path:
    """The runtime + a model-file driver built with ASan/UBSan (cached like the cffi modules)."""
    cc = cc or compiler()
    key = _digest([*_runtime_blob(), _RUNTIME_DRIVER, SANITIZE_FLAGS, ARCH_FLAGS, WARNING_FLAGS, cc])
    exe = cache_dir() / f"asan-runtime-{key}" / "stp_runtime_asan"
    if exe.is_file():
        return exe
    cache_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".asan-", dir=cache_dir()))
    try:
        (work / "driver.c").write_text(_RUNTIME_DRIVER)
        proc = subprocess.run(
            [
                cc,
                *WARNING_FLAGS,
                "-O1",
                *ARCH_FLAGS,
                *SANITIZE_FLAGS,
                f"-I{runtime_include_dir()}",
                *map(str, runtime_sources()),
                str(work / "driver.c"),
                "-o",
                str(work / "stp_runtime_asan"),
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise CheckFailed(f"sanitizer build failed: {proc.stderr.strip()[:2000]}")
        try:
            os.replace(work, exe.parent)
        except OSError:
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return exe


def run_runtime_sanitized(qgraph: QGraph, x_q: np.ndarray, rank: int | None = None):
    """run_runtime, but in the ASan/UBSan runtime executable: (outputs, states)."""
    x_q = np.ascontiguousarray(check_input(qgraph, x_q))
    r = qgraph.check_rank(rank)
    exe = sanitized_runtime_exe()
    with tempfile.TemporaryDirectory(prefix="stapes-asan-") as tmp:
        tmp = Path(tmp)
        (tmp / "model.txt").write_text(_model_text(qgraph))
        return _run_sanitized_exe([str(exe), str(tmp / "model.txt")], tmp, qgraph, x_q, rank, r)
