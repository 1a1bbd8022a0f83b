"""Outputs never destroy a user's files (`stapes.cli.outputs`, `stapes.fsutil`): every command that
writes refuses an existing target that is not its own output (and its own without --force), an
input, the current folder, a file where a folder goes, unwritable places; atomic_dir is safe with
concurrent writers and removes what dead writers left; `stapes paper --workers 2` stopped by
SIGINT or SIGTERM leaves no process and no temporary folder behind."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stapes.cli import main
from stapes.errors import UserError
from stapes.fsutil import STALE_AFTER_S, atomic_dir, atomic_write_bytes, check_output, checked_outputs, remove_stale


def run(capsys, *args) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(root: Path) -> dict:
    """Every entry under `root` with its content (files) or None (folders): "nothing touched"."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
        for p in sorted(root.rglob("*"))
    }


def leftovers(root: Path) -> list[str]:
    return [p.as_posix() for p in root.rglob("*") if any(m in p.name for m in (".tmp-", ".old-", ".lock"))]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One output of each cheap command, from a tiny trained model: root/{m, q, e, x.onnx, i, c, s, p}."""
    root = tmp_path_factory.mktemp("outputs")
    steps = [
        ["train", "--cell", "rnn", "--hidden", "4", "--delay", "1", "--length", "2", "--steps", "2", "--quiet"],
        ["quantize", "m", "--calib-sequences", "4"],
        ["emit", "q"],
        ["export-onnx", "m"],
        ["import-onnx", "x.onnx"],
        ["compress", "m", "--rank", "1"],
        ["sweep", "m", "--ranks", "1"],
        ["perturb", "m", "--ranks", "1", "--bits", "4", "--sequences", "4", "--kinds", "svd"],
    ]
    outs = ["m", "q", "e", "x.onnx", "i", "c", "s", "p"]
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for args, out in zip(steps, outs):
            assert main([*args, "--out", out]) == 0, args
    finally:
        os.chdir(cwd)
    return root


# command -> (its arguments before --out, its own output in `made`)
COMMANDS = {
    "train": ([], "m"),
    "quantize": (["m"], "q"),
    "emit": (["q"], "e"),
    "import-onnx": (["x.onnx"], "i"),
    "compress": (["m", "--rank", "1"], "c"),
    "sweep": (["m", "--ranks", "1"], "s"),
    "perturb": (["m", "--ranks", "1", "--bits", "4", "--sequences", "4"], "p"),
    "demo": (["--task", "memorization"], None),
    "paper": (["--profile", "tiny"], None),
    "board": (None, None),  # `board run QMODEL --keep DIR`
}


def command_line(command: str, out: str, *extra: str) -> list[str]:
    if command == "board":
        return ["board", "run", "q", "--keep", out, *extra]
    return [command, *COMMANDS[command][0], "--out", out, *extra]


@pytest.fixture
def in_made(made, monkeypatch):
    monkeypatch.chdir(made)
    (made / "precious").mkdir(exist_ok=True)
    (made / "precious" / "thesis.txt").write_text("years of work")
    (made / "afile").write_text("keep me")
    return made


def assert_refused(capsys, args, *fragments, root: Path):
    before = snapshot(root)
    code, out, err = run(capsys, *args)
    assert code == 2, (args, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (args, lines[0])
    assert snapshot(root) == before, args  # nothing touched, nothing left
    return lines[0]


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize(
    "case",
    ["user folder", "user folder --force", "file", "below a file", "current folder", "parent folder", "empty", "root"],
)
def test_every_writer_refuses_what_it_did_not_write(capsys, in_made, command, case):
    out, extra, fragments = {
        "user folder": ("precious", [], ["precious exists and is not", "refusing to replace"]),
        "user folder --force": ("precious", ["--force"], ["refusing to replace"]),
        "file": ("afile", [], ["is not a folder"]),
        "below a file": ("afile/sub", [], ["afile is a file, not a folder"]),
        "current folder": (".", [], ["is the current folder"]),
        "parent folder": ("..", [], ["contains the current folder"]),
        "empty": ("", [], ["is empty"]),
        "root": ("/", [], ["is the root folder"]),
    }[case]
    option = "--keep" if command == "board" else "--out"
    if command == "board" and case == "empty":
        fragments = ["not a usable path"]  # argtypes.path refuses it before the command runs
    if command == "paper" and extra:
        extra = []  # paper has no --force (it resumes into its own folder only): refused all the same
    line = assert_refused(capsys, command_line(command, out, *extra), *fragments, root=in_made)
    assert line.startswith(f"stapes {command}"), line
    if case != "empty":
        assert option in line
    assert (in_made / "precious" / "thesis.txt").read_text() == "years of work"
    assert (in_made / "afile").read_text() == "keep me"


@pytest.mark.parametrize("command", [c for c, (_, own) in COMMANDS.items() if own])
def test_own_output_needs_force_and_an_input_is_never_an_output(capsys, in_made, command):
    args, own = COMMANDS[command]
    root = in_made
    assert_refused(capsys, command_line(command, own), "add --force to replace it", root=root)
    for other, (_, theirs) in COMMANDS.items():  # another command's output, even with --force
        if theirs and other != command and theirs != (args or [None])[0]:
            assert_refused(capsys, command_line(command, theirs, "--force"), "refusing to replace", root=root)
    if args:
        source = args[0]
        assert_refused(capsys, command_line(command, source, "--force"), f"is the input {source}", root=root)
        assert_refused(capsys, command_line(command, f"./{source}/", "--force"), "is the input", root=root)
    # A user's file inside an earlier output: that folder is no longer only the command's output.
    note = in_made / own / "notes.txt" if (in_made / own).is_dir() else None
    if note is not None:
        note.write_text("mine")
        try:
            assert_refused(capsys, command_line(command, own, "--force"), "refusing to replace", root=root)
        finally:
            note.unlink()


def test_force_replaces_an_own_output_completely(capsys, in_made):
    (in_made / "q" / "qgraph.json").touch()  # still the same files: recognised
    before = sorted(p.name for p in (in_made / "q").iterdir())
    code, _, err = run(capsys, "quantize", "m", "--calib-sequences", "4", "--out", "q", "--force")
    assert code == 0, err
    assert sorted(p.name for p in (in_made / "q").iterdir()) == before
    code, _, err = run(capsys, "export-onnx", "m", "--out", "x.onnx", "--force")
    assert code == 0, err
    assert leftovers(in_made) == []


def test_more_refusals(capsys, in_made):
    root = in_made
    (in_made / "link").symlink_to(in_made / "q")
    try:
        cases = [
            (["quantize", "m", "--out", "link", "--force"], "is a symbolic link"),
            (["quantize", "m", "--out", "/proc/stapes-x"], "cannot create files in /proc"),
            (["train", "--steps", "2", "--out", "/proc/stapes-x"], "cannot create files in /proc"),
            (["quantize", "q/float", "--out", "q", "--force"], "contains the input q/float"),
            (["quantize", "m", "--calibration", "q/c.npy", "--out", "q", "--force"], "contains the input q/c.npy"),
            (["export-onnx", "m", "--out", "q"], "is a folder; name the file"),
            (["export-onnx", "m", "--out", "afile", "--force"], "is not an ONNX file written by"),
            (["export-onnx", "m", "--out", "m/graph.json", "--force"], "is inside the input m"),
            (["export-onnx", "m", "--out", "m/m.onnx"], "is inside the input m"),
            (["quantize", "m", "--out", "m/q"], "is inside the input m"),
            (["paper", "--profile", "tiny", "--out", "q"], "is not a report folder of `stapes paper`"),
        ]
        np.save(in_made / "q" / "c.npy", np.full((1, 2, 4), 0.5))
        for args, fragment in cases:
            before = snapshot(root)
            code, out, err = run(capsys, *args)
            assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, (args, err)
            assert "training" not in out  # checked before any work
            assert snapshot(root) == before, args
    finally:
        (in_made / "link").unlink()
        (in_made / "q" / "c.npy").unlink(missing_ok=True)


def test_paper_resumes_into_its_own_folder_only(capsys, tmp_path):
    out = tmp_path / "report"
    (out / "cache").mkdir(parents=True)
    (out / "results.json").write_text("{}")
    code, _, err = run(capsys, "paper", "--profile", "tiny", "--only", "NOPE", "--out", out)
    assert code == 2 and "unknown experiment" in err  # got past the output check: it is a paper folder
    (out / "thesis.txt").write_text("x")
    code, _, err = run(capsys, "paper", "--profile", "tiny", "--out", out)
    assert code == 2 and "is not a report folder" in err


# ---- fsutil.atomic_dir / check_output below the CLI


def test_atomic_dir_never_replaces_a_file_the_root_or_the_current_folder(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is not a folder"):
        with atomic_dir(tmp_path / "f") as tmp:
            (tmp / "a").write_text("new")
    assert (tmp_path / "f").read_text() == "x" and sorted(os.listdir(tmp_path)) == ["f"]
    (tmp_path / "d").mkdir()
    (tmp_path / "l").symlink_to(tmp_path / "d")
    with pytest.raises(UserError, match="is not a folder"):
        with atomic_dir(tmp_path / "l"):
            pass
    assert (tmp_path / "l").is_symlink()
    monkeypatch.chdir(tmp_path / "d")
    for target in (".", "..", "/", ""):
        with pytest.raises(UserError):
            with atomic_dir(target):
                pass
    assert sorted(os.listdir(tmp_path)) == ["d", "f", "l"] and os.listdir(tmp_path / "d") == []


def test_what_appears_while_a_command_works_is_kept(tmp_path):
    target = tmp_path / "out"
    with checked_outputs():
        check_output(target, is_output=lambda p: True)  # absent now: fine
        target.mkdir()
        (target / "thesis.txt").write_text("x")  # ... but the user puts something there meanwhile
        with pytest.raises(UserError, match="appeared while stapes was working"):
            with atomic_dir(target) as tmp:
                (tmp / "a").write_text("new")
        check_output(tmp_path / "x.onnx", file=True)
        (tmp_path / "x.onnx").write_text("mine")
        with pytest.raises(UserError, match="appeared"):
            atomic_write_bytes(tmp_path / "x.onnx", b"new")
    assert (target / "thesis.txt").read_text() == "x" and (tmp_path / "x.onnx").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["out", "x.onnx"]
    with atomic_dir(target) as tmp:  # outside a command (the Python API, the cache): replaced as before
        (tmp / "a").write_text("new")
    assert os.listdir(target) == ["a"]


def _write_many(root: str, writer: int, count: int, files: int) -> int:
    failures = 0
    for i in range(count):
        try:
            with atomic_dir(Path(root) / "out") as tmp:
                for k in range(files):
                    (tmp / f"part{k}").write_text(f"{writer}:{i}")
        except Exception:  # noqa: BLE001 - counted: there must be none
            failures += 1
    return failures


def test_concurrent_writers_of_one_folder(tmp_path):
    """4 processes x 50 replacements of one folder: every write succeeds, the folder is always one
    writer's complete content, and nothing is left beside it (the lock file is removed too)."""
    (tmp_path / "out").mkdir()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        failures = pool.starmap(_write_many, [(str(tmp_path), w, 50, 6) for w in range(4)])
    assert failures == [0, 0, 0, 0]
    assert os.listdir(tmp_path) == ["out"]
    contents = {p.read_text() for p in (tmp_path / "out").iterdir()}
    assert len(os.listdir(tmp_path / "out")) == 6 and len(contents) == 1


def _die_while_writing(root: str) -> None:
    with atomic_dir(Path(root) / "out") as tmp:
        (tmp / "half").write_text("x")
        os.kill(os.getpid(), signal.SIGKILL)


def _write_slowly(root: str, started, finish) -> None:
    with atomic_dir(Path(root) / "out") as tmp:
        (tmp / "slow").write_text("x")
        started.set()
        finish.wait(60)


def test_leftovers_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    dead = ctx.Process(target=_die_while_writing, args=(str(tmp_path),))
    dead.start()
    dead.join(60)
    assert dead.exitcode == -signal.SIGKILL
    (stale,) = [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    started, finish = ctx.Event(), ctx.Event()
    live = ctx.Process(target=_write_slowly, args=(str(tmp_path), started, finish))
    live.start()
    assert started.wait(60)
    (writing,) = [p for p in tmp_path.iterdir() if ".tmp-" in p.name and p != stale]
    old = time.time() - 10 * STALE_AFTER_S
    for p in (stale, writing):
        os.utime(p, (old, old))
    assert remove_stale(tmp_path, "other") == []  # another output's name: not ours to judge
    assert remove_stale(tmp_path) == [stale]  # the live writer holds its lock: kept
    finish.set()
    live.join(60)
    assert live.exitcode == 0 and os.listdir(tmp_path) == ["out"] and os.listdir(tmp_path / "out") == ["slow"]
    # The next writer of a name removes that name's leftovers itself.
    (tmp_path / ".out.tmp-1-deadbeef").mkdir()
    os.utime(tmp_path / ".out.tmp-1-deadbeef", (old, old))
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "new").write_text("y")
    assert os.listdir(tmp_path) == ["out"]


def test_paper_run_removes_what_a_killed_run_left(tmp_path, capsys):
    out = tmp_path / "report"
    stale = [
        out / "cache" / "models" / ".model-0123.tmp-1-abcd1234",
        out / "cache" / "runs" / ".R7-0.json.tmp-1-x1y2z3w4",
    ]
    stale[0].mkdir(parents=True)
    (stale[0] / "graph.json").write_text("{")
    stale[1].parent.mkdir(parents=True)
    stale[1].write_text("{")
    old = time.time() - 10 * STALE_AFTER_S
    for p in stale:
        os.utime(p, (old, old))
    code, _, err = run(capsys, "paper", "--profile", "tiny", "--only", "R7", "--out", out, "--no-progress")
    assert code == 0, err
    assert leftovers(out) == []


# ---- stopping `stapes paper --workers 2`


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry))
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _writing_models(out: Path) -> int:
    models = out / "cache" / "models"
    return len([p for p in models.iterdir() if ".tmp-" in p.name]) if models.is_dir() else 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc for the worker processes")
def test_stopping_paper_workers_leaves_nothing(tmp_path):
    """Three `stapes paper --workers 2` runs at once; as soon as both workers of a run are writing
    a model into its cache, it gets Ctrl-C (SIGINT to the process group), SIGTERM, or even SIGKILL
    (the workers notice their parent is gone). Each exits at once, no worker survives it, and no
    temporary folder is left in any cache."""
    stops = {"ctrl-c": (signal.SIGINT, True, 130), "sigterm": (signal.SIGTERM, False, 143)}
    stops["sigkill"] = (signal.SIGKILL, False, -signal.SIGKILL)
    runs = {}
    for name in stops:
        cmd = [sys.executable, "-m", "stapes", "paper", "--profile", "quick", "--workers", "2", "--no-progress"]
        runs[name] = subprocess.Popen(
            [*cmd, "--out", str(tmp_path / name)],
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    try:
        kids, stopped, deadline = {}, {}, time.monotonic() + 90
        while len(stopped) < len(runs) and time.monotonic() < deadline:
            for name, proc in runs.items():
                if name not in stopped and _writing_models(tmp_path / name) >= 2:
                    assert proc.poll() is None, (name, proc.communicate()[0])
                    kids[name] = _children(proc.pid)
                    sig, group, _ = stops[name]
                    (os.killpg if group else os.kill)(proc.pid, sig)
                    stopped[name] = time.monotonic()
            time.sleep(0.05)
        assert len(stopped) == len(runs), "the workers never started writing models"
        for name, proc in runs.items():
            output, _ = proc.communicate(timeout=60)  # returns once every process holding the pipe is gone
            sig, _, status = stops[name]
            assert proc.returncode == status, (name, output)
            assert time.monotonic() - stopped[name] < 10, (name, output)
            if sig != signal.SIGKILL:
                assert b"leaked" not in output, output  # nothing left for the resource tracker to clean
                assert (b"terminated" if sig == signal.SIGTERM else b"interrupted") in output, output
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    for name in runs:
        assert len(kids[name]) >= 2, name
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(k) for k in kids[name]):
            time.sleep(0.05)
        assert not [k for k in kids[name] if _alive(k)], name
        assert leftovers(tmp_path / name) == [], name
