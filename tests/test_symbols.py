"""Only stp_* and model-prefixed symbols are exported by the runtime and the generated code."""

import shutil
import subprocess

import pytest

from stapes.emit.model_c import emit
from stapes.host import runtime_include_dir, runtime_sources
from stapes.host.random_models import random_qgraph


@pytest.mark.parametrize("count_ops", [False, True])
def test_exported_symbols(tmp_path, count_ops):
    if shutil.which("gcc") is None or shutil.which("nm") is None:
        pytest.skip("gcc or nm not found")
    for name, text in emit(random_qgraph(4, kind="mgu", hidden=4, rank=2), "kws").items():
        (tmp_path / name).write_text(text)
    objects = []
    for src in [*runtime_sources(), tmp_path / "kws.c"]:
        obj = tmp_path / (src.stem + ".o")
        subprocess.run(
            [
                "gcc",
                "-std=c99",
                "-O2",
                *(["-DSTP_COUNT_OPS"] if count_ops else []),
                f"-I{runtime_include_dir()}",
                f"-I{tmp_path}",
                "-c",
                str(src),
                "-o",
                str(obj),
            ],
            check=True,
        )
        objects.append(str(obj))
    out = subprocess.run(["nm", "-g", "--defined-only", *objects], capture_output=True, text=True, check=True).stdout
    names = [line.split()[-1] for line in out.splitlines() if len(line.split()) == 3]
    assert "kws_step" in names and "stp_model_run" in names
    assert ("stp_ops" in names) == count_ops
    assert [n for n in names if not n.startswith(("stp_", "kws_"))] == []
