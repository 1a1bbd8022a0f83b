"""`stapes plan`: configurations that fit the limits, the most accurate chosen, and why."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stapes.cli import main as cli_main
from stapes.errors import UserError
from stapes.ir.float_graph import FloatGraph, MGUCell, Readout
from stapes.target import plan as P
from stapes.target import profile
from stapes.tasks import make_task


def memorization_graph(n: int = 16, seed: int = 0, with_task: bool = True) -> FloatGraph:
    """A random MGU shaped for the memorization task (untrained: the metric is still defined)."""
    task = make_task("memorization", length=3, symbols=2, delay=4)
    rng = np.random.default_rng(seed)
    i, o = task.input_size, task.output_size

    def u():
        return rng.standard_normal((n, n)) * (1.2 / np.sqrt(n))

    cell = MGUCell(
        rng.standard_normal((n, i)),
        u(),
        0.1 * rng.standard_normal(n),
        rng.standard_normal((n, i)),
        u(),
        0.1 * rng.standard_normal(n),
    )
    ro = Readout(rng.standard_normal((o, n)), np.zeros(o), task.readout_mode, task.readout_activation)
    return FloatGraph(cell, ro, task.config() if with_task else None)


def test_parse_size():
    assert P.parse_size("32k") == 32768 and P.parse_size("1M") == 1 << 20 and P.parse_size("4096") == 4096
    for bad in ("", "k", "-3k", "12q"):
        with pytest.raises(UserError):
            P.parse_size(bad)


def test_rank_grid():
    assert P.rank_grid(64) == [None, 32, 16, 8, 4, 2]
    assert P.rank_grid(3) == [None]


def test_plan_respects_limits_and_picks_the_best_that_fits():
    g = memorization_graph()
    board = profile.load_board("mps2-an386")
    loose = P.make_plan(g, board, 8.0, 1 << 20, 1 << 20, n_eval=64)
    assert loose.chosen is not None and all(row["fits"] for row in loose.table)
    dense_flash = max(row["flash"] for row in loose.table)
    limit = (dense_flash + min(row["flash"] for row in loose.table)) // 2
    plan = P.make_plan(g, board, 8.0, limit, 1 << 20, n_eval=64)
    fitting = [r for r in plan.table if r["fits"]]
    assert 0 < len(fitting) < len(plan.table)
    assert all(r["flash"] <= limit for r in fitting)
    assert all(r["metric"] is None for r in plan.table if not r["fits"])
    best = max(r["metric"] for r in fitting)
    assert plan.chosen.fits and plan.chosen.flash <= limit and plan.chosen.metric >= best - 0.005
    assert "configurations fit" in plan.reason and "recall" in plan.metric_name
    text = P.format_plan(plan)
    assert "chosen:" in text and "why:" in text and f"flash {plan.chosen.flash}" in plan.reason


def test_nothing_fits_says_why():
    plan = P.make_plan(memorization_graph(), profile.load_board("mps2-an386"), 8.0, 1000, 1 << 20, n_eval=32)
    assert plan.chosen is None and "nothing fits" in plan.reason and "flash" in plan.reason


def test_plan_without_task_uses_singular_value_energy():
    plan = P.make_plan(
        memorization_graph(with_task=False), profile.load_board("cortex-m0plus-estimate"), 8.0, 1 << 20, 1 << 20
    )
    assert plan.chosen is not None and plan.chosen.ranks == {"u_f": None, "u_h": None}
    dense = [r for r in plan.table if r["ranks"] == {"u_f": None, "u_h": None}]
    assert plan.chosen.cycles == min(r["cycles"] for r in dense) and "energy" in plan.metric_name


def test_plan_cli(tmp_path, capsys):
    g = memorization_graph(n=8)
    (tmp_path / "m").mkdir()
    g.save(tmp_path / "m")
    assert (
        cli_main(
            [
                "plan",
                str(tmp_path / "m"),
                "--board",
                "mps2-an386",
                "--frame-ms",
                "8",
                "--max-flash",
                "32k",
                "--max-ram",
                "8k",
                "--json",
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["chosen"]["fits"] and data["limits"] == {"max_flash": 32768, "max_ram": 8192, "max_core_share": 1.0}
    assert cli_main(["plan", str(tmp_path / "m"), "--board", "mps2-an386", "--max-flash", "1k"]) == 1
    assert "nothing fits" in capsys.readouterr().out
    assert cli_main(["plan", str(tmp_path / "nope"), "--board", "mps2-an386"]) == 2
    assert cli_main(["plan", str(tmp_path / "m"), "--board", "mps2-an386", "--max-ram", "lots"]) == 2
