"""Board profiles: one folder `boards/<name>/` per board, holding `board.toml`.

A profile gives the core, clock, memories, ISA features, build flags, qemu machine and cost
model. Boards with `kind = "qemu"` run under qemu; `kind = "estimate"` profiles only feed the
budget (cores qemu cannot run). Everything a build and a run need comes from the profile: the
cross toolchain's prefix, the startup files and linker script (boards/common/ or the board's own
folder), the qemu binary, machine and extra arguments. `arch` names the instruction set; for
"arm" (the MPS2 boards) these keys default to the Cortex-M setup, any other arch spells them out.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from stapes.errors import UserError

# What an `arch = "arm"` profile builds and runs with unless its board.toml says otherwise.
ARCH_DEFAULTS = {
    "arm": {
        "toolchain": "arm-none-eabi-",
        "linker_script": "mps2.ld",
        "startup": ("stp_board_startup.c", "stp_board_semihost.c"),
        "install": "apt-get install --no-install-recommends gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm",
        "qemu_binary": "qemu-system-arm",
    },
}


@dataclass(frozen=True)
class Board:
    """One board profile (boards/<name>/board.toml)."""

    name: str
    kind: str  # "qemu" (runs) | "estimate" (profile only)
    description: str
    core: str
    clock_hz: int
    flash_bytes: int
    ram_bytes: int
    isa: dict  # e.g. {"dsp": True, "fpu": "fpv4-sp-d16", "word_bits": 32}
    cflags: tuple[str, ...]  # target-specific compiler flags
    qemu_machine: str | None
    cost: dict  # cycles per mac / load / lut / call / other instruction
    insn_model: dict  # instruction model coefficients (calibrated under qemu)
    code_model: dict  # code-size model in bytes
    folder: Path = field(compare=False)
    arch: str = "arm"  # instruction set: "arm" | "riscv"
    toolchain: str = ARCH_DEFAULTS["arm"]["toolchain"]  # cross tool prefix: <prefix>gcc, <prefix>nm, ...
    linker_script: str = ARCH_DEFAULTS["arm"]["linker_script"]  # file name (board folder, else common)
    startup: tuple[str, ...] = ARCH_DEFAULTS["arm"]["startup"]  # startup + I/O sources (same lookup)
    install_hint: str = ARCH_DEFAULTS["arm"]["install"]  # how to get the toolchain and qemu
    qemu_binary: str = ARCH_DEFAULTS["arm"]["qemu_binary"]
    qemu_args: tuple[str, ...] = ()  # extra qemu arguments after -M MACHINE (e.g. -bios none)

    @property
    def runs(self) -> bool:
        return self.kind == "qemu"

    @property
    def has_dsp(self) -> bool:
        return bool(self.isa.get("dsp", False))

    def support_file(self, name: str) -> Path:
        """A startup file or linker script: the board's own folder first, then boards/common."""
        own = self.folder / name
        return own if own.is_file() else common_dir() / name

    @property
    def tools(self) -> tuple[str, ...]:
        """The programs a build and run of this board call."""
        return (*(self.toolchain + t for t in ("gcc", "size", "nm", "objdump")), self.qemu_binary)


def boards_root() -> Path:
    return Path(str(resources.files("stapes.boards")))


def common_dir() -> Path:
    """Startup, semihosting, linker script and driver templates shared by every board."""
    return boards_root() / "common"


def board_names() -> list[str]:
    return sorted(p.parent.name for p in boards_root().glob("*/board.toml"))


def _toolchain_setup(raw: dict, path: Path) -> dict:
    """The Board fields that say how to build and run: the arch's defaults, overridden by the
    profile's [build] and [qemu] keys; a runnable profile must end up with all of them."""
    arch = raw.get("arch", "arm")
    build, qemu = raw.get("build", {}), raw.get("qemu", {})
    given = {k: build[k] for k in ("toolchain", "linker_script", "startup", "install") if k in build}
    if "binary" in qemu:
        given["qemu_binary"] = qemu["binary"]
    setup = {**ARCH_DEFAULTS.get(arch, {}), **given}
    missing = [k for k in ("toolchain", "linker_script", "startup", "install", "qemu_binary") if k not in setup]
    if raw.get("kind") == "qemu" and missing:
        raise UserError(
            f"board profile {path} (arch {arch!r}) lacks {', '.join(missing)}: "
            "set [build] toolchain, linker_script, startup, install and [qemu] binary"
        )
    out = {"arch": arch, "qemu_args": tuple(qemu.get("args", []))}
    if "install" in setup:
        out["install_hint"] = setup.pop("install")
    if "startup" in setup:
        setup["startup"] = tuple(setup["startup"])
    return {**out, **setup}


def load_board(name: str) -> Board:
    """The profile of board `name`; a UserError names the known boards when it does not exist."""
    path = boards_root() / name / "board.toml"
    if not path.is_file():
        raise UserError(f"unknown board {name!r} (known: {', '.join(board_names())})")
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    try:
        return Board(
            name=raw["name"],
            kind=raw["kind"],
            description=raw["description"],
            core=raw["core"],
            clock_hz=int(raw["clock_hz"]),
            flash_bytes=int(raw["flash_bytes"]),
            ram_bytes=int(raw["ram_bytes"]),
            isa=dict(raw.get("isa", {})),
            cflags=tuple(raw.get("build", {}).get("cflags", [])),
            qemu_machine=raw.get("qemu", {}).get("machine"),
            cost=dict(raw["cost"]),
            insn_model=dict(raw.get("insn_model", {})),
            code_model=dict(raw.get("code_model", {})),
            folder=path.parent,
            **_toolchain_setup(raw, path),
        )
    except KeyError as e:
        raise UserError(f"board profile {path} lacks key {e}") from None
