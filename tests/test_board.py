"""Emitted models on the boards under qemu: identical to the host build and to the reference."""

from __future__ import annotations

import numpy as np
import pytest

from stapes.cli import main as cli_main
from stapes.fixed.quantize import quantize_graph
from stapes.ir.float_graph import FloatGraph, MGUCell, Readout, RNNCell
from stapes.ir.lowrank import svd_factors
from stapes.target import profile, qemu, run, toolchain

NO_TOOLCHAIN = toolchain.toolchain_missing()
pytestmark = [
    pytest.mark.board,
    pytest.mark.skipif(NO_TOOLCHAIN is not None, reason=f"no cross toolchain: {NO_TOOLCHAIN}"),
]


def random_qgraph(
    cell: str,
    i: int,
    n: int,
    o: int,
    rank: int | None,
    bits: int,
    seed: int,
    mode: str = "per_step",
    act: str = "linear",
):
    """A seeded random float model, quantized with analytic ranges."""
    rng = np.random.default_rng(seed)

    def recurrent():
        m = rng.standard_normal((n, n)) * (1.5 / np.sqrt(n))
        return m if rank is None else svd_factors(m, rank)

    def w():
        return rng.standard_normal((n, i))

    def b():
        return 0.2 * rng.standard_normal(n)

    c = RNNCell(w(), recurrent(), b()) if cell == "rnn" else MGUCell(w(), recurrent(), b(), w(), recurrent(), b())
    ro = Readout(rng.standard_normal((o, n)) / np.sqrt(n), 0.1 * rng.standard_normal(o), mode, act)
    return quantize_graph(FloatGraph(c, ro), weights=f"int{bits}")


CASES = [  # cell, I, N, O, rank, bits, readout mode, activation
    ("rnn", 3, 16, 2, None, 16, "per_step", "linear"),
    ("rnn", 5, 17, 3, 4, 8, "per_step", "sigmoid"),  # odd N: misaligned rows
    ("rnn", 2, 24, 1, None, 8, "final", "linear"),
    ("rnn", 4, 32, 2, 8, 16, "per_step", "linear"),
    ("mgu", 3, 32, 2, None, 8, "per_step", "linear"),
    ("mgu", 1, 19, 2, None, 16, "final", "sigmoid"),
    ("mgu", 6, 40, 3, 5, 8, "per_step", "linear"),
    ("mgu", 4, 48, 2, 12, 16, "per_step", "linear"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-N{c[2]}-r{c[4]}-int{c[5]}-{c[6]}")
def test_m4_equals_host_and_reference(case, tmp_path):
    cell, i, n, o, rank, bits, mode, act = case
    q = random_qgraph(cell, i, n, o, rank, bits, seed=n + bits, mode=mode, act=act)
    res = run.run_qgraph(q, profile.load_board("mps2-an386"), tmp_path, frames=12, seed=n)
    assert res.returncode == 0 and res.host_returncode == 0
    assert res.same_as_host, "M4 output bytes differ from the host build"
    assert res.same_as_reference, res.first_mismatch
    assert len(res.frame_insns) == 12 and min(res.frame_insns) > 0


@pytest.mark.parametrize("board", ["mps2-an385", "mps2-an500"])
@pytest.mark.parametrize("case", [CASES[1], CASES[6], CASES[7]], ids=lambda c: f"{c[0]}-N{c[2]}-int{c[5]}")
def test_m3_and_m7_equal_reference(board, case, tmp_path):
    cell, i, n, o, rank, bits, mode, act = case
    q = random_qgraph(cell, i, n, o, rank, bits, seed=7 * n, mode=mode, act=act)
    res = run.run_qgraph(q, profile.load_board(board), tmp_path, frames=8, seed=3)
    assert res.same_as_host and res.same_as_reference, res.first_mismatch


@pytest.mark.parametrize("bits", [8, 16])
def test_dsp_path_is_bit_exact_with_portable_and_faster(bits, tmp_path):
    """The M4 runs the SMLAD kernels, the M3 the portable loop: same bytes, fewer instructions."""
    q = random_qgraph("mgu", 4, 64, 2, None, bits, seed=11)
    m4 = run.run_qgraph(q, profile.load_board("mps2-an386"), tmp_path / "m4", frames=6, seed=5)
    m3 = run.run_qgraph(q, profile.load_board("mps2-an385"), tmp_path / "m3", frames=6, seed=5)
    assert (tmp_path / "m4" / "target.elf").is_file()
    assert m4.same_as_reference and m3.same_as_reference, (m4.first_mismatch, m3.first_mismatch)
    out4 = qemu.run_qemu(profile.load_board("mps2-an386"), tmp_path / "m4" / "target.elf").stdout
    out3 = qemu.run_qemu(profile.load_board("mps2-an385"), tmp_path / "m3" / "target.elf").stdout
    assert out4 == out3
    assert np.mean(m4.frame_insns) < 0.8 * np.mean(m3.frame_insns)


def test_a_wrong_target_result_is_caught(tmp_path, monkeypatch, capsys):
    q = random_qgraph("rnn", 2, 16, 1, None, 16, seed=1)
    (tmp_path / "q").mkdir()
    q.save(tmp_path / "q")
    assert cli_main(["board", "run", str(tmp_path / "q"), "--board", "mps2-an386", "--frames", "4"]) == 0
    out = capsys.readouterr().out
    assert "target == reference (every output and state): yes" in out and "instructions/MAC" in out
    real = run.reference_frames

    def off_by_one(qgraph, x, rank=0):
        y, h = real(qgraph, x, rank)
        h = h.copy()
        h[2, 5] += 1
        return y, h

    monkeypatch.setattr(run, "reference_frames", off_by_one)
    assert cli_main(["board", "run", str(tmp_path / "q"), "--board", "mps2-an386", "--frames", "4"]) == 1
    err = capsys.readouterr().err
    assert "states: 1 mismatching values" in err and "step 2, index 5" in err


def test_board_run_user_errors(tmp_path, capsys):
    assert cli_main(["board", "run", str(tmp_path), "--board", "mps2-an386"]) == 2
    q = random_qgraph("rnn", 2, 8, 1, None, 16, seed=2)
    (tmp_path / "q").mkdir()
    q.save(tmp_path / "q")
    assert cli_main(["board", "run", str(tmp_path / "q"), "--board", "cortex-m0plus-estimate"]) == 2
    assert "estimate-only" in capsys.readouterr().err
