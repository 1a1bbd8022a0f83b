"""The wheel: build it, install it into a fresh venv, and run `stapes` from there (not the repo).

The venv sees the packages of the environment running the tests (torch & co., no network; also
when that environment is itself a venv), and the wheel is installed with --no-deps. The checks run from a folder outside the repository and assert
that `stapes` is imported from the venv, so the editable install cannot stand in for the wheel.
"""

import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_IGNORE = shutil.ignore_patterns(
    ".git",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".hypothesis",
    "runs",
    "stapes-demo",
    ".venv*",
    "*.so",
    "*.o",
)

CHECK = """
import importlib.resources, sys
import stapes
print(stapes.__file__)
runtime = importlib.resources.files("stapes.runtime_c")
boards = importlib.resources.files("stapes.boards")
print(runtime)
assert runtime.joinpath("include").is_dir(), "runtime_c/include missing from the wheel"
headers = sorted(p.name for p in runtime.joinpath("include").iterdir() if p.name.endswith(".h"))
sources = sorted(p.name for p in runtime.joinpath("src").iterdir() if p.name.endswith(".c"))
assert headers and sources, (headers, sources)
print("headers", headers)
print("sources", sources)
import stapes.frontend.models, stapes.tasks, stapes.frontend.train, stapes.frontend.extract, stapes.tasks.evaluate, stapes.studies.demo
"""


def run(cmd, cwd, timeout=600):
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _see_this_environment(python: Path) -> None:
    """Let the new venv import the packages of the environment running the tests (torch & co.).

    --system-site-packages reaches only the base interpreter's site-packages: when the tests run
    inside a venv, that is not where torch was installed. A .pth file appends this environment's
    site folders after the new venv's own, so the wheel installed there still comes first."""
    inner = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=REPO)
    ours = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(inner.stdout.strip()) / "_stapes_test_outer_env.pth").write_text("".join(f"{p}\n" for p in ours))


@pytest.fixture(scope="module")
def venv_with_wheel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=_IGNORE)  # build from a copy: the shared tree stays clean
    run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp / "dist"], cwd=src)
    wheels = list((tmp / "dist").glob("stapes-*.whl"))
    assert len(wheels) == 1, wheels
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", venv], cwd=tmp)
    bin_dir = venv / ("Scripts" if sys.platform == "win32" else "bin")
    _see_this_environment(bin_dir / "python")
    run(
        [bin_dir / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--force-reinstall", wheels[0]],
        cwd=tmp,
    )
    outside = tmp / "elsewhere"
    outside.mkdir()
    return venv, bin_dir, outside


def test_wheel_installs_and_runs_outside_the_repo(venv_with_wheel):
    venv, bin_dir, outside = venv_with_wheel
    result = run([bin_dir / "stapes", "--help"], cwd=outside)
    assert "train" in result.stdout and "demo" in result.stdout
    check = run([bin_dir / "python", "-c", CHECK], cwd=outside)
    lines = check.stdout.splitlines()
    stapes_file, runtime_dir = Path(lines[0]).resolve(), Path(lines[1]).resolve()
    assert venv.resolve() in stapes_file.parents, f"stapes imported from {stapes_file}, not the venv"
    assert venv.resolve() in runtime_dir.parents, f"runtime_c found at {runtime_dir}, not in the venv"
    assert REPO not in stapes_file.parents


def test_installed_command_reports_user_errors(venv_with_wheel):
    venv, bin_dir, outside = venv_with_wheel
    result = subprocess.run(
        [bin_dir / "stapes", "train", "--task", "nope", "--out", outside / "x"],
        cwd=outside,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "unknown task" in result.stderr
