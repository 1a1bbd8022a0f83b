"""`stapes paper`: the suite runs end to end on tiny settings, its report and JSON are complete,
and a second run is served from the cache; plus the framework's parts on their own."""

from __future__ import annotations

import json
import math
import re

import pytest

from stapes.cli import main
from stapes.errors import UserError
from stapes.experiments.cache import RunCache, run_key
from stapes.experiments.experiment import VERDICTS, Experiment, Section
from stapes.experiments.registry import EXPERIMENTS
from stapes.experiments.settings import PROFILES, profile, rank_grid
from stapes.experiments.stats import critical_delay, mean_std, pearson


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper") / "report"
    rc = main(["paper", "--profile", "tiny", "--out", str(out), "--no-progress"])
    return out, rc


def test_tiny_suite_writes_report_json_and_figures(tiny_run):
    out, rc = tiny_run
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    assert results["profile"] == "tiny"
    assert set(results["experiments"]) == {e.id for e in EXPERIMENTS}
    assert [line[3:].split(":")[0] for line in report.splitlines() if re.match(r"## \w+: ", line)] == [
        e.id for e in EXPERIMENTS
    ]  # in the suite's order
    for exp_id, exp in results["experiments"].items():
        assert exp["verdict"] in VERDICTS and exp["verdict"] != "failed", (exp_id, exp["reason"])
        assert f"## {exp_id}: " in report
        for fig in exp["figures"]:
            png = out / fig
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"]({fig})" in report
    # Every figure the report shows is one the suite wrote.
    for fig in re.findall(r"\]\((figures/[^)]+)\)", report):
        assert (out / fig).is_file()
    assert results["cache"]["results_computed"] > 0


def test_second_run_is_served_from_the_cache(tiny_run, capsys):
    out, _ = tiny_run
    first = json.loads((out / "results.json").read_text())
    capsys.readouterr()
    assert main(["paper", "--profile", "tiny", "--out", str(out), "--no-progress"]) == 0
    assert "0 computed, 0 models trained" in capsys.readouterr().out
    second = json.loads((out / "results.json").read_text())
    assert second["cache"]["results_computed"] == 0 and second["cache"]["models_trained"] == 0
    assert second["experiments"] == first["experiments"]


def test_workers_give_the_same_results_as_one_process(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    sequential = json.loads((out / "results.json").read_text())
    parallel_out = tmp_path / "parallel"
    assert main(["paper", "--profile", "tiny", "--out", str(parallel_out), "--workers", "2", "--no-progress"]) == 0
    parallel = json.loads((parallel_out / "results.json").read_text())
    assert parallel["cache"]["results_computed"] > 0 and parallel["cache"]["models_trained"] > 0
    assert parallel["experiments"] == sequential["experiments"]
    assert main(["paper", "--profile", "tiny", "--out", str(parallel_out), "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err


def test_doc_block_is_refreshed_from_the_run(tiny_run, tmp_path, capsys):
    from stapes.experiments.report import DOC_BEGIN, DOC_END, verdicts_markdown

    out, _ = tiny_run
    doc = tmp_path / "doc.md"
    doc.write_text(f"# Title\nprose\n{DOC_BEGIN}\nstale\n{DOC_END}\nmore prose\n")
    assert main(["paper", "--profile", "tiny", "--out", str(out), "--doc", str(doc), "--no-progress"]) == 0
    text = doc.read_text()
    results = json.loads((out / "results.json").read_text())
    assert "stale" not in text and text.startswith("# Title\nprose\n") and text.endswith("more prose\n")
    import os

    assert verdicts_markdown(results, os.path.relpath(out, tmp_path) + "/") in text
    doc.write_text("no block")
    assert main(["paper", "--profile", "tiny", "--out", str(tmp_path / "never"), "--doc", str(doc)]) == 2
    assert "no generated block" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()  # refused before running anything


def test_committed_paper_doc_quotes_the_committed_run():
    """docs/paper.md's verdicts, settings and figures are exactly those of docs/paper/results.json."""
    from pathlib import Path

    from stapes.experiments.report import doc_block, verdicts_markdown

    docs = Path(__file__).resolve().parents[1] / "docs"
    text = (docs / "paper.md").read_text()
    results = json.loads((docs / "paper" / "results.json").read_text())
    start, end = doc_block(text, "docs/paper.md")
    assert text[start:end].strip() == verdicts_markdown(results, "paper/").strip()
    assert results["profile"] == "full" and not results.get("failed")
    for exp in results["experiments"].values():
        assert exp["verdict"] in VERDICTS and exp["verdict"] != "failed", exp["reason"]
        for fig in exp["figures"]:
            assert (docs / "paper" / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_only_selects_experiments_and_rejects_unknown_ids(tiny_run, capsys):
    out, _ = tiny_run
    assert main(["paper", "--profile", "tiny", "--out", str(out), "--only", "r7", "--no-progress"]) == 0
    assert set(json.loads((out / "results.json").read_text())["experiments"]) == {"R7"}
    assert main(["paper", "--profile", "tiny", "--out", str(out), "--only", "R99"]) == 2
    assert "unknown experiment(s) R99" in capsys.readouterr().err


def test_user_errors_exit_2(tmp_path, capsys):
    assert main(["paper", "--profile", "tiny", "--out", str(tmp_path), "--seeds", "0"]) == 2
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["paper", "--profile", "tiny", "--out", str(f)]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_run_key_depends_on_kind_and_params_only():
    assert run_key("a", {"x": 1, "y": [1, 2]}) == run_key("a", {"y": [1, 2], "x": 1})
    assert run_key("a", {"x": 1}) != run_key("a", {"x": 2})
    assert run_key("a", {"x": 1}) != run_key("b", {"x": 1})


def test_cache_computes_once_and_keeps_nothing_on_error(tmp_path):
    cache = RunCache(tmp_path)
    calls = []
    assert cache.result("k", {"p": 1}, lambda: calls.append(1) or {"v": 3}) == {"v": 3}
    assert cache.result("k", {"p": 1}, lambda: calls.append(1) or {"v": 4}) == {"v": 3}
    assert calls == [1] and cache.stats["results_cached"] == 1

    def broken(tmp):
        (tmp / "half").write_text("x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cache.model_dir("m", {"p": 1}, broken)
    assert not list((tmp_path / "models").iterdir())  # no half-written model left behind
    path = cache.model_dir("m", {"p": 1}, lambda tmp: (tmp / "w").write_text("ok"))
    assert (path / "w").read_text() == "ok"
    assert cache.model_dir("m", {"p": 1}, broken) == path  # cached: not rebuilt


def test_rank_grid_is_geometric_and_ends_at_n():
    assert rank_grid(64, 7) == [1, 2, 4, 8, 16, 32, 64]
    assert rank_grid(8, 3) == [1, 3, 8]
    assert rank_grid(5, 1) == [5]
    for s in PROFILES.values():
        for n in s.hidden_sizes:
            g = rank_grid(n, s.rank_points)
            assert g[0] == 1 and g[-1] == n and g == sorted(set(g))


def test_stats():
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert mean_std([5.0]) == (5.0, 0.0)
    assert pearson([1, 2, 3], [2, 4, 6.5]) > 0.99
    assert math.isnan(pearson([1, 2, 3], [1, 1, 1]))
    assert critical_delay([10, 20, 50], [1.0, 0.95, 0.5], 0.9) == 20
    assert critical_delay([10, 20, 50], [0.5, 0.95, 0.95], 0.9) == 0  # must hold at every shorter delay too
    assert critical_delay([10, 20], [0.99, 0.99], 0.9) == 20


def test_suite_lists_every_experiment_once_in_report_order():
    """The suite is the explicit list: R1-R7 then OTF, and every `Experiment` an exp_* module defines is in it."""
    import importlib
    import pkgutil

    import stapes.experiments

    assert [e.id for e in EXPERIMENTS] == ["R1", "R2", "R3", "R4", "R5", "R6", "R7", "OTF"]
    assert all(isinstance(e, Experiment) for e in EXPERIMENTS)
    defined = [
        value
        for info in pkgutil.iter_modules(stapes.experiments.__path__)
        if info.name.startswith("exp_")
        for value in vars(importlib.import_module(f"stapes.experiments.{info.name}")).values()
        if isinstance(value, Experiment)
    ]
    assert sorted(e.id for e in defined) == sorted(e.id for e in EXPERIMENTS)
    assert all(any(d is e for e in EXPERIMENTS) for d in defined)
    for e in EXPERIMENTS:  # experiments sharing a cache kind must share its computation
        assert all(
            o.compute is e.compute and o.compute_version == e.compute_version for o in EXPERIMENTS if o.kind == e.kind
        )


def test_sections_check_verdicts():
    with pytest.raises(ValueError):
        Section("R0", "t", "c", "probably", "r")
    with pytest.raises(UserError):
        profile("huge")


def test_ctrl_c_stops_the_workers_at_once(tmp_path):
    """Ctrl-C (SIGINT to the process group) ends a --workers run within seconds, exit status 130,
    with only complete entries in the cache (the workers are terminated, not waited for)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cmd = [
        sys.executable,
        "-m",
        "stapes",
        "paper",
        "--profile",
        "quick",
        "--out",
        str(tmp_path / "out"),
        "--workers",
        "2",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        cmd,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(8)  # the quick profile is still training models
    assert proc.poll() is None
    os.killpg(proc.pid, signal.SIGINT)
    start = time.monotonic()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and time.monotonic() - start < 10
    assert b"interrupted" in out and b"leaked" not in out  # no resources left for the tracker to clean
    models = tmp_path / "out" / "cache" / "models"
    for entry in models.iterdir() if models.is_dir() else []:
        assert entry.name.startswith(".") or (entry / "params.json").is_file(), entry


def test_without_a_profile_the_quick_one_runs_and_its_time_is_printed_first(tmp_path, monkeypatch, capsys):
    """`stapes paper` alone must not start the hour-long run: it takes the quick profile and says
    what that costs before any work."""
    from stapes.experiments import runner

    seen = {}

    def fake_suite(out, settings, **kwargs):
        seen["profile"] = settings.name
        seen["announced"] = "about 3 minutes" in capsys.readouterr().err
        return {"failed": []}

    monkeypatch.setattr(runner, "run_suite", fake_suite)
    assert main(["paper", "--out", str(tmp_path / "p"), "--no-progress"]) == 0
    assert seen == {"profile": "quick", "announced": True}
