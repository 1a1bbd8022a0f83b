"""Boards: profiles, cross-builds, qemu runs, instruction counts and sizes.

A board is a folder `boards/<name>/` holding `board.toml` (core, clock, memories, ISA features,
build flags, qemu machine, cost model). Boards with `kind = "qemu"` run under qemu-system-arm;
`kind = "estimate"` profiles only feed the budget (cores qemu cannot run).

qemu is functional, not cycle-accurate: it proves the bits on the real instruction set and gives
exact, deterministic instruction counts (a TCG plugin, or `-singlestep -d exec,nochain` when
the plugin cannot be built), never cycles.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

try:
    import tomllib                 # Python >= 3.11
except ModuleNotFoundError:        # Python 3.10: the same parser as a package
    import tomli as tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from stapes.errors import CheckFailed, UserError

CROSS_TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm", "arm-none-eabi-objdump",
               "qemu-system-arm")
INSTALL_HINT = ("apt-get install --no-install-recommends gcc-arm-none-eabi "
                "libnewlib-arm-none-eabi qemu-system-arm")
# Flags both builds share: the arithmetic must not depend on them (design.md §3), warnings fail.
COMMON_CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Wconversion", "-Werror",
                 "-ffp-contract=off"]
TARGET_CFLAGS = ["-ffunction-sections", "-fdata-sections", "-ffreestanding",
                 "-fno-tree-loop-distribute-patterns", "-fstack-usage"]
DEFAULT_TIMEOUT_S = 60.0


# ----------------------------------------------------------------------------- profiles

@dataclass(frozen=True)
class Board:
    """One board profile (boards/<name>/board.toml)."""

    name: str
    kind: str                      # "qemu" (runs) | "estimate" (profile only)
    description: str
    core: str
    clock_hz: int
    flash_bytes: int
    ram_bytes: int
    isa: dict                      # e.g. {"dsp": True, "fpu": "fpv4-sp-d16", "word_bits": 32}
    cflags: tuple[str, ...]        # target-specific compiler flags
    qemu_machine: str | None
    cost: dict                     # cycles per mac / load / lut / call / other instruction
    insn_model: dict               # instruction model coefficients (calibrated under qemu)
    code_model: dict               # code-size model in bytes
    folder: Path = field(compare=False)

    @property
    def runs(self) -> bool:
        return self.kind == "qemu"

    @property
    def has_dsp(self) -> bool:
        return bool(self.isa.get("dsp", False))


def boards_root() -> Path:
    return Path(str(resources.files("stapes.boards")))


def common_dir() -> Path:
    return boards_root() / "common"


def board_names() -> list[str]:
    return sorted(p.parent.name for p in boards_root().glob("*/board.toml"))


def load_board(name: str) -> Board:
    """The profile of board `name`; a UserError names the known boards when it does not exist."""
    path = boards_root() / name / "board.toml"
    if not path.is_file():
        raise UserError(f"unknown board {name!r} (known: {', '.join(board_names())})")
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    try:
        return Board(
            name=raw["name"], kind=raw["kind"], description=raw["description"], core=raw["core"],
            clock_hz=int(raw["clock_hz"]), flash_bytes=int(raw["flash_bytes"]),
            ram_bytes=int(raw["ram_bytes"]), isa=dict(raw.get("isa", {})),
            cflags=tuple(raw.get("build", {}).get("cflags", [])),
            qemu_machine=raw.get("qemu", {}).get("machine"), cost=dict(raw["cost"]),
            insn_model=dict(raw.get("insn_model", {})), code_model=dict(raw.get("code_model", {})),
            folder=path.parent)
    except KeyError as e:
        raise UserError(f"board profile {path} lacks key {e}") from None


# ----------------------------------------------------------------------------- toolchain

def toolchain_missing() -> str | None:
    """None when the cross toolchain and qemu are installed, else a one-line reason."""
    missing = [t for t in CROSS_TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)}; install with: {INSTALL_HINT}"
    return None


def require_toolchain() -> None:
    reason = toolchain_missing()
    if reason:
        raise UserError(reason)


def require_runnable(board: Board) -> None:
    if not board.runs:
        raise UserError(f"board {board.name} is an estimate-only profile ({board.core}); "
                        f"runnable boards: {', '.join(n for n in board_names() if load_board(n).runs)}")
    require_toolchain()


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 300.0) -> str:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise CheckFailed(f"`{' '.join(map(str, cmd[:3]))} ...` failed: "
                          f"{(p.stderr or p.stdout).strip()[:800]}")
    return p.stdout


# ----------------------------------------------------------------------------- builds

@dataclass(frozen=True)
class Build:
    """What a cross-build produced: the ELF plus the gcc stack-usage files."""

    elf: Path
    stack_usage: dict[str, int]    # function name -> bytes of its own frame (-fstack-usage)


def cross_build(board: Board, sources: list[Path], out_dir: Path, name: str = "prog",
                include_dirs: list[Path] = (), defines: dict[str, str] | None = None) -> Build:
    """Compile `sources` + the board's startup and semihosting into out_dir/<name>.elf."""
    require_runnable(board)
    common = common_dir()
    srcs = [common / "stp_board_startup.c", common / "stp_board_semihost.c",
            common / "stp_board_markers.c", *map(Path, sources)]
    flags = [*board.cflags, *COMMON_CFLAGS, *TARGET_CFLAGS, "-DSTP_BOARD_BARE",
             *(f"-I{d}" for d in [common, *include_dirs]),
             *(f"-D{k}={v}" for k, v in (defines or {}).items())]
    obj_dir = out_dir / f"{name}.obj"
    obj_dir.mkdir(parents=True, exist_ok=True)
    objs = [obj_dir / f"{i:02d}_{src.stem}.o" for i, src in enumerate(srcs)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:   # gcc runs are independent
        list(pool.map(lambda so: _run(["arm-none-eabi-gcc", *flags, "-c", str(so[0]), "-o", str(so[1])]),
                      zip(srcs, objs)))
    elf = out_dir / f"{name}.elf"
    _run(["arm-none-eabi-gcc", *board.cflags, "-nostdlib", "-Wl,--gc-sections",
          f"-T{common / 'mps2.ld'}", f"-Wl,-Map={out_dir / (name + '.map')}",
          *map(str, objs), "-lgcc", "-o", str(elf)])
    return Build(elf=elf, stack_usage=_read_stack_usage(obj_dir))


def host_build(sources: list[Path], out_dir: Path, name: str = "host",
               include_dirs: list[Path] = (), defines: dict[str, str] | None = None) -> Path:
    """Build the same driver for the host with gcc (stdio instead of semihosting)."""
    common = common_dir()
    exe = out_dir / name
    _run(["gcc", *COMMON_CFLAGS, *(f"-I{d}" for d in [common, *include_dirs]),
          *(f"-D{k}={v}" for k, v in (defines or {}).items()),
          str(common / "stp_board_host_io.c"), str(common / "stp_board_markers.c"),
          *map(str, sources), "-o", str(exe)])
    return exe


def _read_stack_usage(obj_dir: Path) -> dict[str, int]:
    usage: dict[str, int] = {}
    for su in sorted(obj_dir.glob("*.su")):
        for line in su.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                usage[parts[0].rsplit(":", 1)[-1]] = int(parts[1])
    return usage


# ----------------------------------------------------------------------------- sizes

@dataclass(frozen=True)
class Symbol:
    name: str
    addr: int
    size: int
    kind: str                      # nm type letter: T/t text, R/r rodata, D/d data, B/b bss

    @property
    def region(self) -> str:
        k = self.kind.lower()
        return {"t": "text", "r": "rodata", "d": "data", "b": "bss"}.get(k, "other")


def elf_sizes(elf: Path) -> dict[str, int]:
    """`arm-none-eabi-size` (Berkeley): text, data, bss; flash = text + data, ram = data + bss."""
    lines = _run(["arm-none-eabi-size", str(elf)]).splitlines()
    text, data, bss = (int(v) for v in lines[1].split()[:3])
    return {"text": text, "data": data, "bss": bss, "flash": text + data, "ram": data + bss}


def elf_symbols(elf: Path) -> list[Symbol]:
    """Every sized symbol, largest last (`arm-none-eabi-nm -S --size-sort`)."""
    out = _run(["arm-none-eabi-nm", "-S", "--size-sort", str(elf)])
    syms = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            syms.append(Symbol(parts[3], int(parts[0], 16), int(parts[1], 16), parts[2]))
    return syms


def symbol_address(elf: Path, name: str) -> int:
    for s in elf_symbols(elf):
        if s.name == name:
            return s.addr & ~1        # clear the Thumb bit
    raise CheckFailed(f"symbol {name} not found in {elf}")


# ----------------------------------------------------------------------------- counting

def cache_dir() -> Path:
    root = os.environ.get("STAPES_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "stapes")
    return Path(root)


def qemu_version() -> str:
    out = _run(["qemu-system-arm", "--version"])
    m = re.search(r"version (\d+\.\d+)", out)
    return m.group(1) if m else "unknown"


_PLUGIN_LOCK = threading.Lock()


def fetch_plugin_header(dest: Path) -> None:
    """Fetch qemu-plugin.h from Debian's source package of the installed QEMU (23.5 MB, once).

    Uses a private apt state folder, so the system's apt configuration is left untouched."""
    with tempfile.TemporaryDirectory(prefix="stapes-qemu-src-") as tmp:
        t = Path(tmp)
        (t / "parts").mkdir()
        (t / "lists" / "partial").mkdir(parents=True)
        sources = Path("/etc/apt/sources.list.d/debian.sources")
        if not sources.is_file():
            raise CheckFailed(f"{sources} not found: cannot locate Debian's qemu source package")
        (t / "parts" / "src.sources").write_text(
            re.sub(r"(?m)^Types: deb$", "Types: deb-src", sources.read_text()))
        apt = ["apt-get", "-o", "Dir::Etc::SourceList=/dev/null",
               "-o", f"Dir::Etc::SourceParts={t / 'parts'}", "-o", f"Dir::State::Lists={t / 'lists'}",
               "-o", "APT::Sandbox::User=root"]
        _run([*apt, "update", "-qq"])
        version = _run(["dpkg-query", "-W", "-f=${source:Version}", "qemu-system-arm"]).strip()
        _run([*apt, "source", "--download-only", "-qq", f"qemu={version}"], cwd=t)
        tarball = next(t.glob("qemu_*.orig.tar.*"))
        _run(["tar", "xf", str(tarball), "-C", str(t), "--strip-components=1", "--wildcards",
              "*/include/qemu/qemu-plugin.h"])
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp_dest = dest.with_suffix(".tmp")
        shutil.copyfile(t / "include" / "qemu" / "qemu-plugin.h", tmp_dest)
        os.replace(tmp_dest, dest)


def insn_plugin(fetch: bool = True) -> Path | None:
    """The built instruction-count plugin (cached), or None when it cannot be had.

    Looks for the header in $STAPES_QEMU_PLUGIN_HEADER, then the cache; fetches it once from
    Debian's source package when `fetch` is true."""
    src = boards_root() / "plugins" / "stp_insncount.c"
    ver = qemu_version()
    cache = cache_dir() / f"qemu-{ver}"
    header = Path(os.environ.get("STAPES_QEMU_PLUGIN_HEADER") or cache / "qemu-plugin.h")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    lib = cache / f"stp_insncount-{digest}.so"
    with _PLUGIN_LOCK:
        if lib.is_file():
            return lib
        if not header.is_file():
            if not fetch or not ver.startswith("7."):
                return None
            try:
                fetch_plugin_header(header)
            except (CheckFailed, OSError, StopIteration, subprocess.TimeoutExpired):
                return None
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        _run(["gcc", "-shared", "-fPIC", "-O2", "-Wall", f"-I{header.parent}", str(src), "-o", str(tmp)])
        os.replace(tmp, lib)
        return lib


@dataclass(frozen=True)
class QemuRun:
    stdout: bytes
    returncode: int
    total_insns: int | None        # None when not counted
    frame_insns: list[int]         # one per begin/end marker pair
    method: str                    # "plugin" | "singlestep" | "none"
    range_insns: int | None = None # instructions inside the requested functions (whole run)
    stack_peak: int | None = None  # bytes, from the painted stack (None: the program did not report it)


_STACK_PEAK = re.compile(rb"stp-stack-peak=(\d+)")


def _stack_peak(stderr: bytes) -> int | None:
    """The peak stack use the board startup reports on stderr after main() returns."""
    m = _STACK_PEAK.search(stderr or b"")
    return int(m.group(1)) if m else None


def _qemu_cmd(board: Board, elf: Path) -> list[str]:
    return ["qemu-system-arm", "-M", board.qemu_machine, "-display", "none", "-monitor", "none",
            "-serial", "none", "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]


def function_ranges(elf: Path, names) -> list[tuple[int, int]]:
    """[lo, hi) address ranges of the named functions that exist in `elf` (Thumb bit cleared)."""
    wanted = set(names)
    return [(s.addr & ~1, (s.addr & ~1) + s.size) for s in elf_symbols(elf)
            if s.name in wanted and s.region == "text" and s.size > 0]


def run_qemu(board: Board, elf: Path, count: bool = False, timeout: float = DEFAULT_TIMEOUT_S,
             method: str = "auto", count_functions=()) -> QemuRun:
    """Run `elf` on the board; with `count`, count guest instructions (total and per frame, and
    inside `count_functions`: instructions executed in those functions over the whole run).

    method: "auto" (plugin, else singlestep), "plugin", "singlestep". A timeout is a failed
    check (the program hung), not a user error."""
    require_runnable(board)
    if not count:
        p = _run_timed(_qemu_cmd(board, elf), timeout)
        return QemuRun(p.stdout, p.returncode, None, [], "none", stack_peak=_stack_peak(p.stderr))
    begin, end = symbol_address(elf, "stp_board_frame_begin"), symbol_address(elf, "stp_board_frame_end")
    plugin = insn_plugin() if method in ("auto", "plugin") else None
    if method == "plugin" and plugin is None:
        raise CheckFailed("the qemu instruction-count plugin is not available "
                          "(qemu-plugin.h could not be fetched)")
    with tempfile.TemporaryDirectory(prefix="stapes-qemu-") as tmp:
        log = Path(tmp) / "count.log"
        if plugin is not None:
            ranges = "".join(f",range={lo:#x}-{hi:#x}" for lo, hi in function_ranges(elf, count_functions))
            cmd = [*_qemu_cmd(board, elf), "-plugin", f"{plugin},begin={begin:#x},end={end:#x}{ranges}",
                   "-d", "plugin", "-D", str(log)]
            p = _run_timed(cmd, timeout)
            text = log.read_text() if log.exists() else ""
            total = re.search(r"stp_insncount total=(\d+)", text)
            if total is None:
                raise CheckFailed(f"the instruction-count plugin printed nothing: {p.stderr.decode()[:500]}")
            frames = [int(v) for v in re.findall(r"stp_insncount frame=(\d+)", text)]
            in_range = re.search(r"stp_insncount range=(\d+)", text)
            return QemuRun(p.stdout, p.returncode, int(total.group(1)), frames, "plugin",
                           int(in_range.group(1)) if in_range else None, _stack_peak(p.stderr))
        return _run_singlestep(board, elf, begin, end, Path(tmp), timeout,
                               function_ranges(elf, count_functions))


def _run_timed(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"qemu run timed out after {timeout:g} s: {cmd[-1]}") from None


_TRACE_PC = re.compile(rb"^Trace \d+: \S+ \[[0-9a-f]+/([0-9a-f]+)/")


def _run_singlestep(board: Board, elf: Path, begin: int, end: int, tmp: Path,
                    timeout: float, ranges: list[tuple[int, int]] = ()) -> QemuRun:
    """Fallback counter: one `Trace` line per executed instruction, read through a FIFO."""
    fifo = tmp / "trace.fifo"
    os.mkfifo(fifo)
    cmd = [*_qemu_cmd(board, elf), "-singlestep", "-d", "exec,nochain", "-D", str(fifo)]
    err_path = tmp / "stderr"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
    out_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True)
    reader.start()
    total, latched, frames, in_range = 0, 0, [], 0
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        with open(fifo, "rb") as f:
            for line in f:
                m = _TRACE_PC.match(line)
                if not m:
                    continue
                pc = int(m.group(1), 16)
                if pc == begin:
                    latched = total
                elif pc == end:
                    frames.append(total - latched)
                total += 1
                in_range += any(lo <= pc < hi for lo, hi in ranges)
        rc = proc.wait()
    finally:
        timed_out = not timer.is_alive() and proc.returncode in (-9, None)
        timer.cancel()
    reader.join()
    if timed_out:
        raise CheckFailed(f"qemu run timed out after {timeout:g} s: {elf}")
    return QemuRun(b"".join(out_chunks), rc, total, frames, "singlestep", in_range if ranges else None,
                   _stack_peak(err_path.read_bytes()))


# ----------------------------------------------------------------------------- drivers

def runtime_dir() -> Path:
    return Path(str(resources.files("stapes.runtime_c")))


def runtime_c_sources() -> list[Path]:
    """The C runtime's sources (runtime_c/src, minus the op counters)."""
    return sorted(p for p in (runtime_dir() / "src").glob("*.c") if p.name != "stp_ops.c")


def c_array(ctype: str, name: str, values, per_line: int = 12) -> str:
    vals = [str(int(v)) for v in values] or ["0"]
    rows = [", ".join(vals[k:k + per_line]) for k in range(0, len(vals), per_line)]
    return f"static const {ctype} {name}[{len(vals)}] = {{\n    " + ",\n    ".join(rows) + "\n};\n"


def driver_c(step_call: str, model_header: str, inputs, input_size: int, hidden_size: int,
             output_size: int, scratch_elems: int, print_state: bool = True) -> str:
    """A driver that runs `inputs` (T, I) frame by frame through `step_call` (a C expression
    returning 0 on success, over the buffers x, state, y, scratch) and prints,
    per frame, the outputs and (optionally) the state as hex int16 - the same text on the host
    and on the target. Each step sits between the instruction-count frame markers. The exit
    status is 0, or 3 when the step reports an error."""
    import numpy as np

    x = np.asarray(inputs, dtype=np.int64).reshape(-1, input_size)
    steps = x.shape[0]
    return f"""/* generated by stapes.target.board: golden-input driver (same text on host and target) */
#include <stdint.h>
#include "stp_board_io.h"
#include "{model_header}"

#define IN {input_size}
#define HID {hidden_size}
#define OUT {output_size}
#define STEPS {steps}
{c_array("int16_t", "inputs", x.ravel())}
/* the caller-owned RAM of the frame API: state, scratch, one input frame, one output frame */
static int16_t state[HID];
static int16_t scratch[{max(scratch_elems, 1)}];
static int16_t x[IN];
static int16_t y[OUT];

static int put_hex16(char *p, int16_t v)
{{
    static const char digits[] = "0123456789abcdef";
    uint16_t u = (uint16_t)v;
    p[0] = digits[(u >> 12) & 15u]; p[1] = digits[(u >> 8) & 15u];
    p[2] = digits[(u >> 4) & 15u]; p[3] = digits[u & 15u]; p[4] = ' ';
    return 5;
}}

int main(void)
{{
    char line[8 + 5 * (OUT + HID) + 4];
    int t, k;
    for (k = 0; k < HID; k++) state[k] = 0;
    stp_board_frame_begin();   /* empty frame: the marker overhead, subtracted by the runner */
    stp_board_frame_end();
    for (t = 0; t < STEPS; t++) {{
        int n = 0, rc;
        for (k = 0; k < IN; k++) x[k] = inputs[t * IN + k];
        stp_board_frame_begin();
        rc = {step_call};
        stp_board_frame_end();
        if (rc != 0) return 3;
        line[n++] = 'y'; line[n++] = ' ';
        for (k = 0; k < OUT; k++) n += put_hex16(line + n, y[k]);
        {'line[n++] = ' + "'h'" + '; line[n++] = ' + "' '" + '; for (k = 0; k < HID; k++) n += put_hex16(line + n, state[k]);' if print_state else ''}
        line[n++] = '\\n';
        stp_io_write(line, (size_t)n);
    }}
    return 0;
}}
"""


def parse_driver_output(text: bytes, output_size: int, hidden_size: int) -> tuple:
    """(outputs (T, O), states (T, N) or None) as int16 arrays from the driver's printout."""
    import numpy as np

    ys, hs = [], []
    for line in text.decode("ascii").splitlines():
        parts = line.split()
        if not parts or parts[0] != "y":
            raise CheckFailed(f"unexpected driver output line: {line[:80]!r}")
        vals = [int(v, 16) for v in parts[1:] if v != "h"]
        ys.append(vals[:output_size])
        if "h" in parts:
            hs.append(vals[output_size:output_size + hidden_size])
    y = np.array(ys, dtype=np.uint16).view(np.int16).reshape(-1, output_size)
    h = np.array(hs, dtype=np.uint16).view(np.int16).reshape(-1, hidden_size) if hs else None
    return y, h


def synthetic_model_c(shape, seed: int = 0, name: str = "stp_synth_model") -> str:
    """A random model as C (const arrays + one `const stp_model_t`), for calibrating the
    instruction and size models without the quantizer. Weights respect the runtime's proof
    obligation (sum_j |w_ij| * 32768 < 2^31 per row), so every run is well defined."""
    import numpy as np

    from stapes.fixed.fixedpoint import LUT_SIZE

    rng = np.random.default_rng(seed)
    wt = "int8_t" if shape.weight_bits == 8 else "int16_t"
    out: list[str] = ['#include "stp_model.h"\n']
    n, i_size, o = shape.hidden_size, shape.input_size, shape.output_size

    def weights(tag: str, rows: int, cols: int) -> str:
        top = 127 if shape.weight_bits == 8 else max(1, min(32767, 65535 // max(cols, 1) - 1))
        out.append(c_array(wt, tag, rng.integers(-top, top + 1, rows * cols)))
        field_ = "w8" if shape.weight_bits == 8 else "w16"
        return f"{{.{field_} = {tag}, .rows = {rows}, .cols = {cols}}}"

    def shifts(tag: str, count: int, lo: int, hi: int) -> str:
        out.append(c_array("int8_t", tag, rng.integers(lo, hi, count)))
        return tag

    table = np.sort(rng.integers(-32768, 32768, LUT_SIZE))
    out.append(c_array("int16_t", "lut_a", table))
    if shape.cell == "mgu" or shape.readout_activation == "sigmoid":
        out.append(c_array("int16_t", "lut_b", np.sort(rng.integers(-32768, 32768, LUT_SIZE))))

    def gate(tag: str, mat: str, lut: str) -> str:
        r = shape.rank(mat)
        fields = [f".w = {weights(tag + '_w', n, i_size)}"]
        if r is None:
            fields.append(f".u = {weights(tag + '_u', n, n)}")
        else:
            fields.append(f".b = {weights(tag + '_b', r, n)}")
            fields.append(f".a = {weights(tag + '_a', n, r)}")
            fields.append(f".z_shift = {shifts(tag + '_zs', r, 2, 12)}")
        fields.append(f".x_shift = {shifts(tag + '_xs', n, 4, 14)}")
        fields.append(f".h_shift = {shifts(tag + '_hs', n, 4, 14)}")
        out.append(c_array("int32_t", tag + "_bias", rng.integers(-4096, 4096, n)))
        fields += [f".bias = {tag}_bias", f".table = {lut}"]
        return "{" + ", ".join(fields) + "}"

    if shape.cell == "mgu":
        gf, gh = gate("gf", "u_f", "lut_b"), gate("gh", "u_h", "lut_a")
    else:
        gf, gh = None, gate("gh", "u", "lut_a")
    ro_w = weights("ro_w", o, n)
    ro_s = shifts("ro_s", o, 4, 14)
    out.append(c_array("int32_t", "ro_bias", rng.integers(-4096, 4096, o)))
    ro_table = "lut_b" if shape.readout_activation == "sigmoid" else "0"
    mode = "STP_READOUT_FINAL" if shape.readout_mode == "final" else "STP_READOUT_PER_STEP"
    cell = "STP_CELL_MGU" if shape.cell == "mgu" else "STP_CELL_RNN"
    out.append(f"const stp_model_t {name} = {{\n    .cell = {cell}, .input_size = {i_size}, "
               f".hidden_size = {n}, .output_size = {o}, .rank_max = {shape.rank_max},\n"
               + (f"    .gate_f = {gf},\n" if gf else "") + f"    .gate_h = {gh},\n"
               f"    .readout = {{.w = {ro_w}, .shift = {ro_s}, .bias = ro_bias, .table = {ro_table}, "
               f".mode = {mode}}}\n}};\n")
    return "\n".join(out)


# The mat-vec kernels: every MAC of a frame runs inside one of these (runtime_c/src/stp_matvec.c).
MATVEC_KERNELS = ("stp_dot_s16_s16", "stp_dot_s16_s8", "stp_dsp_dot2_s16")

STACK_CHAIN = ("main", "stp_model_step", "stp_mgu_step_s16", "stp_gate_lowrank_s16", "row_dot",
               "stp_dot_s16_s16")


def stack_estimate(stack_usage: dict[str, int]) -> int:
    """Deepest call chain of a frame (driver -> step -> MGU -> low-rank gate -> dot), from
    gcc's -fstack-usage frames, plus 8 bytes per call for the return path's register saves."""
    return sum(stack_usage.get(f, 0) + 8 for f in STACK_CHAIN)


@dataclass(frozen=True)
class Measured:
    """What one synthetic or emitted model measured on a board."""

    frame_insns: list[int]          # per frame, marker overhead removed
    sizes: dict                     # elf_sizes, plus flash_model = flash minus the golden inputs
    stack: int                      # bytes: the measured peak, else the -fstack-usage estimate
    stack_measured: bool
    stdout: bytes
    returncode: int
    method: str
    kernel_insns: float | None      # per frame, inside MATVEC_KERNELS (None: not counted)


def measure_model(board: Board, model_sources: list[Path], include_dirs: list[Path], driver: str,
                  work: Path, name: str = "prog", timeout: float = DEFAULT_TIMEOUT_S) -> Measured:
    """Cross-build driver + model + runtime, run it with instruction counting, read the sizes."""
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{name}_main.c").write_text(driver)
    srcs = [work / f"{name}_main.c", *model_sources, *runtime_c_sources()]
    build = cross_build(board, srcs, work, name=name, include_dirs=[runtime_dir() / "include", *include_dirs])
    run = run_qemu(board, build.elf, count=True, timeout=timeout, count_functions=MATVEC_KERNELS)
    if len(run.frame_insns) < 1:
        raise CheckFailed(f"no frames counted (exit status {run.returncode})")
    overhead, frames = run.frame_insns[0], run.frame_insns[1:]
    sizes = elf_sizes(build.elf)
    inputs = sum(s.size for s in elf_symbols(build.elf) if s.name == "inputs")
    sizes["flash_model"] = sizes["flash"] - inputs
    kernel = run.range_insns / len(frames) if run.range_insns is not None and frames else None
    measured_stack = run.stack_peak is not None
    stack = run.stack_peak if measured_stack else stack_estimate(build.stack_usage)
    return Measured([f - overhead for f in frames], sizes, stack, measured_stack,
                    run.stdout, run.returncode, run.method, kernel)


def measure_synthetic(board: Board, shape, work: Path, seed: int = 0, steps: int = 4) -> Measured:
    """Measure a random model of `shape` (see synthetic_model_c) for `steps` frames."""
    import numpy as np

    from stapes.target.budget import ram_bytes

    work.mkdir(parents=True, exist_ok=True)
    (work / "synth.c").write_text(synthetic_model_c(shape, seed))
    (work / "synth.h").write_text('#include "stp_model.h"\nextern const stp_model_t stp_synth_model;\n')
    x = np.random.default_rng(seed + 1).integers(-32768, 32768, (steps, shape.input_size))
    scratch = ram_bytes(shape)["scratch"] // 2
    drv = driver_c("stp_model_step(&stp_synth_model, x, state, y, scratch, 0)", "synth.h", x,
                   shape.input_size, shape.hidden_size,
                   shape.output_size, scratch, print_state=False)
    return measure_model(board, [work / "synth.c"], [work], drv, work)


# ----------------------------------------------------------------------------- emitted models

def golden_inputs(input_size: int, frames: int, seed: int):
    """Seeded int16 inputs over the whole int16 range (the overflow proof covers every int16
    input, so extremes are fair game), with the two extreme values forced in early frames."""
    import numpy as np

    x = np.random.default_rng(seed).integers(-32768, 32768, (frames, input_size)).astype(np.int16)
    if frames >= 2:
        x[0, :], x[1, :] = 32767, -32768
    return x


def reference_frames(qgraph, x, rank: int = 0):
    """The reference's per-frame outputs and states for one stream x (T, I): what every call of
    the step function must produce (the step function computes the readout every frame, also
    for a final-readout model, so the reference is asked for per-step readouts)."""
    import dataclasses

    from stapes.fixed.reference import run_reference

    per_step = qgraph
    if qgraph.readout.mode != "per_step":
        per_step = dataclasses.replace(qgraph, readout=dataclasses.replace(qgraph.readout, mode="per_step"))
    res = run_reference(per_step, x[None].astype("int16"), rank=rank or None)
    return res.outputs[0], res.states[0]


@dataclass
class BoardRun:
    """Everything `stapes board run` reports."""

    board: str
    frames: int
    same_as_host: bool
    same_as_reference: bool
    first_mismatch: str | None
    returncode: int
    host_returncode: int
    frame_insns: list
    macs_per_frame: int
    sizes: dict
    model_symbols: list             # (name, bytes, region) of the model and runtime, largest first
    stack: int                      # bytes: the measured peak, else the -fstack-usage estimate
    stack_measured: bool
    method: str
    kernel_insns: float | None = None   # per frame, inside the mat-vec kernels


def emitted_model_files(qgraph, work: Path, prefix: str = "model") -> list[Path]:
    from stapes.emit.model_c import emit

    paths = []
    for name, text in emit(qgraph, prefix).items():
        (work / name).write_text(text)
        paths.append(work / name)
    return paths


def run_qgraph(qgraph, board: Board, work: Path, frames: int = 32, seed: int = 0, rank: int = 0,
               timeout: float = DEFAULT_TIMEOUT_S) -> BoardRun:
    """Emit `qgraph`, run golden inputs on the host and under qemu, compare both with the
    reference frame by frame (outputs and every state), count instructions, read sizes."""
    import numpy as np

    from stapes.fixed.reference import frame_ops

    require_runnable(board)
    rank = qgraph.check_rank(rank or None) if rank else 0
    work.mkdir(parents=True, exist_ok=True)
    files = emitted_model_files(qgraph, work)
    x = golden_inputs(qgraph.input_size, frames, seed)
    from stapes.emit.model_c import summary

    scratch = summary(qgraph)["scratch_size"]
    drv = driver_c(f"model_step_rank(x, state, y, scratch, {rank})", "model.h", x, qgraph.input_size,
                   qgraph.hidden_size, qgraph.output_size, scratch)
    measured = measure_model(board, [f for f in files if f.suffix == ".c"], [work], drv, work,
                             name="target", timeout=timeout)
    host_src = work / "target_main.c"
    host = host_build([host_src, *(f for f in files if f.suffix == ".c"), *runtime_c_sources()], work,
                      include_dirs=[runtime_dir() / "include", work])
    try:
        hp = subprocess.run([str(host)], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"the host build timed out after {timeout:g} s") from None
    y_ref, h_ref = reference_frames(qgraph, x, rank)
    mismatch = None
    same_ref = False
    if measured.returncode == 0:
        y_t, h_t = parse_driver_output(measured.stdout, qgraph.output_size, qgraph.hidden_size)
        same_ref = (y_t.shape == y_ref.shape and h_t is not None and np.array_equal(y_t, y_ref)
                    and np.array_equal(h_t, h_ref))
        if not same_ref:
            mismatch = _first_mismatch(y_t, h_t, y_ref, h_ref)
    else:
        mismatch = f"target exit status {measured.returncode}"
    elf = work / "target.elf"
    syms = [(s.name, s.size, s.region) for s in reversed(elf_symbols(elf))
            if s.name.startswith(("model_", "stp_")) and not s.name.startswith(("stp_board", "stp_io"))
            or s.name in ("row_dot", "combine", "gate_preact", "cell_step")]
    return BoardRun(board.name, frames, measured.stdout == hp.stdout and measured.returncode == hp.returncode,
                    same_ref, mismatch, measured.returncode, hp.returncode, measured.frame_insns,
                    int(frame_ops(qgraph, rank or None)["mac"]), measured.sizes, syms, measured.stack,
                    measured.stack_measured, measured.method, measured.kernel_insns)


def stack_text(run: BoardRun) -> str:
    return f"stack {run.stack} (measured peak)" if run.stack_measured else f"stack ~{run.stack} (estimate)"


def _first_mismatch(y_t, h_t, y_ref, h_ref) -> str:
    import numpy as np

    if y_t.shape != y_ref.shape or h_t is None or h_t.shape != h_ref.shape:
        return f"target printed {y_t.shape[0]} frames, the reference has {y_ref.shape[0]}"
    for t in range(y_ref.shape[0]):
        for what, a, b in (("state", h_t[t], h_ref[t]), ("output", y_t[t], y_ref[t])):
            bad = np.flatnonzero(a != b)
            if bad.size:
                k = int(bad[0])
                return f"frame {t} {what}[{k}]: target {int(a[k])}, reference {int(b[k])}"
    return "no difference found"


def dot_kernel_program(cases: list[tuple[int, int, int, int]]) -> str:
    """C that calls stp_dot_s16_s{bits} once per case (bits, n, w offset, x offset in elements)
    between the frame markers, on word-aligned buffers: the kernels' own instruction costs."""
    lines = ['#include <stdint.h>', '#include "stp_board_io.h"', '#include "stp_model.h"',
             "static int16_t w16[520], x16[520];", "static int8_t w8[1040];",
             "static volatile int32_t sink;", "int main(void)", "{", "    int k;",
             "    for (k = 0; k < 520; k++) { w16[k] = (int16_t)(k % 7 - 3); x16[k] = (int16_t)(k * 13); }",
             "    for (k = 0; k < 1040; k++) w8[k] = (int8_t)(k % 5 - 2);"]
    for bits, n, wo, xo in cases:
        w = f"w{bits} + {wo}"
        lines += ["    stp_board_frame_begin();",
                  f"    sink = stp_dot_s16_s{bits}({w}, x16 + {xo}, {n});",
                  "    stp_board_frame_end();"]
    lines += ["    return 0;", "}", ""]
    return "\n".join(lines)


def measure_dot_kernels(board: Board, work: Path, cases: list[tuple[int, int, int, int]]) -> list[int]:
    """Instructions per dot-kernel call (call sequence included), one per case."""
    work.mkdir(parents=True, exist_ok=True)
    src = work / "dots.c"
    src.write_text(dot_kernel_program(cases))
    build = cross_build(board, [src, *runtime_c_sources()], work, name="dots",
                        include_dirs=[runtime_dir() / "include"])
    run = run_qemu(board, build.elf, count=True)
    if run.returncode != 0 or len(run.frame_insns) != len(cases):
        raise CheckFailed(f"dot-kernel run failed (exit status {run.returncode})")
    return run.frame_insns
