"""Host benchmark: the generated C via cffi against the torch float model, and the pipeline time.

    python benchmarks/bench_host.py [--hidden 128] [--rank 16] [--sequences 64] [--steps 100]
        [--weights int16|int8] [--callgrind]

Prints frames per second (of CPU time) of (a) C, one cffi call per batch of sequences, (b) C, one cffi call per
frame (the streaming API), (c) the torch float model run sequence by sequence (batch 1, one
thread), as ratios to torch; and the wall time of quantize -> emit -> build -> verify for an
N=128 model with a warm cffi cache (the first, cold, build is timed separately).
--callgrind instead prints x86 instructions per frame of the generated C (valgrind's callgrind,
deterministic; a stand-alone driver built with the harness's flags, 200 vs 1000 frames).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def _fps(fn, frames: int, repeat: int = 3) -> float:
    """Frames per second of CPU time (process time: fair on a loaded, shared machine; every
    contender runs on one thread), best of `repeat`."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return frames / best


_DRIVER = r"""#include <stdio.h>
#include <stdlib.h>
#include "bench.h"
static int16_t x[1000 * BENCH_INPUT_SIZE], y[1000 * BENCH_OUTPUT_SIZE], states[1000 * BENCH_STATE_SIZE];
int main(int argc, char **argv)
{
    int16_t state[BENCH_STATE_SIZE], scratch[BENCH_SCRATCH_SIZE];
    int steps = argc > 1 ? atoi(argv[1]) : 0, i;
    unsigned long sum = 0;
    for (i = 0; i < 1000 * BENCH_INPUT_SIZE; i++) x[i] = (int16_t)((i * 7919) % 65536 - 32768);
    bench_reset(state);
    if (bench_run(x, steps, state, y, states, scratch, 0) != 0) return 1;
    for (i = 0; i < steps * BENCH_STATE_SIZE; i++) sum = sum * 31u + (unsigned short)states[i];
    printf("%lu\n", sum);
    return 0;
}
"""


def callgrind_per_frame(q) -> float:
    """x86 instructions per frame of the generated C + runtime (callgrind, 1000 - 200 frames)."""
    from stapes.emit.model_c import emit
    from stapes.host.cbuild import OPT_FLAGS, WARNING_FLAGS, compiler, runtime_cflags, runtime_sources

    if shutil.which("valgrind") is None:
        raise SystemExit("--callgrind needs valgrind (apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, text in {**emit(q, "bench"), "driver.c": _DRIVER}.items():
            (tmp / name).write_text(text)
        subprocess.run(
            [
                compiler(),
                *WARNING_FLAGS,
                *OPT_FLAGS,
                *runtime_cflags(),
                f"-I{tmp}",
                *map(str, runtime_sources()),
                str(tmp / "bench.c"),
                str(tmp / "driver.c"),
                "-o",
                str(tmp / "bench"),
            ],
            check=True,
        )
        counts = []
        for frames in (200, 1000):
            proc = subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out", str(tmp / "bench"), str(frames)],
                capture_output=True,
                text=True,
                check=True,
            )
            counts.append(int(re.search(r"Collected : (\d+)", proc.stderr).group(1)))
    return (counts[1] - counts[0]) / 800


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--rank", type=int, default=16, help="0: dense recurrent matrices")
    ap.add_argument("--kind", default="mgu", choices=["rnn", "mgu"])
    ap.add_argument("--sequences", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights", default="int16", choices=["int16", "int8"])
    ap.add_argument("--callgrind", action="store_true", help="print x86 instructions per frame instead")
    args = ap.parse_args()

    import torch

    from stapes.cli import main as stapes_main
    from stapes.fixed.quantize import quantize_graph, quantize_input
    from stapes.frontend.extract import from_graph
    from stapes.host import build, run_c
    from stapes.host.random_models import random_graph

    torch.set_num_threads(1)
    graph = random_graph(args.seed, kind=args.kind, hidden=args.hidden, inputs=8, outputs=4, rank=args.rank or None)
    x = np.random.default_rng(args.seed).uniform(-1, 1, size=(args.sequences, args.steps, 8))
    q = quantize_graph(graph, x, weights=args.weights)
    if args.callgrind:
        print(
            f"model: {args.kind} N={args.hidden} rank {args.rank} {args.weights}: {callgrind_per_frame(q):,.0f} "
            "x86 instructions per frame (callgrind)"
        )
        return 0
    x_q = quantize_input(q, x)
    t0 = time.perf_counter()
    module = build(q, prefix="bench")
    build_s = time.perf_counter() - t0
    frames = args.sequences * args.steps

    model = from_graph(graph).eval()
    xt = torch.tensor(x, dtype=torch.float32)

    def torch_loop():
        with torch.no_grad():
            for b in range(args.sequences):
                model(xt[b : b + 1])

    fps_torch = _fps(torch_loop, frames)
    fps_seq = _fps(lambda: run_c(q, x_q, prefix="bench", module=module), frames)
    fps_frame = _fps(lambda: run_c(q, x_q, per_frame=True, prefix="bench", module=module), frames, repeat=1)
    print(
        f"model: {args.kind} N={args.hidden} rank {args.rank} {args.weights}, {args.sequences} sequences x "
        f"{args.steps} steps "
        f"(build {build_s:.2f} s)"
    )
    print(f"torch float, batch 1, 1 thread: {fps_torch:12.0f} frames/s   1.0x")
    print(f"C via cffi, one call per batch:  {fps_seq:12.0f} frames/s  {fps_seq / fps_torch:5.1f}x")
    print(f"C via cffi, one call per frame:  {fps_frame:12.0f} frames/s  {fps_frame / fps_torch:5.1f}x")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "m").mkdir()
        graph.save(tmp / "m")

        def pipeline():
            for argv in (
                ["quantize", str(tmp / "m"), "--out", str(tmp / "q")],
                ["emit", str(tmp / "q"), "--out", str(tmp / "c")],
                ["verify", str(tmp / "q"), "--sequences", "16"],
            ):
                if stapes_main(argv) != 0:
                    raise SystemExit(f"pipeline step {argv[0]} failed")

        t0 = time.perf_counter()
        pipeline()
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        pipeline()
        warm = time.perf_counter() - t0
    print(
        f"pipeline quantize -> emit -> build -> verify (N={args.hidden}): first {first:.2f} s, "
        f"warm cffi cache {warm:.2f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
