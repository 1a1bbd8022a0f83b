"""Budgets: exact counts against the reference and the emitter; estimates against qemu and size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_board import random_qgraph

from stapes.cli import main as cli_main
from stapes.emit.model_c import summary
from stapes.errors import UserError
from stapes.fixed.reference import frame_ops
from stapes.target import budget as BU
from stapes.target import profile, run, toolchain

NO_TOOLCHAIN = toolchain.toolchain_missing()

SHAPES = [
    ("rnn", 3, 16, 2, None, 16, "per_step", "linear"),
    ("rnn", 5, 17, 3, 4, 8, "per_step", "sigmoid"),
    ("mgu", 1, 19, 2, None, 16, "final", "sigmoid"),
    ("mgu", 6, 40, 3, 5, 8, "per_step", "linear"),
    ("mgu", 4, 64, 2, 16, 16, "per_step", "linear"),
]


@pytest.mark.parametrize("case", SHAPES, ids=lambda c: f"{c[0]}-N{c[2]}-r{c[4]}-int{c[5]}")
def test_counts_and_bytes_equal_reference_and_emitter(case):
    cell, i, n, o, rank, bits, mode, act = case
    q = random_qgraph(cell, i, n, o, rank, bits, seed=3, mode=mode, act=act)
    shape = BU.shape_of_qgraph(q)
    counts = BU.step_counts(shape)
    ops = frame_ops(q)
    assert counts["macs"] == ops["mac"] and counts["luts"] == ops["lut"]
    em = summary(q)
    wb = BU.weight_bytes(shape)
    assert wb["weights"] + wb["shifts"] + wb["biases"] == em["weight_bytes"]
    assert wb["tables"] == em["table_bytes"]
    ram = BU.ram_bytes(shape)
    assert ram["state"] == em["state_bytes"] and ram["scratch"] == em["scratch_bytes"]


def test_budget_fields_and_estimate_boards():
    shape = BU.ModelShape("mgu", 4, 64, 2, {"u_f": 8, "u_h": 8}, 8)
    for name in profile.board_names():
        board = profile.load_board(name)
        b = BU.budget(shape, board, frame_ms=8)
        assert b.flash["total"] > b.flash["weights"] > 0 and b.ram["total"] > 0 and b.cycles > 0
        assert 0 < b.core_share == pytest.approx(b.cycles / (board.clock_hz * 0.008))
        if not board.runs:
            assert any("estimate-only" in n for n in b.notes)
        text = BU.format_budget(b)
        assert "MACs/frame" in text and "% of the core" in text
    # halving the frame period doubles the share of the core
    m4 = profile.load_board("mps2-an386")
    assert BU.budget(shape, m4, 4).core_share == pytest.approx(2 * BU.budget(shape, m4, 8).core_share)


def test_low_rank_is_cheaper_than_dense():
    m4 = profile.load_board("mps2-an386")
    dense = BU.budget(BU.ModelShape("mgu", 4, 128, 2, {"u_f": None, "u_h": None}, 16), m4, 8)
    low = BU.budget(BU.ModelShape("mgu", 4, 128, 2, {"u_f": 16, "u_h": 16}, 16), m4, 8)
    assert low.counts["macs"] < dense.counts["macs"] and low.flash["total"] < dense.flash["total"]
    assert low.instructions < dense.instructions and low.cycles < dense.cycles


def test_user_errors():
    m4 = profile.load_board("mps2-an386")
    shape = BU.ModelShape("rnn", 2, 8, 1, {"u": None})
    with pytest.raises(UserError):
        BU.budget(shape, m4, frame_ms=0)
    with pytest.raises(UserError):
        BU.ModelShape("rnn", 2, 8, 1, {"u": 9})
    with pytest.raises(UserError):
        BU.ModelShape("gru", 2, 8, 1, {})


def test_budget_cli_table_and_json(tmp_path, capsys):
    q = random_qgraph("mgu", 3, 32, 2, 8, 16, seed=4)
    (tmp_path / "q").mkdir()
    q.save(tmp_path / "q")
    assert cli_main(["budget", str(tmp_path / "q"), "--board", "mps2-an386", "--frame-ms", "8"]) == 0
    assert "instructions/frame" in capsys.readouterr().out
    assert cli_main(["budget", str(tmp_path / "q"), "--board", "mps2-an386", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["macs"] == frame_ops(q)["mac"] and data["board"] == "mps2-an386"
    assert cli_main(["budget", str(tmp_path / "q"), "--board", "nope"]) == 2
    assert cli_main(["budget", str(tmp_path), "--board", "mps2-an386"]) == 2


CHECK_SHAPES = [  # sizes not in the calibration set
    ("rnn", 4, 28, 2, None, 16, "per_step", "linear"),
    ("mgu", 3, 36, 2, 6, 8, "per_step", "linear"),
    ("mgu", 2, 56, 3, None, 16, "per_step", "sigmoid"),
    ("mgu", 5, 80, 2, 20, 16, "final", "linear"),
]


@pytest.mark.board
@pytest.mark.skipif(NO_TOOLCHAIN is not None, reason=f"no cross toolchain: {NO_TOOLCHAIN}")
@pytest.mark.parametrize("board_name", ["mps2-an386", "mps2-an385"])
def test_budget_matches_size_and_qemu(board_name, tmp_path):
    """Predicted flash within 5 % of arm-none-eabi-size, RAM buffers equal to the ELF's, stack at least the measured peak,
    instructions within 10 % of qemu."""
    board = profile.load_board(board_name)
    for k, case in enumerate(CHECK_SHAPES):
        cell, i, n, o, rank, bits, mode, act = case
        q = random_qgraph(cell, i, n, o, rank, bits, seed=k, mode=mode, act=act)
        res = run.run_qgraph(q, board, Path(tmp_path) / str(k), frames=4, seed=k)
        assert res.same_as_reference, res.first_mismatch
        est = BU.budget(BU.shape_of_qgraph(q), board, 8)
        flash, ram = res.sizes["flash_model"], res.sizes["ram"]
        assert abs(est.flash["total"] / flash - 1) <= 0.05, (case, est.flash, flash)
        assert est.ram["total"] - est.ram["stack"] == res.ram_buffers <= ram, (case, est.ram, res.ram_buffers, ram)
        # The painted stack's peak: the budget's stack must cover it (an upper bound, not a guess).
        assert res.stack_measured and 0 < res.stack <= est.ram["stack"], (case, est.ram["stack"], res.stack)
        measured = float(np.mean(res.frame_insns))
        assert abs(est.instructions / measured - 1) <= 0.10, (case, est.instructions, measured)


@pytest.mark.parametrize("board_name", ["mps2-an385", "mps2-an386"])
@pytest.mark.parametrize("case", SHAPES, ids=lambda c: f"{c[0]}-N{c[2]}-r{c[4]}-int{c[5]}")
def test_a_single_issue_core_needs_at_least_a_cycle_per_instruction(board_name, case):
    """The Cortex-M3 and M4 issue one instruction per cycle at most: the cycle estimate can never
    be below the (qemu-calibrated) instruction estimate."""
    cell, i, n, o, rank, bits, mode, act = case
    ranks = {k: rank for k in (("u_f", "u_h") if cell == "mgu" else ("u",))}
    shape = BU.ModelShape(cell, i, n, o, ranks, bits, mode, act)
    b = BU.budget(shape, profile.load_board(board_name), frame_ms=8)
    assert b.instructions is not None and b.cycles >= b.instructions, (b.cycles, b.instructions)
