"""Board infrastructure on a small C program of our own: profiles, builds, qemu, counts, sizes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from stapes.errors import CheckFailed, UserError
from stapes.target import profile, qemu, toolchain

NO_TOOLCHAIN = toolchain.toolchain_missing()
needs_toolchain = pytest.mark.skipif(NO_TOOLCHAIN is not None, reason=f"no cross toolchain: {NO_TOOLCHAIN}")

# A dot product whose instruction count per frame grows by a fixed amount per element,
# printed through stp_io_write, with a recognisable exit status.
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
    for (int f = 0; f < 4; f++) {
        stp_board_frame_begin();
        int32_t s = dot(w, 16 * (f + 1));
        stp_board_frame_end();
        char t[12], line[16];
        int k = 0, n = 0;
        uint32_t u = (uint32_t)s;
        do { t[k++] = (char)('0' + u % 10u); u /= 10u; } while (u);
        while (k) line[n++] = t[--k];
        line[n++] = '\n';
        stp_io_write(line, (size_t)n);
    }
    return EXIT_STATUS;
}
"""

DSP_PROGRAM = r"""
#include <stdint.h>
#include "stp_board_io.h"
int main(void)
{
    volatile int32_t a = 0x00030002, b = 0x00050004;
#if defined(__ARM_FEATURE_DSP)
    int32_t r;
    __asm__ volatile("smlad %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(1));
    return (int)r;   /* 1 + 2*4 + 3*5 = 24 */
#else
    return (int)(1 + (a & 0xFFFF) * (b & 0xFFFF) + (a >> 16) * (b >> 16));
#endif
}
"""


def test_profiles_load_and_estimates_are_marked():
    names = profile.board_names()
    for real in ("mps2-an385", "mps2-an386", "mps2-an500"):
        assert real in names and profile.load_board(real).runs
    estimates = [n for n in names if not profile.load_board(n).runs]
    assert len(estimates) >= 2
    for n in estimates:
        board = profile.load_board(n)
        assert board.kind == "estimate" and "estimate" in board.description.lower()
    assert profile.load_board("mps2-an386").has_dsp and not profile.load_board("mps2-an385").has_dsp


def test_unknown_board_is_a_user_error():
    with pytest.raises(UserError, match="unknown board"):
        profile.load_board("no-such-board")


def test_estimate_board_cannot_run():
    est = next(n for n in profile.board_names() if not profile.load_board(n).runs)
    with pytest.raises(UserError, match="estimate-only"):
        toolchain.require_runnable(profile.load_board(est))


def _write(tmp_path: Path, text: str) -> Path:
    src = tmp_path / "prog.c"
    src.write_text(text)
    return src


@pytest.mark.board
@needs_toolchain
def test_target_output_and_exit_code_equal_host(tmp_path):
    src = _write(tmp_path, PROGRAM)
    defines = {"EXIT_STATUS": "42"}
    host = subprocess.run([toolchain.host_build([src], tmp_path, defines=defines)], capture_output=True)
    board = profile.load_board("mps2-an386")
    build = toolchain.cross_build(board, [src], tmp_path, defines=defines)
    run = qemu.run_qemu(board, build.elf)
    assert run.returncode == host.returncode == 42
    assert run.stdout == host.stdout and run.stdout.count(b"\n") == 4
    sizes = toolchain.elf_sizes(build.elf)
    assert sizes["text"] > 0 and sizes["bss"] >= 128
    syms = {s.name: s for s in toolchain.elf_symbols(build.elf)}
    assert syms["w"].size == 128 and syms["w"].region == "bss"
    assert "main" in build.stack_usage


@pytest.mark.board
@needs_toolchain
def test_instruction_counts_are_exact_and_methods_agree(tmp_path):
    src = _write(tmp_path, PROGRAM)
    board = profile.load_board("mps2-an386")
    build = toolchain.cross_build(board, [src], tmp_path, defines={"EXIT_STATUS": "0"})
    single = qemu.run_qemu(board, build.elf, count=True, method="singlestep")
    assert len(single.frame_insns) == 4
    steps = [b - a for a, b in zip(single.frame_insns, single.frame_insns[1:])]
    assert len(set(steps)) == 1 and steps[0] >= 16  # 16 more elements per frame, same cost each
    if qemu.insn_plugin() is None:
        pytest.skip("qemu plugin header unavailable; singlestep counting checked only")
    plugin = qemu.run_qemu(board, build.elf, count=True, method="plugin")
    assert (plugin.total_insns, plugin.frame_insns) == (single.total_insns, single.frame_insns)


@pytest.mark.board
@needs_toolchain
def test_dsp_path_only_in_dsp_builds(tmp_path):
    src = _write(tmp_path, DSP_PROGRAM)
    m4, m3, m7 = (profile.load_board(n) for n in ("mps2-an386", "mps2-an385", "mps2-an500"))
    m4_elf = toolchain.cross_build(m4, [src], tmp_path, name="m4").elf
    assert qemu.run_qemu(m4, m4_elf).returncode == 24
    assert qemu.run_qemu(m7, toolchain.cross_build(m7, [src], tmp_path, name="m7").elf).returncode == 24
    assert qemu.run_qemu(m3, toolchain.cross_build(m3, [src], tmp_path, name="m3").elf).returncode == 24

    # qemu 7.2's Cortex-M3 model does not UNDEF SMLAD, so the M3 run cannot catch a DSP
    # instruction by faulting; check the M3 image instead: no DSP instruction may be in it.
    def disasm(name):
        return subprocess.run(
            ["arm-none-eabi-objdump", "-d", str(tmp_path / f"{name}.elf")], capture_output=True, text=True, check=True
        ).stdout

    assert "smlad" in disasm("m4") and "smlad" in disasm("m7") and "smlad" not in disasm("m3")


@pytest.mark.board
@needs_toolchain
def test_hung_program_times_out(tmp_path):
    src = _write(tmp_path, 'int main(void) { for (;;) { __asm__ volatile(""); } }\n')
    board = profile.load_board("mps2-an386")
    elf = toolchain.cross_build(board, [src], tmp_path).elf
    with pytest.raises(CheckFailed, match="timed out"):
        qemu.run_qemu(board, elf, timeout=1.0)


def test_demo_stage_says_how_to_get_the_toolchain(monkeypatch, tmp_path):
    import argparse

    from stapes.studies.demo import STAGES, DemoContext, stage_board

    assert stage_board in STAGES
    monkeypatch.setattr(
        toolchain, "toolchain_missing", lambda: f"missing qemu-system-arm; install with: {toolchain.INSTALL_HINT}"
    )
    ctx = DemoContext(argparse.Namespace(), tmp_path / "out", tmp_path / "work")
    stage_board(ctx)
    ((title, lines),) = ctx.report
    assert "Cortex-M4" in title and lines[0].startswith("skipped:") and "apt-get install" in lines[0]
