"""Building C on the host: flags, the compiler, the runtime's build arguments, cached cffi modules.

* ``build(qgraph, prefix)`` compiles ``emit(qgraph, prefix)`` with the runtime and the batch
  driver ``c/stp_host_batch.c`` into a cffi API-mode module; ``build_runtime()`` compiles the
  runtime alone, with the model structs exposed (models are filled in at run time).
* ``runtime_cflags()`` owns the include folders and defines of every host build of the runtime
  (cffi modules and sanitizer executables); ``c_build`` compiles sources with the runtime.
* ``cached_build`` is the one race-safe publish into the cache: build in a temporary folder,
  rename it into place, and use the other build when another process got there first.

The C programs of the harness are files under ``c/`` (package data). Modules are cached under
``stapes.fsutil.cache_dir("cffi")``, keyed by a hash of the sources, flags, compiler, Python and
cffi versions, so a warm cache loads in milliseconds. The compiler is ``$CC`` (default gcc),
invoked directly: no process-global state is changed to choose it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from stapes.emit.model_c import check_prefix, emit
from stapes.emit.model_desc import STRUCTS
from stapes.errors import CheckFailed, UserError
from stapes.fixed.reference import OP_KINDS
from stapes.fsutil import cache_dir as stapes_cache_dir
from stapes.ir.qgraph import QGraph

WARNING_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Wconversion", "-Werror"]


def host_arch_flags() -> list[str]:
    """["-mavx2"] on an x86-64 Linux host whose CPU has AVX2, else []: the runtime's x86 kernels
    then use 256-bit VPMADDWD (SSE2, part of x86-64, is the fallback). Integer code only, so the
    flag cannot change numerics; it is part of every cache key, and a CPU without AVX2 gets []."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return ["-mavx2"] if "avx2" in flags else []


ARCH_FLAGS = host_arch_flags()
# Speed only (numerics are flag-independent): -fno-wrapv keeps vectorisation open (nothing here
# overflows); -fno-semantic-interposition lets -fPIC code inline.
OPT_FLAGS = ["-O3", "-fno-semantic-interposition", "-fno-wrapv", *ARCH_FLAGS]
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]
# Every host build of the runtime enables its host SIMD kernels (runtime_c/host, x86 SSE2/AVX2).
HOST_DEFINES = ["-DSTP_HOST_SIMD"]


# ---- where things are -----------------------------------------------------------------------
def runtime_include_dir() -> Path:
    """runtime_c/include (stp_fixed.h, stp_model.h), found through importlib.resources."""
    return Path(str(importlib.resources.files("stapes.runtime_c") / "include"))


def runtime_include_dirs() -> list[Path]:
    """runtime_c/include and runtime_c/host (the host SIMD kernels, enabled by STP_HOST_SIMD)."""
    return [runtime_include_dir(), Path(str(importlib.resources.files("stapes.runtime_c") / "host"))]


def runtime_cflags() -> list[str]:
    """The -I and -D flags of every host build of the runtime: the one owner of both."""
    return [*(f"-I{d}" for d in runtime_include_dirs()), *HOST_DEFINES]


def runtime_sources() -> list[Path]:
    """The runtime's .c files, sorted (cross-compile them with the generated model)."""
    src = importlib.resources.files("stapes.runtime_c") / "src"
    return sorted(Path(str(src / name.name)) for name in src.iterdir() if name.name.endswith(".c"))


def host_c_dir() -> Path:
    """python/c/: the harness's C programs (package data of stapes.host)."""
    return Path(str(importlib.resources.files("stapes.host") / "c"))


def host_c(name: str) -> Path:
    """One C file of the harness."""
    return host_c_dir() / name


def cache_dir() -> Path:
    """Where the compiled modules and sanitizer executables are kept."""
    return stapes_cache_dir("cffi")


def compiler() -> str:
    return os.environ.get("CC", "gcc")


def model_defines(prefix: str) -> list[str]:
    """The defines that name a generated model to the host programs (c/stp_host_model.h)."""
    check_prefix(prefix)
    return [f'-DSTP_HOST_HEADER="{prefix}.h"', f"-DSTP_HOST_PREFIX={prefix}", f"-DSTP_HOST_PREFIX_UC={prefix.upper()}"]


# ---- cache keys and the publish -----------------------------------------------------------------
def digest(parts: Iterable) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def _source_blob() -> list[bytes]:
    """Name and text of every file a build may read: the runtime's and the harness's C."""
    files = [*runtime_sources(), *(f for d in runtime_include_dirs() if d.is_dir() for f in sorted(d.iterdir()))]
    files += sorted(host_c_dir().iterdir())
    return [f.name.encode() + b"\0" + f.read_bytes() for f in files if f.is_file()]


def build_key(*parts) -> str:
    """A cache key over `parts`, every C source and header a build may read, the compiler and
    the runtime's flags."""
    return digest([*_source_blob(), compiler(), *runtime_cflags(), *parts])


def cached_build(folder: Path, artefact: str, make: Callable[[Path], None]) -> Path:
    """``folder / artefact``, built at most once: `make(work)` writes `artefact` into a fresh
    temporary folder beside `folder`, which is then renamed to `folder` in one step. A process
    that loses the race to publish uses the winner's build; a folder without `artefact` (an
    interrupted older build) is rebuilt."""
    target = folder / artefact
    if target.is_file():
        return target
    if folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        make(work)
        if not (work / artefact).is_file():
            raise CheckFailed(f"the build of {folder.name} produced no {artefact}")
        try:
            os.replace(work, folder)
        except OSError:  # another process published first (the folder exists, not empty)
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if not target.is_file():
        raise CheckFailed(f"{target} is missing after its build")
    return target


# ---- compiling ------------------------------------------------------------------------------------
def c_build(
    out: Path, sources: Iterable[Path], flags: list[str], include_dirs: Iterable[Path] = (), cc: str | None = None
) -> None:
    """Compile `sources` with the runtime into `out` (an executable, or a shared object when
    `flags` say so), with the runtime's flags and c/ on the include path. CheckFailed with the
    compiler's messages on failure."""
    cmd = [
        cc or compiler(),
        *flags,
        *runtime_cflags(),
        f"-I{host_c_dir()}",
        *(f"-I{d}" for d in include_dirs),
        *map(str, [*runtime_sources(), *sources]),
        "-o",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CheckFailed(f"C build of {out.name} failed: {proc.stderr.strip()[:2000]}")


def header_cdef(text: str) -> str:
    """A C header's declarations as a cffi cdef: comments, C++ linkage guards and preprocessor
    lines left out (the harness's headers keep their declarations free of macros)."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"#ifdef __cplusplus.*?#endif", "", text, flags=re.S)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")) + "\n"


def _shared_flags() -> list[str]:
    link = ["-bundle", "-undefined", "dynamic_lookup"] if sys.platform == "darwin" else ["-shared"]
    return ["-fPIC", *link]


def _python_includes() -> list[Path]:
    paths = sysconfig.get_paths()
    return sorted({Path(paths["include"]), Path(paths["platinclude"])})


@functools.cache
def _cffi_version() -> str:
    return importlib.metadata.version("cffi")


_loaded: dict[str, object] = {}


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _loaded[name] = mod
    return mod


def compile_module(
    stem: str,
    cdef: str,
    preamble: str,
    flags: list[str],
    sources: Iterable[Path] = (),
    files: dict[str, str] | None = None,
):
    """Compile (once per cache key) and load a cffi API-mode module: `preamble` (its C source)
    with `sources`, the runtime and `files` (name -> text, written beside it; its .c files are
    compiled too). cffi only writes the wrapper's C; the compiler builds the shared object."""
    files = files or {}
    sources = list(sources)
    name = f"_stapes_{stem}_" + build_key(
        cdef,
        preamble,
        *flags,
        *(f"{k}\0{v}" for k, v in files.items()),
        *(s.name for s in sources),
        sys.version_info[:2],
        _cffi_version(),
    )
    if name in _loaded:
        return _loaded[name]
    so_name = name + (sysconfig.get_config_var("EXT_SUFFIX") or ".so")

    def make(work: Path) -> None:
        import cffi

        for fname, text in files.items():
            (work / fname).write_text(text)
        ffi = cffi.FFI()
        ffi.cdef(cdef)
        ffi.set_source(name, preamble, compiler_verbose=False)  # emit_c_code would print "generating ..."
        wrapper = work / f"{name}.c"
        ffi.emit_c_code(str(wrapper))
        generated = [work / f for f in files if f.endswith(".c")]
        c_build(
            work / so_name, [wrapper, *generated, *sources], [*flags, *_shared_flags()], [work, *_python_includes()]
        )

    return _load(name, cached_build(cache_dir() / name, so_name, make))


# ---- the cdefs ---------------------------------------------------------------------------------
# Status codes: read from the runtime's headers when the module is compiled (macros or enum constants).
STATUS_CDEF = "static const int STP_OK;\nstatic const int STP_ERR_RANK;\nstatic const int STP_ERR_ARG;\n"


def _ops_cdef() -> str:
    fields = " ".join(f"uint64_t {k};" for k in OP_KINDS)
    return f"typedef struct {{ {fields} }} stp_op_counts_t;\nextern stp_op_counts_t stp_ops;\n"


def _structs_cdef() -> str:
    """The model structs of stp_model.h, from stapes.emit.model_desc.STRUCTS (their one mirror)."""
    out = []
    for ctype, fields in STRUCTS.items():
        body = " ".join(f"{t} {name};" for name, t in fields)
        out.append(f"typedef struct {{ {body} }} {ctype};")
    return "\n".join(out) + "\n"


_RUNTIME_CDEF = """
int stp_model_scratch_size(const stp_model_t *m);
int stp_model_step(const stp_model_t *m, const int16_t *x, int16_t *state, int16_t *y, int16_t *scratch, int rank);
int stp_model_run(const stp_model_t *m, const int16_t *x, int steps, int16_t *state, int16_t *y,
                  int16_t *states, int16_t *scratch, int rank);
"""


def _build_flags(count_ops: bool) -> list[str]:
    return [*WARNING_FLAGS, *OPT_FLAGS, *(["-DSTP_COUNT_OPS=1"] if count_ops else [])]


# ---- the modules ---------------------------------------------------------------------------------
def build(qgraph: QGraph, prefix: str = "model", sanitize: bool = False, count_ops: bool = False):
    """Emit, compile and load `qgraph` as a cffi module (cached): lib has ``<prefix>_run``,
    ``<prefix>_step_rank``, ``<prefix>_reset``, ``stp_host_run_batch`` and the status codes.
    `count_ops` defines STP_COUNT_OPS (counters in lib.stp_ops). `sanitize` is not loadable
    in-process (ASan must come first in the process): use run_sanitized, which runs an ASan/UBSan
    executable."""
    if sanitize:
        raise UserError("an ASan build cannot be loaded into Python: use stapes.host.run_sanitized")
    files = emit(qgraph, prefix)
    cdef = header_cdef(files[f"{prefix}.h"]) + header_cdef(host_c("stp_host_model.h").read_text()) + STATUS_CDEF
    return compile_module(
        prefix,
        cdef + (_ops_cdef() if count_ops else ""),
        '#include "stp_host_model.h"\n#include "stp_fixed.h"\n',
        [*_build_flags(count_ops), *model_defines(prefix)],
        sources=[host_c("stp_host_batch.c")],
        files=files,
    )


def build_runtime(count_ops: bool = False):
    """The runtime alone, with the model structs exposed (models are filled in at run time)."""
    cdef = _structs_cdef() + _RUNTIME_CDEF + STATUS_CDEF + (_ops_cdef() if count_ops else "")
    return compile_module("runtime", cdef, '#include "stp_model.h"\n', _build_flags(count_ops))
