"""Host benchmark: the generated C via cffi against the torch float model, and the pipeline time.

    python benchmarks/bench_host.py [--hidden 128] [--rank 16] [--sequences 64] [--steps 100]

Prints frames per second (of CPU time) of (a) C, one cffi call per batch of sequences, (b) C, one cffi call per
frame (the streaming API), (c) the torch float model run sequence by sequence (batch 1, one
thread), as ratios to torch; and the wall time of quantize -> emit -> build -> verify for an
N=128 model with a warm cffi cache (the first, cold, build is timed separately).
"""

from __future__ import annotations

import argparse
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--rank", type=int, default=16, help="0: dense recurrent matrices")
    ap.add_argument("--kind", default="mgu", choices=["rnn", "mgu"])
    ap.add_argument("--sequences", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    from stapes.cli import main as stapes_main
    from stapes.extract import from_graph
    from stapes.host import build, run_c
    from stapes.host.random_models import random_graph
    from stapes.quantize import quantize_graph, quantize_input

    torch.set_num_threads(1)
    graph = random_graph(args.seed, kind=args.kind, hidden=args.hidden, inputs=8, outputs=4, rank=args.rank or None)
    x = np.random.default_rng(args.seed).uniform(-1, 1, size=(args.sequences, args.steps, 8))
    q = quantize_graph(graph, x)
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
                model(xt[b:b + 1])

    fps_torch = _fps(torch_loop, frames)
    fps_seq = _fps(lambda: run_c(q, x_q, prefix="bench", module=module), frames)
    fps_frame = _fps(lambda: run_c(q, x_q, per_frame=True, prefix="bench", module=module), frames, repeat=1)
    print(f"model: {args.kind} N={args.hidden} rank {args.rank}, {args.sequences} sequences x {args.steps} steps "
          f"(build {build_s:.2f} s)")
    print(f"torch float, batch 1, 1 thread: {fps_torch:12.0f} frames/s   1.0x")
    print(f"C via cffi, one call per batch:  {fps_seq:12.0f} frames/s  {fps_seq / fps_torch:5.1f}x")
    print(f"C via cffi, one call per frame:  {fps_frame:12.0f} frames/s  {fps_frame / fps_torch:5.1f}x")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "m").mkdir()
        graph.save(tmp / "m")

        def pipeline():
            for argv in (["quantize", str(tmp / "m"), "--out", str(tmp / "q")],
                         ["emit", str(tmp / "q"), "--out", str(tmp / "c")],
                         ["verify", str(tmp / "q"), "--sequences", "16"]):
                if stapes_main(argv) != 0:
                    raise SystemExit(f"pipeline step {argv[0]} failed")

        t0 = time.perf_counter()
        pipeline()
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        pipeline()
        warm = time.perf_counter() - t0
    print(f"pipeline quantize -> emit -> build -> verify (N={args.hidden}): first {first:.2f} s, "
          f"warm cffi cache {warm:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
