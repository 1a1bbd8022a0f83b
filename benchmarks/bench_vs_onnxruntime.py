"""stapes C (via cffi) vs onnxruntime on the same model and inputs: frames per second.

For each cell (rnn, mgu), hidden size N (64, 128) and variant (dense; low-rank r = N/8):

* onnxruntime (float32, CPU, 1 thread; per frame through IOBinding) runs the model as exported
  by `stapes export-onnx` with the standard operator (RNN / tied GRU; a low-rank model reconstructed dense, the form
  host tools use), and for a low-rank model also the factors-kept Scan export;
* stapes runs the generated C (int16 state, int16 weights by default) built by `stapes.host.build`.

Both are timed one frame per call (the streaming case: state fed back, one call per frame) and
on the whole sequence (one call). The numbers are frames per second, best of `--repeats`; the
ratios are stapes / onnxruntime. Goals: ≥ 5× per frame, ≥ 1× on whole sequences.

    python benchmarks/bench_vs_onnxruntime.py [--frames 1000] [--repeats 15] [--sizes 64 128]
        [--cells rnn mgu] [--cflags="-O3 -march=native"] [--markdown] [--json out.json]
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
import time

import numpy as np

from stapes.frontend.onnx_export import export_onnx, make_session
from stapes.ir.float_graph import FloatGraph, MGUCell, Readout, RNNCell
from stapes.ir.lowrank import svd_factors

INPUTS, OUTPUTS = 16, 8
GOAL_FRAME, GOAL_SEQUENCE = 5.0, 1.0


def make_graph(kind: str, n: int, rank: int | None, seed: int) -> FloatGraph:
    """A random, stable model: recurrent matrices scaled to spectral norm 0.9, weights float32 values."""
    rng = np.random.default_rng(seed)
    f32 = lambda a: np.asarray(a, np.float32).astype(np.float64)  # noqa: E731

    def rec():
        u = rng.standard_normal((n, n))
        u *= 0.9 / np.linalg.norm(u, 2)
        return svd_factors(u, rank) if rank else f32(u)

    w = lambda: f32(rng.standard_normal((n, INPUTS)) / np.sqrt(INPUTS))  # noqa: E731
    b = lambda: f32(0.1 * rng.standard_normal(n))  # noqa: E731
    cell = RNNCell(w(), rec(), b()) if kind == "rnn" else MGUCell(w(), rec(), b(), w(), rec(), b())
    readout = Readout(f32(rng.standard_normal((OUTPUTS, n)) / np.sqrt(n)), f32(np.zeros(OUTPUTS)))
    return FloatGraph(cell, readout, None, {"source": "bench_vs_onnxruntime", "seed": seed})


def elapsed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---- onnxruntime ---------------------------------------------------------------------------------
def ort_runners(model, x: np.ndarray):
    """(one frame per call, whole sequence) closures for an exported model; x (1, T, I) float32.
    Per frame, inputs and outputs are bound once to preallocated buffers (IOBinding): about twice
    as fast as `session.run` with fresh arrays, so the baseline is onnxruntime at its best."""
    sess = make_session(model, threads=1)
    n = sess.get_inputs()[1].shape[1]
    o = int(sess.get_outputs()[0].shape[-1])
    frames = [np.ascontiguousarray(x[:, t : t + 1]) for t in range(x.shape[1])]
    x_buf, h_buf, h_out = (np.zeros(shape, np.float32) for shape in ((1, 1, x.shape[2]), (1, n), (1, n)))
    y_out = np.zeros((1, 1, o) if len(sess.get_outputs()[0].shape) == 3 else (1, o), np.float32)
    io = sess.io_binding()
    io.bind_cpu_input("x", x_buf)
    io.bind_cpu_input("h0", h_buf)
    for name, buf in (("y", y_out), ("h_n", h_out)):
        io.bind_output(name, "cpu", 0, np.float32, list(buf.shape), buf.ctypes.data)
    out = {"keep": (x_buf, h_buf, h_out, y_out)}

    def per_frame():
        h_buf[...] = 0
        for xt in frames:
            x_buf[...] = xt
            sess.run_with_iobinding(io)
            h_buf[...] = h_out
        out["h_frame"] = h_buf.copy()

    def sequence():
        out["y_seq"], out["h_seq"] = sess.run(None, {"x": x, "h0": np.zeros((1, n), np.float32)})

    return per_frame, sequence, out


# ---- stapes C ------------------------------------------------------------------------------------
def stapes_runners(graph: FloatGraph, x: np.ndarray, prefix: str):
    """(one frame per call, whole sequence) closures calling the generated C through cffi."""
    from stapes.emit.model_c import emit
    from stapes.fixed.quantize import quantize_graph, quantize_input
    from stapes.host import build

    q = quantize_graph(graph, calib_x=x.astype(np.float64))
    mod = build(q, prefix)
    ffi, lib = mod.ffi, mod.lib
    header = emit(q, prefix)[f"{prefix}.h"]
    found = re.search(rf"#define {prefix.upper()}_SCRATCH_SIZE (\d+)", header)
    if found is None:
        raise RuntimeError(f"the generated {prefix}.h has no {prefix.upper()}_SCRATCH_SIZE macro")
    scratch_size = int(found.group(1))
    xq = np.ascontiguousarray(quantize_input(q, x)[0])  # (T, I) int16
    steps, n, o = xq.shape[0], graph.hidden_size, q.output_size
    state = np.zeros(n, np.int16)
    states = np.zeros((steps, n), np.int16)
    y = np.zeros((steps, o), np.int16)
    scratch = np.zeros(scratch_size, np.int16)
    ptr = lambda ctype, a: ffi.cast(ctype, ffi.from_buffer(a))  # noqa: E731
    xp, sp, yp, statesp, scp = (ptr("int16_t *", a) for a in (xq, state, y, states, scratch))
    step, run, reset = (getattr(lib, f"{prefix}_{fn}") for fn in ("step_rank", "run", "reset"))
    frame_ptrs = [xp + t * graph.input_size for t in range(steps)]
    out = {"q": q, "keep": (xq, state, states, y, scratch)}  # the C pointers point into these arrays

    def per_frame():
        reset(sp)
        for xt in frame_ptrs:
            if step(xt, sp, yp, scp, 0):
                raise RuntimeError("step failed")
        out["h_frame"] = state.copy()

    def sequence():
        reset(sp)
        if run(xp, steps, sp, yp, statesp, scp, 0):
            raise RuntimeError("run failed")
        out["h_seq"] = state.copy()

    return per_frame, sequence, out


def bench_case(kind: str, n: int, rank: int | None, frames: int, repeats: int, seed: int) -> dict:
    graph = make_graph(kind, n, rank, seed)
    x = np.random.default_rng(seed + 1).uniform(-1, 1, (1, frames, INPUTS)).astype(np.float32)
    res = {"cell": kind, "hidden": n, "rank": rank, "frames": frames}
    runners = {"ort": ort_runners(export_onnx(graph, lowrank="dense"), x)}
    if rank:
        runners["ort_scan"] = ort_runners(export_onnx(graph, lowrank="factors"), x)
    runners["stapes"] = stapes_runners(graph, x, f"bench_{kind}_{n}_{rank or 'dense'}")
    for per_frame, sequence, _ in runners.values():  # warm-up (and results for the checks below)
        per_frame()
        sequence()
    best: dict[str, float] = {}
    for _ in range(repeats):  # interleaved, best of `repeats`: a busy machine slows all alike
        for name, (per_frame, sequence, _) in runners.items():
            for how, fn in (("frame", per_frame), ("sequence", sequence)):
                key = f"{name}_{how}_fps"
                best[key] = min(best.get(key, float("inf")), elapsed(fn))
    timings = {k: frames / v for k, v in best.items()}
    res.update({k: round(v, 1) for k, v in timings.items()})
    res["ratio_frame"] = round(timings["stapes_frame_fps"] / timings["ort_frame_fps"], 2)
    res["ratio_sequence"] = round(timings["stapes_sequence_fps"] / timings["ort_sequence_fps"], 2)
    # The three implementations must compute the same model: final states agree.
    _, states = graph.run(x.astype(np.float64))
    ort_out, st_out = runners["ort"][2], runners["stapes"][2]
    res["ort_max_err"] = float(np.max(np.abs(ort_out["h_seq"][0] - states[0, -1])))
    res["stapes_max_err"] = float(np.max(np.abs(st_out["h_seq"] / 32768.0 - states[0, -1])))
    if not np.array_equal(st_out["h_frame"], st_out["h_seq"]):
        raise RuntimeError("stapes per-frame and whole-sequence states differ")
    if not np.allclose(ort_out["h_frame"], ort_out["h_seq"], atol=1e-5):
        raise RuntimeError("onnxruntime per-frame and whole-sequence states differ")
    return res


COLUMNS = [
    "cell",
    "N",
    "variant",
    "ORT fps/frame",
    "stapes fps/frame",
    "ratio/frame",
    "ORT fps/seq",
    "stapes fps/seq",
    "ratio/seq",
    "ORT Scan fps/frame",
    "ORT Scan fps/seq",
]
WIDTHS = [4, 4, 7, 13, 16, 11, 11, 14, 9, 18, 16]


def row_cells(r: dict) -> list[str]:
    scan = [f"{r['ort_scan_frame_fps']:.0f}", f"{r['ort_scan_sequence_fps']:.0f}"] if r["rank"] else ["-", "-"]
    return [
        r["cell"],
        str(r["hidden"]),
        f"r={r['rank']}" if r["rank"] else "dense",
        f"{r['ort_frame_fps']:.0f}",
        f"{r['stapes_frame_fps']:.0f}",
        f"{r['ratio_frame']:.1f}x",
        f"{r['ort_sequence_fps']:.0f}",
        f"{r['stapes_sequence_fps']:.0f}",
        f"{r['ratio_sequence']:.1f}x",
        *scan,
    ]


def format_line(cells: list[str], markdown: bool) -> str:
    if markdown:
        return "| " + " | ".join(cells) + " |"
    return " ".join(c.rjust(w) for c, w in zip(cells, WIDTHS))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--cells", nargs="+", default=["rnn", "mgu"], choices=["rnn", "mgu"])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--cflags",
        default=None,
        help="optimisation flags for the C build instead of stapes.host's default (e.g. "
        '--cflags="-O3 -march=native"; integer results are identical, only speed changes)',
    )
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--json", help="also write the results as JSON here")
    args = ap.parse_args(argv)
    if args.frames < 1 or args.repeats < 1 or min(args.sizes) < 8:
        ap.error("--frames and --repeats must be >= 1 and --sizes >= 8")
    from stapes.host import cbuild as harness

    if args.cflags is not None:
        harness.OPT_FLAGS = args.cflags.split()  # part of the build cache key
    cflags = " ".join(harness.OPT_FLAGS)

    import onnxruntime

    print(
        f"# onnxruntime {onnxruntime.__version__} (CPU, 1 thread) vs stapes C via cffi ({harness.compiler()} "
        f"{cflags}, int16 weights); {platform.machine()}, python {platform.python_version()}; "
        f"{args.frames} frames, best of {args.repeats}"
    )
    print(f"# inputs {INPUTS}, outputs {OUTPUTS}; low-rank r = N/8; fps = frames per second; ratio = stapes / ORT")
    print(format_line(COLUMNS, args.markdown))
    print("|---" * len(COLUMNS) + "|" if args.markdown else "-" * (sum(WIDTHS) + len(WIDTHS) - 1))
    rows = []
    for kind in args.cells:
        for n in args.sizes:
            for rank in (None, max(1, n // 8)):
                rows.append(bench_case(kind, n, rank, args.frames, args.repeats, args.seed))
                print(format_line(row_cells(rows[-1]), args.markdown), flush=True)
    worst_frame = min(r["ratio_frame"] for r in rows)
    worst_seq = min(r["ratio_sequence"] for r in rows)
    print(
        f"# worst ratio per frame {worst_frame:.1f}x (goal >= {GOAL_FRAME:g}x: "
        f"{'met' if worst_frame >= GOAL_FRAME else 'NOT met'}); whole sequence {worst_seq:.1f}x "
        f"(goal >= {GOAL_SEQUENCE:g}x: {'met' if worst_seq >= GOAL_SEQUENCE else 'NOT met'})"
    )
    print(
        f"# max |final state - float64|: onnxruntime {max(r['ort_max_err'] for r in rows):.1e}, "
        f"stapes fixed point {max(r['stapes_max_err'] for r in rows):.1e}"
    )
    if args.json:
        from stapes.fsutil import write_json

        write_json(
            args.json,
            {
                "rows": rows,
                "frames": args.frames,
                "repeats": args.repeats,
                "cflags": cflags,
                "onnxruntime": onnxruntime.__version__,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
