"""The ARMv6-M board (qemu-system-arm -M microbit, a Cortex-M0, running the Cortex-M0+ build):
emitted models bit-exact with the host build and the reference, the fitted budget within 10 % of
qemu's count, qemu enforcing ARMv6-M, and the M0+ estimate borrowing this board's counts."""

from __future__ import annotations

import numpy as np
import pytest

from stapes.host.random_models import random_qgraph
from stapes.target import profile, qemu, run, toolchain
from stapes.target.budget import budget, estimate_cycles, shape_of_qgraph

BOARD = profile.load_board("nrf51-microbit")
NO_TOOLCHAIN = toolchain.toolchain_missing(BOARD)
pytestmark = [
    pytest.mark.board,
    pytest.mark.skipif(NO_TOOLCHAIN is not None, reason=f"no cross toolchain: {NO_TOOLCHAIN}"),
]

# cell, I, N, O, rank, weights: both cells, dense and low-rank, int8 and int16, odd sizes among them
CASES = [
    ("rnn", 3, 16, 2, None, "int16"),
    ("rnn", 5, 17, 3, 4, "int8"),
    ("mgu", 2, 13, 2, None, "int8"),
    ("mgu", 4, 24, 2, 6, "int16"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-N{c[2]}-r{c[4]}-{c[5]}")
def test_m0_equals_host_and_reference_and_budget(case, tmp_path):
    cell, i, n, o, rank, weights = case
    q = random_qgraph(n + i, weights, kind=cell, hidden=n, inputs=i, outputs=o, rank=rank)
    res = run.run_qgraph(q, BOARD, tmp_path, frames=6, seed=n)
    assert res.returncode == 0 and res.same_as_host, "M0 output differs from the host build"
    assert res.same_as_reference, res.first_mismatch
    assert res.stack_measured and res.ram_buffers + res.stack < BOARD.ram_bytes
    measured = float(np.mean(res.frame_insns))
    estimate = budget(shape_of_qgraph(q), BOARD, 8.0).instructions
    assert abs(estimate / measured - 1) <= 0.10, (
        f"budget {estimate:,.0f} vs qemu {measured:,.0f} (stale fit? "
        "python -m stapes.target.calibrate nrf51-microbit --write)"
    )


def test_qemu_enforces_armv6m(tmp_path):
    """SDIV (ARMv7-M, not ARMv6-M) faults on the M0 and ends the run with status 127: the board
    catches a runtime that uses an instruction ARMv6-M lacks (the M3 board would run it)."""
    body = '#include "stp_board_io.h"\nint main(void) { %s stp_io_write("ok\\n", 3); return 5; }\n'
    (tmp_path / "plain.c").write_text(body % "")
    (tmp_path / "sdiv.c").write_text(body % '__asm__ volatile(".inst.w 0xfb90f0f0");')  # sdiv r0, r0, r0
    plain = qemu.run_qemu(BOARD, toolchain.cross_build(BOARD, [tmp_path / "plain.c"], tmp_path, name="p").elf)
    assert (plain.returncode, plain.stdout) == (5, b"ok\n")
    sdiv = qemu.run_qemu(BOARD, toolchain.cross_build(BOARD, [tmp_path / "sdiv.c"], tmp_path, name="s").elf)
    assert (sdiv.returncode, sdiv.stdout) == (127, b"")


def test_m0plus_estimate_borrows_the_measured_m0_model():
    est = profile.load_board("cortex-m0plus-estimate")
    assert not est.runs and est.cost["insn_model_from"] == BOARD.name
    shape = shape_of_qgraph(random_qgraph(3, kind="mgu", hidden=32, inputs=4, outputs=2))
    insns = budget(shape, BOARD, 8.0).instructions
    # the same image: at least one cycle per instruction on the single-issue M0+
    assert estimate_cycles(shape, est) >= insns
