"""The train and demo commands: user errors are one line with exit code 2; outputs are complete."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def stapes_subprocess(*args, cwd=None, timeout=300):
    """The real command line in a fresh interpreter (slow: imports torch; used sparingly)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "stapes", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=env,
    )


@pytest.fixture
def stapes(capsys):
    """`stapes ...` in this process (same entry point as the console script): (code, stdout, stderr)."""
    from stapes.cli import main

    def call(*args):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse errors exit through SystemExit
            code = e.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return call


def assert_user_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--task", "nope"], "unknown task 'nope'"),
        (["--hidden", "0"], "hidden"),
        (["--delay", "-3"], "delay"),
        (["--lr", "0"], "learning rate"),
        (["--steps", "0"], "steps"),
        (["--task", "frequency", "--delay", "5"], "bad parameters for task frequency"),
        (["--param", "noequals"], "KEY=VALUE"),
        (["--rank", "999"], "rank"),
        (["--cell", "lstm"], "invalid choice"),
    ],
)
def test_train_user_errors(stapes, tmp_path, args, fragment):
    result = stapes("train", *args, "--out", tmp_path / "out")
    assert_user_error(result, fragment)
    assert not (tmp_path / "out").exists()


def test_train_refuses_to_clobber(stapes, tmp_path):
    (tmp_path / "file").write_text("x")
    assert_user_error(stapes("train", "--out", tmp_path / "file"), "not a folder")
    assert_user_error(stapes("train", "--out", tmp_path / "file" / "sub"), "not a folder")
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "thesis.tex").write_text("x")
    assert_user_error(stapes("train", "--out", keep), "refusing to replace")
    assert (keep / "thesis.tex").read_text() == "x"


def test_train_writes_a_model_folder(tmp_path):
    out = tmp_path / "runs" / "x"
    result = stapes_subprocess(
        "train",
        "--task",
        "memorization",
        "--cell",
        "rnn",
        "--hidden",
        "8",
        "--delay",
        "2",
        "--length",
        "2",
        "--steps",
        "20",
        "--eval-every",
        "10",
        "--seed",
        "1",
        "--quiet",
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    assert {p.name for p in out.iterdir()} == {"config.json", "graph.json", "graph.npz", "metrics.json", "model.pt"}
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == {"name": "memorization", "length": 2, "symbols": 2, "delay": 2, "hold": 1}
    assert config["model"]["cell"] == "rnn" and config["model"]["hidden_size"] == 8
    assert config["train"]["seed"] == 1 and config["train"]["steps"] == 20


def test_demo_user_errors(stapes, tmp_path):
    assert_user_error(stapes("demo", "--task", "nope", "--out", tmp_path / "d"), "unknown task")
    assert_user_error(stapes("demo", "--hidden", "-1", "--out", tmp_path / "d"), "hidden")
    (tmp_path / "f").write_text("x")
    assert_user_error(stapes("demo", "--out", tmp_path / "f"), "not a folder")


def test_demo_stage_protocol(tmp_path, monkeypatch, capsys):
    """Stages run in order, share artifacts, write under the demo folder, report at the end."""
    import argparse

    from stapes.fsutil import atomic_dir
    from stapes.studies import demo

    calls = []

    def stage_a(ctx):
        calls.append("a")
        (ctx.stage_dir("a") / "file.txt").write_text("hello")
        ctx.artifacts["a_file"] = ctx.stage_dir("a") / "file.txt"
        ctx.section("a", ["did a"])

    def stage_b(ctx):
        calls.append("b")
        assert ctx.artifacts["a_file"].read_text() == "hello"
        ctx.summary["b"] = 1

    out = tmp_path / "demo"
    args = argparse.Namespace(task="memorization")
    with atomic_dir(out) as work:
        ctx = demo.DemoContext(args=args, out=out, work=work)
        demo.run_stages(ctx, [stage_a, stage_b, demo.stage_report])
    assert calls == ["a", "b"]
    report = (out / "report.txt").read_text()
    assert "== a" in report and "did a" in report and report in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["b"] == 1 and summary["artifacts"]["a_file"] == str(out / "a" / "file.txt")
    assert set(summary["timings_s"]) == {"a", "b"}  # the report is written during its own stage


def test_default_stages_are_the_pipeline_in_order():
    from stapes.studies import demo

    assert [demo.stage_name(s) for s in demo.STAGES] == ["train", "compress", "fixed_point", "board", "report"]


def test_demo_train_and_report_stages(tmp_path, capsys):
    """The real train + report stages (the other stages have their owners' tests)."""
    import argparse

    from stapes.fsutil import atomic_dir
    from stapes.ir.float_graph import FloatGraph
    from stapes.studies import demo

    out = tmp_path / "demo"
    args = argparse.Namespace(task="memorization", cell="mgu", hidden=None, seed=0, quiet=True, out=str(out))
    with atomic_dir(out) as work:
        demo.run_stages(demo.DemoContext(args=args, out=out, work=work), [demo.stage_train, demo.stage_report])
    report = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train"]["test"]["recall_accuracy"] >= 0.99
    assert "recall_accuracy 1.0000" in report or "recall_accuracy 0.99" in report
    assert FloatGraph.load(out / "model").task["delay"] == 20
    assert summary["artifacts"]["model"] == str(out / "model")


@pytest.mark.slow
def test_full_demo_command(tmp_path, request):
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the whole demo (~1 min): run with -m slow")
    result = stapes_subprocess("demo", "--quiet", cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "stapes-demo" / "report.txt").read_text() in result.stdout
