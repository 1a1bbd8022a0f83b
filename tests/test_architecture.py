"""The stage layering of pyproject.toml's import-linter contracts holds (README's stage table names the stages)."""

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    exe = shutil.which("lint-imports")
    assert exe, "lint-imports is missing: install the test extra (pip install -e '.[test]')"
    run = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "kept, 0 broken" in run.stdout, run.stdout[-2000:]
