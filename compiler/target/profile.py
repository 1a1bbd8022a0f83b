"""Board profiles: one folder `boards/<name>/` per board, holding `board.toml`.

A profile gives the core, clock, memories, ISA features, build flags, qemu machine and cost
model. Boards with `kind = "qemu"` run under qemu-system-arm; `kind = "estimate"` profiles only
feed the budget (cores qemu cannot run).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from stapes.errors import UserError


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

    @property
    def runs(self) -> bool:
        return self.kind == "qemu"

    @property
    def has_dsp(self) -> bool:
        return bool(self.isa.get("dsp", False))


def boards_root() -> Path:
    return Path(str(resources.files("stapes.boards")))


def common_dir() -> Path:
    """Startup, semihosting, linker script and driver templates shared by every board."""
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
        )
    except KeyError as e:
        raise UserError(f"board profile {path} lacks key {e}") from None
