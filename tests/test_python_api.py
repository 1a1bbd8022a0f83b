"""The Python API (`stapes/__init__.py`): the documented example runs, and the CLI takes the same path."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import stapes
from stapes.cli import main
from stapes.errors import UserError

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def _first_python_block() -> str:
    match = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"{DOC} has no ```python block"
    return match.group(1)


def test_documented_example_runs_from_a_fresh_folder(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(_first_python_block())
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.rstrip().splitlines()[-1] == "mismatches: 0", proc.stdout
    assert (tmp_path / "rnn_c" / "rnn.c").is_file() and (tmp_path / "rnn_c" / "runtime").is_dir()


def test_import_stays_light():
    code = "import sys, stapes; print('torch' in sys.modules, 'stapes.host' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_public_names_resolve():
    for name in stapes.__all__:
        assert getattr(stapes, name) is not None, name
    with pytest.raises(AttributeError):
        stapes.no_such_name  # noqa: B018


def _tiny_graph():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    return stapes.from_torch(torch.nn.RNN(2, 8, batch_first=True), torch.nn.Linear(8, 1))


def test_compress_needs_exactly_one_policy():
    g = _tiny_graph()
    with pytest.raises(UserError, match="exactly one"):
        stapes.compress_model(g)
    with pytest.raises(UserError, match="exactly one"):
        stapes.compress_model(g, rank=2, energy=0.9)
    assert stapes.compress_model(g, rank=2).cell.recurrent()["u"].rank == 2


def test_load_refuses_a_folder_that_is_no_model(tmp_path):
    with pytest.raises(UserError, match="neither a model folder"):
        stapes.load(tmp_path)


def test_verify_rejects_inputs_of_the_wrong_shape():
    q = stapes.quantize(_tiny_graph(), input_range=1.0)
    with pytest.raises(UserError, match=r"shape \(batch, steps, 2\)"):
        stapes.verify(q, np.zeros((4, 5, 3)))


def test_cli_and_api_share_one_path(tmp_path, capsys):
    """`stapes quantize` + `stapes verify` on a saved model give what the API computes from memory."""
    graph = _tiny_graph()
    x = np.random.default_rng(3).uniform(-1, 1, size=(6, 12, 2))
    np.save(tmp_path / "calib.npy", x)
    (tmp_path / "model").mkdir()
    graph.save(tmp_path / "model")
    assert (
        main(
            [
                "quantize",
                str(tmp_path / "model"),
                "--calibration",
                str(tmp_path / "calib.npy"),
                "--out",
                str(tmp_path / "q"),
            ]
        )
        == 0
    )
    q_api = stapes.quantize(graph, calibration=x)
    q_cli = stapes.load(tmp_path / "q")
    assert stapes.emit_c(q_api) == stapes.emit_c(q_cli)  # same formats, shifts and weights
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "q"), "--sequences", "5", "--steps", "9"]) == 0
    printed = capsys.readouterr().out
    result = stapes.verify(q_api, sequences=5, steps=9)
    assert result.ok and result.mismatches == 0
    for line in result.lines:
        assert line in printed
