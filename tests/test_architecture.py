"""The stage layering of pyproject.toml's import-linter contracts holds (README's stage table names the stages)."""

import ast
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    exe = shutil.which("lint-imports")
    assert exe, "lint-imports is missing: install the test extra (pip install -e '.[test]')"
    run = subprocess.run(
        [exe, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "kept, 0 broken" in run.stdout, run.stdout[-2000:]


# The host harness (`stapes.host`, python/) lives outside compiler/, where import-linter cannot see
# it: it sits above emit and below studies, and never imports torch or onnx.
HOST_MAY_IMPORT = {
    "stapes.errors",
    "stapes.fsutil",
    "stapes.ir",
    "stapes.fixed",
    "stapes.emit",
    "stapes.host",
    "stapes.runtime_c",
    "stapes.boards",
}
FORBIDDEN_EVERYWHERE_BELOW_FRONTEND = {"torch", "onnx", "onnxruntime"}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_host_harness_imports_only_downward():
    bad = []
    for path in sorted((ROOT / "python").rglob("*.py")):
        for line, name in _imports(path):
            top = name.split(".")[0]
            if top in FORBIDDEN_EVERYWHERE_BELOW_FRONTEND:
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {name}")
            elif top == "stapes" and not any(name == p or name.startswith(p + ".") for p in HOST_MAY_IMPORT):
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {name} (allowed: {sorted(HOST_MAY_IMPORT)})")
    assert not bad, "\n".join(bad)


def test_the_host_check_sees_a_violation(tmp_path, monkeypatch):
    """The AST walk above finds both kinds of import, so the check can fail."""
    probe = tmp_path / "probe.py"
    probe.write_text("import torch\ndef f():\n    from stapes.studies import demo\n")
    assert [name for _, name in _imports(probe)] == ["torch", "stapes.studies"]


def test_ruff_lint_and_format_are_clean():
    exe = shutil.which("ruff")
    assert exe, "ruff is missing: install the test extra (pip install -e '.[test]')"
    for args in (["check", "."], ["format", "--check", "."]):
        run = subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, f"ruff {' '.join(args)}:\n{run.stdout[-4000:]}{run.stderr[-2000:]}"
