"""Rank sweeps: the rank-N point equals the dense metric, costs per row, outputs, CLI errors."""

import csv
import json

import numpy as np
import pytest
from test_compress import random_graph

from stapes.cli import main
from stapes.compress.svd import with_rank
from stapes.errors import UserError
from stapes.frontend.finetune import finetune_graph
from stapes.ir.float_graph import LowRank
from stapes.studies.sweep import default_ranks, run_sweep, smallest_rank_within
from stapes.tasks.evaluate import evaluate_graph, evaluate_metric

MEM = {"name": "memorization", "length": 3, "symbols": 3, "delay": 3, "hold": 1}
FREQ = {"name": "frequency", "classes": 3, "steps": 24, "segment": 12, "settle": 4}


@pytest.mark.parametrize("kind,task,inputs,outputs", [("mgu", MEM, 5, 3), ("rnn", FREQ, 1, 3)])
def test_rank_n_point_equals_the_uncompressed_metric(kind, task, inputs, outputs):
    g = random_graph(kind, n=8, i=inputs, o=outputs, task=task, seed=2)
    res = run_sweep(g, [8, 5, 2], progress=False)
    full = evaluate_graph(g)[res["metric_name"]]
    assert res["metric_dense"] == full
    assert [r["rank"] for r in res["rows"]] == [8, 5, 2]
    assert res["rows"][0]["metric"] == full
    assert res["rows"][0]["recurrent_macs"] == res["rows"][0]["recurrent_macs_dense"] * 2  # 2N·N vs N²
    assert res["rows"][2]["recurrent_macs"] == len(g.cell.recurrent()) * 2 * 8 * 2


def test_default_ranks_and_threshold():
    assert default_ranks(5) == [5, 4, 3, 2, 1]
    grid = default_ranks(256, max_points=10)
    assert grid[0] == 256 and grid[-1] == 1 and len(grid) == 10
    rows = [{"rank": r, "m": m} for r, m in [(4, 1.0), (3, 0.995), (2, 0.98), (1, 0.999)]]
    assert smallest_rank_within(rows, 1.0, "m") == 3  # rank 1 passes alone, but rank 2 fails
    assert smallest_rank_within(rows, 0.5, "m") == 1
    assert smallest_rank_within(rows, 1.2, "m") is None


def test_sweep_needs_a_task_and_valid_ranks():
    g = random_graph("mgu", n=6)
    with pytest.raises(UserError, match="task"):
        run_sweep(g, progress=False)
    with pytest.raises(UserError, match="outside"):
        run_sweep(random_graph("mgu", n=6, i=5, o=3, task=MEM), [7], progress=False)


def test_cli_sweep_writes_csv_json_png(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    random_graph("mgu", n=6, i=5, o=3, task=MEM).save(tmp_path / "m")
    out = tmp_path / "s"
    assert main(["sweep", str(tmp_path / "m"), "--out", str(out)]) == 0
    res = json.loads((out / "sweep.json").read_text())
    assert [r["rank"] for r in res["rows"]] == [6, 5, 4, 3, 2, 1]
    with open(out / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["metric"]) == res["metric_dense"] and rows[-1]["rank"] == "1"
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args", [["--ranks", "0,3"], ["--ranks", "7"], ["--ranks", "a"], ["--finetune", "-1"], ["--finetune-ranks", "3"]]
)
def test_cli_sweep_user_errors_exit_2(tmp_path, args):
    (tmp_path / "m").mkdir()
    random_graph("mgu", n=6, i=5, o=3, task=MEM).save(tmp_path / "m")
    try:
        code = main(["sweep", str(tmp_path / "m"), "--out", str(tmp_path / "s"), *args])
    except SystemExit as e:  # argparse rejects the value itself
        code = e.code
    assert code == 2
    assert not (tmp_path / "s").exists()


def test_cli_sweep_missing_folder_exits_2(tmp_path):
    assert main(["sweep", str(tmp_path / "nope"), "--out", str(tmp_path / "s")]) == 2


def test_finetune_keeps_factors_and_never_hurts_validation():
    g = with_rank(random_graph("mgu", n=6, i=5, o=3, task=MEM), 2)
    tuned = finetune_graph(g, 4, seed=0)
    assert isinstance(tuned.cell.u_f, LowRank) and tuned.cell.u_f.rank == 2
    info = tuned.provenance["finetune"]
    assert info["steps"] == 4 and (info["kept_start"] or info["val_after"] > info["val_before"])
    assert evaluate_metric(tuned)[0] == "recall_accuracy"
    assert np.all(np.isfinite(tuned.cell.u_h.dense()))
