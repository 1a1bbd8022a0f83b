"""The RISC-V board (qemu-system-riscv32 -M virt, rv32imc, bare metal): the profile selects the
toolchain, startup, linker script and qemu; emitted models run bit-exact with the host build and
the reference for both cells, dense and low-rank, int8 and int16; the fitted budget is within 10 %
of qemu's count; the calibration writes itself back into board.toml."""

from __future__ import annotations

import dataclasses
import subprocess
import tomllib

import numpy as np
import pytest

from stapes.cli import main as cli_main
from stapes.errors import CheckFailed, UserError
from stapes.host.random_models import random_qgraph
from stapes.target import calibrate, profile, qemu, run, toolchain
from stapes.target.budget import budget, shape_of_qgraph

BOARD_NAME = "qemu-virt-rv32imc"
BOARD = profile.load_board(BOARD_NAME)
NO_RISCV = toolchain.toolchain_missing(BOARD)
needs_riscv = pytest.mark.skipif(NO_RISCV is not None, reason=f"no RISC-V toolchain: {NO_RISCV}")

PROGRAM = r"""
#include <stdint.h>
#include "stp_board_io.h"
static int16_t w[64];
static int32_t dot(const int16_t *a, int n)
{
    int32_t s = 0;
    for (int i = 0; i < n; i++) s += a[i] * a[i];
    return s;
}
int main(void)
{
    for (int i = 0; i < 64; i++) w[i] = (int16_t)(i * 37 - 900);
    for (int f = 0; f < 3; f++) {
        stp_board_frame_begin();
        int32_t s = dot(w, 16 * (f + 1));
        stp_board_frame_end();
        char line[12];
        int n = 0;
        for (int k = 28; k >= 0; k -= 4) line[n++] = "0123456789abcdef"[((uint32_t)s >> k) & 15u];
        line[n++] = '\n';
        stp_io_write(line, (size_t)n);
    }
    return EXIT_STATUS;
}
"""


def test_profile_selects_the_riscv_toolchain_startup_and_qemu():
    assert BOARD.runs and BOARD.arch == "riscv" and not BOARD.has_dsp
    assert BOARD.tools == (
        "riscv64-unknown-elf-gcc",
        "riscv64-unknown-elf-size",
        "riscv64-unknown-elf-nm",
        "riscv64-unknown-elf-objdump",
        "qemu-system-riscv32",
    )
    assert BOARD.support_file(BOARD.linker_script) == profile.common_dir() / "riscv-virt.ld"
    assert all(BOARD.support_file(f).is_file() for f in BOARD.startup)
    assert (BOARD.qemu_machine, BOARD.qemu_args) == ("virt", ("-bios", "none"))
    m4 = profile.load_board("mps2-an386")  # the arch "arm" defaults
    assert (m4.arch, m4.toolchain, m4.linker_script, m4.qemu_binary) == (
        "arm",
        "arm-none-eabi-",
        "mps2.ld",
        "qemu-system-arm",
    )


def test_board_list_shows_the_riscv_board(capsys):
    assert cli_main(["board", "list"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(BOARD_NAME))
    assert line.split()[1] == "qemu" and "rv32imc" in line


def test_a_riscv_profile_without_its_toolchain_keys_is_a_user_error(tmp_path, monkeypatch):
    text = (BOARD.folder / "board.toml").read_text().replace('toolchain = "riscv64-unknown-elf-"', "")
    (tmp_path / "broken-rv").mkdir()
    (tmp_path / "broken-rv" / "board.toml").write_text(text)
    monkeypatch.setattr(profile, "boards_root", lambda: tmp_path)
    with pytest.raises(UserError, match="lacks toolchain"):
        profile.load_board("broken-rv")


def test_missing_riscv_tools_are_named_with_the_install_line(monkeypatch):
    monkeypatch.setattr(toolchain.shutil, "which", lambda t: None if t.startswith("riscv64") else "/bin/" + t)
    reason = toolchain.toolchain_missing(BOARD)
    assert reason.startswith("missing riscv64-unknown-elf-gcc") and "qemu-system-misc" in reason
    assert toolchain.toolchain_missing() is None  # the default (ARM) board's tools are there


def test_non_elf_file_is_a_failed_check(tmp_path):
    (tmp_path / "x.elf").write_bytes(b"not an elf at all, just bytes")
    with pytest.raises(CheckFailed, match="not an ELF"):
        toolchain.elf_sizes(tmp_path / "x.elf")


@pytest.fixture(scope="module")
def program_build(tmp_path_factory):
    if NO_RISCV is not None:
        pytest.skip(f"no RISC-V toolchain: {NO_RISCV}")
    work = tmp_path_factory.mktemp("rvprog")
    src = work / "prog.c"
    src.write_text(PROGRAM)
    defines = {"EXIT_STATUS": "42"}
    host = subprocess.run([toolchain.host_build([src], work, defines=defines)], capture_output=True)
    return toolchain.cross_build(BOARD, [src], work, defines=defines), host


@pytest.mark.board
def test_semihosted_output_and_exit_status_equal_host(program_build):
    build, host = program_build
    res = qemu.run_qemu(BOARD, build.elf)
    assert res.returncode == host.returncode == 42
    assert res.stdout == host.stdout and res.stdout.count(b"\n") == 3
    assert res.stack_peak is not None and 0 < res.stack_peak < 4096
    syms = {s.name: s for s in toolchain.elf_symbols(build.elf)}
    assert syms["w"].size == 128 and syms["w"].region == "bss"
    assert toolchain.elf_sizes(build.elf)["bss"] >= 128
    assert syms["stp_board_start"].addr == 0x80000000  # the reset ROM's jump target


@pytest.mark.board
def test_plugin_and_singlestep_counts_agree(program_build):
    build, _ = program_build
    single = qemu.run_qemu(BOARD, build.elf, count=True, method="singlestep")
    steps = [b - a for a, b in zip(single.frame_insns, single.frame_insns[1:])]
    assert len(single.frame_insns) == 3 and len(set(steps)) == 1 and steps[0] >= 16 * 4
    if qemu.insn_plugin() is None:
        pytest.skip("qemu plugin header unavailable; singlestep counting checked only")
    plugin = qemu.run_qemu(BOARD, build.elf, count=True, method="plugin")
    assert (plugin.total_insns, plugin.frame_insns) == (single.total_insns, single.frame_insns)


@pytest.mark.board
@needs_riscv
def test_a_fault_ends_the_run_with_status_127(tmp_path):
    src = tmp_path / "fault.c"
    src.write_text('int main(void) { __asm__ volatile("unimp"); return 0; }\n')
    elf = toolchain.cross_build(BOARD, [src], tmp_path).elf
    assert qemu.run_qemu(BOARD, elf).returncode == 127  # illegal instruction -> trap -> 127


# cell, I, N, O, rank, weights, readout mode, activation: every cell x dense/low-rank x int8/int16,
# odd sizes (misaligned rows) and both readouts among them; small, so the file stays quick.
CASES = [
    ("rnn", 3, 16, 2, None, "int16", "per_step", "linear"),
    ("rnn", 2, 13, 1, None, "int8", "final", "sigmoid"),
    ("rnn", 4, 20, 3, 5, "int16", "per_step", "sigmoid"),
    ("rnn", 5, 17, 2, 4, "int8", "per_step", "linear"),
    ("mgu", 3, 12, 2, None, "int16", "final", "linear"),
    ("mgu", 1, 19, 2, None, "int8", "per_step", "sigmoid"),
    ("mgu", 4, 24, 2, 6, "int16", "per_step", "linear"),
    ("mgu", 6, 15, 3, 5, "int8", "per_step", "linear"),
    ("mgu", 7, 64, 5, None, "int16", "per_step", "linear"),  # the size the report quotes
]
CASE_IDS = [f"{c[0]}-N{c[2]}-{'dense' if c[4] is None else f'r{c[4]}'}-{c[5]}" for c in CASES]
FRAMES = 6


@pytest.fixture(scope="module")
def board_runs(tmp_path_factory):
    """Each case emitted, run on the host and under qemu, compared with the reference, once."""
    if NO_RISCV is not None:
        pytest.skip(f"no RISC-V toolchain: {NO_RISCV}")
    out = {}
    for k, (cell, i, n, o, rank, weights, mode, act) in enumerate(CASES):
        q = random_qgraph(
            100 + k,
            weights,
            kind=cell,
            hidden=n,
            inputs=i,
            outputs=o,
            rank=rank,
            readout_mode=mode,
            readout_activation=act,
        )
        work = tmp_path_factory.mktemp(f"rv{k}")
        out[CASE_IDS[k]] = (q, run.run_qgraph(q, BOARD, work, frames=FRAMES, seed=k))
    return out


@pytest.mark.board
@pytest.mark.parametrize("case", CASE_IDS)
def test_riscv_equals_host_and_reference(board_runs, case):
    _, res = board_runs[case]
    assert res.returncode == 0 and res.host_returncode == 0
    assert res.same_as_host, "RISC-V output bytes differ from the host build"
    assert res.same_as_reference, res.first_mismatch
    assert len(res.frame_insns) == FRAMES and min(res.frame_insns) > 0


@pytest.mark.board
@pytest.mark.parametrize("case", CASE_IDS)
def test_budget_within_ten_percent_of_qemu(board_runs, case):
    q, res = board_runs[case]
    measured = float(np.mean(res.frame_insns))
    estimate = budget(shape_of_qgraph(q), BOARD, 8.0).instructions
    assert estimate is not None, "no [insn_model]: run python -m stapes.target.calibrate qemu-virt-rv32imc --write"
    assert abs(estimate / measured - 1) <= 0.10, (
        f"budget {estimate:,.0f} vs qemu {measured:,.0f} instructions/frame "
        "(stale fit? python -m stapes.target.calibrate qemu-virt-rv32imc --write)"
    )


def test_calibration_is_written_back_into_board_toml(tmp_path):
    """--write replaces the block from its comment to the end and keeps everything above."""
    (tmp_path / "board.toml").write_text((BOARD.folder / "board.toml").read_text())
    board = dataclasses.replace(BOARD, folder=tmp_path)
    result = {
        "insn_model": {"const": 12.5, "mac16_scalar": 7.0},
        "code_model": {"runtime_code": 100, "board_code": 0, "stack": 64},
        "max_rel_error": 0.0123,
        "dot_costs": {"dot_call16": 12.0},
    }
    calibrate.write_calibration(board, result)
    text = (tmp_path / "board.toml").read_text()
    raw = tomllib.loads(text)
    assert raw["insn_model"] == result["insn_model"] and raw["code_model"] == result["code_model"]
    assert raw["cost"] == tomllib.loads((BOARD.folder / "board.toml").read_text())["cost"]
    assert text.count(calibrate.CALIBRATION_MARK) == 1 and "1.23 %" in text
    calibrate.write_calibration(board, result)  # idempotent
    assert (tmp_path / "board.toml").read_text() == text

    (tmp_path / "board.toml").write_text(text + "\n[extra]\nx = 1\n")
    with pytest.raises(CheckFailed, match=r"\[extra\] follow the calibration"):
        calibrate.write_calibration(board, result)


def test_riscv_profile_has_a_fitted_budget():
    assert BOARD.insn_model.get("mac16_scalar", 0) > 0 and BOARD.code_model.get("runtime_code", 0) > 0
    b = budget(shape_of_qgraph(random_qgraph(1, kind="mgu", hidden=32, inputs=4, outputs=2)), BOARD, 8.0)
    assert b.instructions_source == "qemu-fitted model" and b.instructions > 32 * 32 * 2 * 7
