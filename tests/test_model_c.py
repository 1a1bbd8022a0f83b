"""Generated C end to end: compiled with cffi, sanitizers, both compilers, all APIs equal the reference."""

import shutil
import subprocess

import numpy as np
import pytest

from stapes.emit.model_c import emit
from stapes.emit.model_desc import assign, describe
from stapes.errors import CheckFailed, UserError
from stapes.fixed.reference import run_reference
from stapes.host import (
    assert_bit_exact,
    build,
    build_runtime,
    first_mismatch,
    run_c,
    run_sanitized,
    runtime_include_dir,
    runtime_sources,
)
from stapes.host.random_models import random_inputs, random_qgraph
from stapes.ir.contract import scratch_elements

STRICT = ["-std=c99", "-Wall", "-Wextra", "-Wconversion", "-Werror", "-Wpedantic"]

CASES = {
    "rnn_dense_int8": dict(kind="rnn", hidden=10, inputs=3, outputs=2, weights="int8"),
    "mgu_lowrank_int16_final_sigmoid": dict(
        kind="mgu",
        hidden=12,
        inputs=2,
        outputs=1,
        rank=4,
        weights="int16",
        readout_mode="final",
        readout_activation="sigmoid",
    ),
    "mgu_dense_int8_extreme": dict(kind="mgu", hidden=7, inputs=4, outputs=3, weights="int8", scale=50.0),
}


def _q(case, seed=3):
    return random_qgraph(seed, **CASES[case])


@pytest.mark.parametrize("case", sorted(CASES))
def test_sequence_and_frame_api_equal_reference(case):
    q = _q(case)
    x = random_inputs(9, q, batch=3, steps=110, extreme=case.endswith("extreme"))
    ref = run_reference(q, x)
    module = build(q, prefix="net")
    y, states, _ = run_c(q, x, prefix="net", module=module)
    assert_bit_exact(y, states, ref)
    y1, states1, _ = run_c(q, x, per_frame=True, prefix="net", module=module)
    assert_bit_exact(y1, states1, ref)


def test_runtime_rank_is_a_loop_bound():
    q = _q("mgu_lowrank_int16_final_sigmoid")
    x = random_inputs(4, q, batch=2, steps=100)
    module = build(q, prefix="net")
    outs = []
    for rank in (1, 2, 4):
        ref = run_reference(q, x, rank=rank)
        y, states, _ = run_c(q, x, rank=rank, prefix="net", module=module)
        assert_bit_exact(y, states, ref)
        y1, states1, _ = run_c(q, x, rank=rank, per_frame=True, prefix="net", module=module)
        assert_bit_exact(y1, states1, ref)
        outs.append(states)
    assert not np.array_equal(outs[0], outs[2])
    with pytest.raises(UserError):
        run_c(q, x, rank=5, prefix="net", module=module)


def test_first_mismatch_is_reported():
    a = np.zeros((2, 3, 4), dtype=np.int16)
    b = a.copy()
    b[1, 2, 3] = 7
    assert first_mismatch("states", a, b) == (
        "states: 1 mismatching values; first at sequence 1, step 2, index 3: C 0, reference 7"
    )
    ref = run_reference(_q("rnn_dense_int8"), np.zeros((1, 2, 3), dtype=np.int16))
    bad = ref.states.copy()
    bad[0, 1, 0] += 1
    with pytest.raises(CheckFailed, match="step 1, index 0"):
        assert_bit_exact(ref.outputs, bad, ref)


@pytest.mark.parametrize("case", ["rnn_dense_int8", "mgu_lowrank_int16_final_sigmoid"])
def test_sanitizer_build_equals_reference(case):
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found")
    q = _q(case)
    x = random_inputs(2, q, batch=3, steps=100, extreme=True)
    y, states = run_sanitized(q, x, prefix="san", rank=None)
    assert_bit_exact(y, states, run_reference(q, x))


@pytest.mark.parametrize("cc", ["gcc", "clang"])
@pytest.mark.parametrize("count_ops", [False, True])
def test_warning_free(tmp_path, cc, count_ops):
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} not found")
    for i, case in enumerate(sorted(CASES)):
        for name, text in emit(_q(case), f"m{i}").items():
            (tmp_path / name).write_text(text)
    sources = [*map(str, runtime_sources()), *(str(p) for p in sorted(tmp_path.glob("*.c")))]
    cmd = [
        cc,
        *STRICT,
        "-O2",
        *(["-DSTP_COUNT_OPS"] if count_ops else []),
        f"-I{runtime_include_dir()}",
        f"-I{tmp_path}",
        "-c",
    ]
    for src in sources:
        proc = subprocess.run([*cmd, src, "-o", str(tmp_path / "out.o")], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_cli_quantize_emit_verify(tmp_path, capsys):
    import dataclasses

    from stapes.cli import main
    from stapes.host.random_models import random_graph
    from stapes.tasks import make_task

    task = make_task("memorization")
    graph = random_graph(8, kind="mgu", hidden=8, inputs=task.input_size, outputs=task.output_size, rank=3)
    (tmp_path / "m").mkdir()
    dataclasses.replace(graph, task=task.config()).save(tmp_path / "m")
    assert (
        main(
            [
                "quantize",
                str(tmp_path / "m"),
                "--weights",
                "int8",
                "--calib-sequences",
                "16",
                "--out",
                str(tmp_path / "q"),
            ]
        )
        == 0
    )
    assert main(["emit", str(tmp_path / "q"), "--prefix", "mem", "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "mem.c").is_file() and (tmp_path / "c" / "runtime" / "src" / "stp_cell.c").is_file()
    assert main(["verify", str(tmp_path / "q"), "--sequences", "8", "--rank", "2"]) == 0
    out = capsys.readouterr().out
    assert "mismatches: 0" in out and "C counters = reference = analytic" in out
    assert "recall_accuracy on " in out and "low-rank float" in out and "fixed point int8" in out
    assert "float vs fixed (same inputs): state max" in out
    assert main(["verify", str(tmp_path / "q"), "--rank", "9"]) == 2
    assert main(["verify", str(tmp_path / "nothing")]) == 2


def test_cli_without_task_uses_analytic_ranges_and_random_inputs(tmp_path, capsys):
    from stapes.cli import main
    from stapes.host.random_models import random_graph
    from stapes.ir.qgraph import QGraph

    (tmp_path / "m").mkdir()
    random_graph(9, kind="rnn", hidden=6, inputs=2, outputs=1).save(tmp_path / "m")
    assert main(["quantize", str(tmp_path / "m"), "--input-range", "4", "--out", str(tmp_path / "q")]) == 0
    q = QGraph.load(tmp_path / "q")
    assert q.input_fmt.frac == 12 and "analytic" in q.provenance["ranges_note"]
    assert main(["verify", str(tmp_path / "q"), "--sequences", "4", "--steps", "120"]) == 0
    out = capsys.readouterr().out
    assert "4 sequences x 120 steps" in out and "mismatches: 0" in out
    assert (
        main(
            [
                "quantize",
                str(tmp_path / "m"),
                "--calibration",
                str(tmp_path / "missing.npy"),
                "--out",
                str(tmp_path / "q2"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "q2").exists()


@pytest.mark.parametrize("case", sorted(CASES))
def test_model_description_filled_through_cffi_equals_reference(case):
    """The description is enough to build a working stp_model_t at run time (the host harness's way)."""
    q = _q(case)
    mod = build_runtime()
    ffi, lib = mod.ffi, mod.lib
    keep = []

    def pointer(a):
        keep.append(np.ascontiguousarray(a.data))
        return ffi.cast(f"const {a.ctype} *", ffi.from_buffer(keep[-1]))

    m = ffi.new("stp_model_t *")
    assign(describe(q).model, m, pointer)
    assert lib.stp_model_scratch_size(m) == scratch_elements(q.kind, q.hidden_size, q.rank)
    x = random_inputs(5, q, batch=2, steps=40)
    ref = run_reference(q, x)
    y = np.zeros(ref.outputs.shape, dtype=np.int16)
    states = np.zeros(ref.states.shape, dtype=np.int16)
    scratch = ffi.new("int16_t[]", lib.stp_model_scratch_size(m))
    for b in range(x.shape[0]):
        state = np.zeros(q.hidden_size, dtype=np.int16)
        xb, yb, sb = (np.ascontiguousarray(v[b]) for v in (x, y, states))
        rc = lib.stp_model_run(
            m,
            ffi.from_buffer("int16_t[]", xb),
            x.shape[1],
            ffi.from_buffer("int16_t[]", state),
            ffi.from_buffer("int16_t[]", yb),
            ffi.from_buffer("int16_t[]", sb),
            scratch,
            0,
        )
        assert rc == 0
        y[b], states[b] = yb, sb
    assert_bit_exact(y, states, ref)
