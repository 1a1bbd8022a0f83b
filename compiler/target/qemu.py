"""Runs under qemu (the board profile's qemu binary and machine), with exact guest instruction counts.

qemu is functional, not cycle-accurate: it proves the bits on the real instruction set and gives
exact, deterministic instruction counts (a TCG plugin, or `-singlestep -d exec,nochain` when the
plugin is not available), never cycles.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from stapes.errors import CheckFailed
from stapes.fsutil import cache_dir
from stapes.target.profile import Board, board_names, boards_root, load_board
from stapes.target.toolchain import function_ranges, require_runnable, run_tool, symbol_address

DEFAULT_TIMEOUT_S = 60.0
# The one command that downloads (CI runs it); nothing else here touches the network.
PLUGIN_FETCH_HINT = 'python3 -c "from stapes.target import qemu; print(qemu.insn_plugin(fetch=True))"'


def qemu_binaries() -> list[str]:
    """The qemu binaries of the runnable boards that are installed, in board order."""
    names = {load_board(n).qemu_binary: None for n in board_names() if load_board(n).runs}
    return [b for b in names if shutil.which(b)]


def qemu_version(binary: str | None = None) -> str:
    """`major.minor` of `binary` (default: the first installed board qemu); one plugin serves
    every system emulator of a qemu version, since the plugin API does not depend on the guest."""
    binary = binary or next(iter(qemu_binaries()), None)
    if binary is None:
        return "unknown"
    out = run_tool([binary, "--version"])
    m = re.search(r"version (\d+\.\d+)", out)
    return m.group(1) if m else "unknown"


# ----------------------------------------------------------------------------- the insn plugin

_PLUGIN_LOCK = threading.Lock()


def _qemu_source_version() -> str:
    """Debian's source version of the installed qemu (the package that owns a board's binary)."""
    binary = shutil.which(next(iter(qemu_binaries()), "qemu-system-arm")) or "/usr/bin/qemu-system-arm"
    package = run_tool(["dpkg-query", "-S", str(Path(binary).resolve())]).split(":", 1)[0].strip()
    return run_tool(["dpkg-query", "-W", "-f=${source:Version}", package]).strip()


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
        (t / "parts" / "src.sources").write_text(re.sub(r"(?m)^Types: deb$", "Types: deb-src", sources.read_text()))
        apt = [
            "apt-get",
            "-o",
            "Dir::Etc::SourceList=/dev/null",
            "-o",
            f"Dir::Etc::SourceParts={t / 'parts'}",
            "-o",
            f"Dir::State::Lists={t / 'lists'}",
            "-o",
            "APT::Sandbox::User=root",
        ]
        run_tool([*apt, "update", "-qq"])
        version = _qemu_source_version()
        run_tool([*apt, "source", "--download-only", "-qq", f"qemu={version}"], cwd=t)
        tarball = next(t.glob("qemu_*.orig.tar.*"))
        run_tool(
            [
                "tar",
                "xf",
                str(tarball),
                "-C",
                str(t),
                "--strip-components=1",
                "--wildcards",
                "*/include/qemu/qemu-plugin.h",
            ]
        )
        _publish(dest, lambda tmp_dest: shutil.copyfile(t / "include" / "qemu" / "qemu-plugin.h", tmp_dest))


def _publish(dest: Path, make) -> None:
    """Let `make(tmp)` write a file next to `dest`, then rename it into place: readers never see
    half a file, and of two processes racing to make it the last rename wins (both are equal)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        make(tmp)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def insn_plugin(fetch: bool = False) -> Path | None:
    """The built instruction-count plugin (cached), or None when it cannot be had.

    The header comes from $STAPES_QEMU_PLUGIN_HEADER, else the cache. Only with `fetch` is a
    missing header downloaded (once, from Debian's source package), so that by default nothing
    touches the network; without the plugin, counting falls back to `-singlestep`."""
    src = boards_root() / "plugins" / "stp_insncount.c"
    ver = qemu_version()
    cache = cache_dir(f"qemu-{ver}")
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
        try:
            _publish(
                lib,
                lambda tmp: run_tool(
                    ["gcc", "-shared", "-fPIC", "-O2", "-Wall", f"-I{header.parent}", str(src), "-o", str(tmp)]
                ),
            )
        except (CheckFailed, OSError):
            return None
        return lib


# ----------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class QemuRun:
    stdout: bytes
    returncode: int
    total_insns: int | None  # None when not counted
    frame_insns: list[int]  # one per begin/end marker pair
    method: str  # "plugin" | "singlestep" | "none"
    range_insns: int | None = None  # instructions inside the requested functions (whole run)
    stack_peak: int | None = None  # bytes, from the painted stack (None: the program did not report it)


_STACK_PEAK = re.compile(rb"stp-stack-peak=(\d+)")


def _stack_peak(stderr: bytes) -> int | None:
    """The peak stack use the board startup reports on stderr after main() returns."""
    m = _STACK_PEAK.search(stderr or b"")
    return int(m.group(1)) if m else None


def _qemu_cmd(board: Board, elf: Path) -> list[str]:
    return [
        board.qemu_binary,
        "-M",
        board.qemu_machine,
        *board.qemu_args,
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "none",
        "-semihosting-config",
        "enable=on,target=native",
        "-kernel",
        str(elf),
    ]


def run_qemu(
    board: Board,
    elf: Path,
    count: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
    method: str = "auto",
    count_functions=(),
) -> QemuRun:
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
        raise CheckFailed(
            f"the qemu instruction-count plugin is not available; fetch and build it once with: {PLUGIN_FETCH_HINT}"
        )
    with tempfile.TemporaryDirectory(prefix="stapes-qemu-") as tmp:
        if plugin is None:
            return _run_singlestep(board, elf, begin, end, Path(tmp), timeout, function_ranges(elf, count_functions))
        log = Path(tmp) / "count.log"
        ranges = "".join(f",range={lo:#x}-{hi:#x}" for lo, hi in function_ranges(elf, count_functions))
        cmd = [
            *_qemu_cmd(board, elf),
            "-plugin",
            f"{plugin},begin={begin:#x},end={end:#x}{ranges}",
            "-d",
            "plugin",
            "-D",
            str(log),
        ]
        p = _run_timed(cmd, timeout)
        text = log.read_text() if log.exists() else ""
    total = re.search(r"stp_insncount total=(\d+)", text)
    if total is None:
        raise CheckFailed(f"the instruction-count plugin printed nothing: {p.stderr.decode()[:500]}")
    frames = [int(v) for v in re.findall(r"stp_insncount frame=(\d+)", text)]
    in_range = re.search(r"stp_insncount range=(\d+)", text)
    return QemuRun(
        p.stdout,
        p.returncode,
        int(total.group(1)),
        frames,
        "plugin",
        int(in_range.group(1)) if in_range else None,
        _stack_peak(p.stderr),
    )


def _run_timed(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"qemu run timed out after {timeout:g} s: {cmd[-1]}") from None


_TRACE_PC = re.compile(rb"^Trace \d+: \S+ \[[0-9a-f]+/([0-9a-f]+)/")


def _run_singlestep(
    board: Board, elf: Path, begin: int, end: int, tmp: Path, timeout: float, ranges: list[tuple[int, int]] = ()
) -> QemuRun:
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
    return QemuRun(
        b"".join(out_chunks),
        rc,
        total,
        frames,
        "singlestep",
        in_range if ranges else None,
        _stack_peak(err_path.read_bytes()),
    )
