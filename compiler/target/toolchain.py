"""Cross and host builds of board programs, and what the ELF holds (sizes, symbols)."""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from stapes.errors import CheckFailed, UserError
from stapes.target.profile import ARCH_DEFAULTS, Board, board_names, common_dir, load_board

# The default board's tools (mps2-an386): what `toolchain_missing()` without a board checks.
DEFAULT_BOARD = "mps2-an386"
INSTALL_HINT = ARCH_DEFAULTS["arm"]["install"]
# Flags both builds share: the arithmetic must not depend on them, and warnings fail the build.
COMMON_CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Wconversion", "-Werror", "-ffp-contract=off"]
TARGET_CFLAGS = [
    "-ffunction-sections",
    "-fdata-sections",
    "-ffreestanding",
    "-fno-tree-loop-distribute-patterns",
    "-fstack-usage",
]


def toolchain_missing(board: Board | None = None) -> str | None:
    """None when the board's cross toolchain and qemu are installed (default: the default
    board's), else a one-line reason."""
    board = board or load_board(DEFAULT_BOARD)
    missing = [t for t in board.tools if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)}; install with: {board.install_hint}"
    return None


def require_toolchain(board: Board | None = None) -> None:
    reason = toolchain_missing(board)
    if reason:
        raise UserError(reason)


def require_runnable(board: Board) -> None:
    if not board.runs:
        raise UserError(
            f"board {board.name} is an estimate-only profile ({board.core}); "
            f"runnable boards: {', '.join(n for n in board_names() if load_board(n).runs)}"
        )
    require_toolchain(board)


def run_tool(cmd: list[str], cwd: Path | None = None, timeout: float = 300.0) -> str:
    """stdout of `cmd`; a failure is a CheckFailed quoting the tool's message."""
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise CheckFailed(f"`{' '.join(map(str, cmd[:3]))} ...` failed: {(p.stderr or p.stdout).strip()[:800]}")
    return p.stdout


def runtime_dir() -> Path:
    return Path(str(resources.files("stapes.runtime_c")))


def runtime_c_sources() -> list[Path]:
    """The C runtime's sources (runtime_c/src, minus the op counters)."""
    return sorted(p for p in (runtime_dir() / "src").glob("*.c") if p.name != "stp_ops.c")


# ----------------------------------------------------------------------------- builds


@dataclass(frozen=True)
class Build:
    """What a cross-build produced: the ELF plus the gcc stack-usage files."""

    elf: Path
    stack_usage: dict[str, int]  # function name -> bytes of its own frame (-fstack-usage)


def _include_and_define_flags(include_dirs, defines: dict[str, str] | None) -> list[str]:
    return [
        *(f"-I{d}" for d in [common_dir(), *include_dirs]),
        *(f"-D{k}={v}" for k, v in (defines or {}).items()),
    ]


def cross_build(
    board: Board,
    sources: list[Path],
    out_dir: Path,
    name: str = "prog",
    include_dirs: list[Path] = (),
    defines: dict[str, str] | None = None,
) -> Build:
    """Compile `sources` + the board's startup and semihosting (its profile's `startup` files)
    into out_dir/<name>.elf, linked with its linker script."""
    require_runnable(board)
    srcs = [
        *map(board.support_file, board.startup),
        common_dir() / "stp_board_markers.c",
        *map(Path, sources),
    ]
    cc = board.toolchain + "gcc"
    flags = [
        *board.cflags,
        *COMMON_CFLAGS,
        *TARGET_CFLAGS,
        "-DSTP_BOARD_BARE",
        *_include_and_define_flags(include_dirs, defines),
    ]
    obj_dir = out_dir / f"{name}.obj"
    obj_dir.mkdir(parents=True, exist_ok=True)
    objs = [obj_dir / f"{i:02d}_{src.stem}.o" for i, src in enumerate(srcs)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # gcc runs are independent
        list(
            pool.map(
                lambda so: run_tool([cc, *flags, "-c", str(so[0]), "-o", str(so[1])]),
                zip(srcs, objs),
            )
        )
    elf = out_dir / f"{name}.elf"
    run_tool(
        [
            cc,
            *board.cflags,
            "-nostdlib",
            "-Wl,--gc-sections",
            f"-T{board.support_file(board.linker_script)}",
            f"-Wl,-Map={out_dir / (name + '.map')}",
            *map(str, objs),
            "-lgcc",
            "-o",
            str(elf),
        ]
    )
    return Build(elf=elf, stack_usage=_read_stack_usage(obj_dir))


def host_build(
    sources: list[Path],
    out_dir: Path,
    name: str = "host",
    include_dirs: list[Path] = (),
    defines: dict[str, str] | None = None,
) -> Path:
    """Build the same driver for the host with gcc (stdio instead of semihosting)."""
    common = common_dir()
    exe = out_dir / name
    run_tool(
        [
            "gcc",
            *COMMON_CFLAGS,
            *_include_and_define_flags(include_dirs, defines),
            str(common / "stp_board_host_io.c"),
            str(common / "stp_board_markers.c"),
            *map(str, sources),
            "-o",
            str(exe),
        ]
    )
    return exe


def _read_stack_usage(obj_dir: Path) -> dict[str, int]:
    usage: dict[str, int] = {}
    for su in sorted(obj_dir.glob("*.su")):
        for line in su.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                usage[parts[0].rsplit(":", 1)[-1]] = int(parts[1])
    return usage


# ----------------------------------------------------------------------------- ELF contents

# ELF e_machine values of the instruction sets the boards use (the ELF specification's numbers).
ELF_MACHINE_ARCH = {40: "arm", 243: "riscv"}


def binutils_prefix(elf: Path) -> str:
    """The cross tool prefix that reads `elf`: that of a runnable board of the ELF's arch."""
    with open(elf, "rb") as f:
        header = f.read(20)
    arch = ELF_MACHINE_ARCH.get(int.from_bytes(header[18:20], "little")) if header[:4] == b"\x7fELF" else None
    for name in board_names():
        b = load_board(name)
        if b.runs and b.arch == arch:
            return b.toolchain
    raise CheckFailed(f"{elf} is not an ELF file of a board's instruction set ({', '.join(ELF_MACHINE_ARCH.values())})")


@dataclass(frozen=True)
class Symbol:
    name: str
    addr: int
    size: int
    kind: str  # nm type letter: T/t text, R/r rodata, D/d data, B/b bss

    @property
    def region(self) -> str:
        k = self.kind.lower()
        return {"t": "text", "r": "rodata", "d": "data", "b": "bss"}.get(k, "other")


def elf_sizes(elf: Path) -> dict[str, int]:
    """`<prefix>size` (Berkeley): text, data, bss; flash = text + data, ram = data + bss."""
    lines = run_tool([binutils_prefix(elf) + "size", str(elf)]).splitlines()
    text, data, bss = (int(v) for v in lines[1].split()[:3])
    return {"text": text, "data": data, "bss": bss, "flash": text + data, "ram": data + bss}


def elf_symbols(elf: Path) -> list[Symbol]:
    """Every sized symbol, largest last (`<prefix>nm -S --size-sort`)."""
    out = run_tool([binutils_prefix(elf) + "nm", "-S", "--size-sort", str(elf)])
    syms = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            syms.append(Symbol(parts[3], int(parts[0], 16), int(parts[1], 16), parts[2]))
    return syms


def symbol_address(elf: Path, name: str) -> int:
    for s in elf_symbols(elf):
        if s.name == name:
            return s.addr & ~1  # clear the Thumb bit
    raise CheckFailed(f"symbol {name} not found in {elf}")


def function_ranges(elf: Path, names) -> list[tuple[int, int]]:
    """[lo, hi) address ranges of the named functions that exist in `elf` (Thumb bit cleared),
    with gcc's specialised clones of them (`name.constprop.0`, `name.isra.0`, ...)."""
    wanted = set(names)
    return [
        (s.addr & ~1, (s.addr & ~1) + s.size)
        for s in elf_symbols(elf)
        if s.name.split(".", 1)[0] in wanted and s.region == "text" and s.size > 0
    ]
