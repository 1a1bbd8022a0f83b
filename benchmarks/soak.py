"""Soak: >= 10^6 frames of random models through the C runtime and the reference; prints mismatches.

    python benchmarks/soak.py [--frames 1000000] [--seed 0]

Models: both cells, int8 and int16 weights, dense and random ranks, normal and extreme weight
scales, both readouts; inputs uniform over int16 or only at the limits (-32768, 0, 32767), and
run-time ranks below the stored one. Every 8th model goes through the generated C (emit +
cffi build) instead of the runtime structs. The mismatch count must be 0.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from stapes.fixed.reference import run_reference
from stapes.host import build, run_c, run_runtime
from stapes.host.random_models import random_inputs, random_qgraph


def draw_model(rng: np.random.Generator, seed: int):
    kind = str(rng.choice(["rnn", "mgu"]))
    hidden = int(rng.integers(1, 33))
    rank = int(rng.integers(1, hidden + 1)) if rng.random() < 0.6 else None
    q = random_qgraph(
        seed,
        weights=str(rng.choice(["int8", "int16"])),
        kind=kind,
        hidden=hidden,
        inputs=int(rng.integers(1, 9)),
        outputs=int(rng.integers(1, 5)),
        rank=rank,
        scale=float(rng.choice([0.5, 1.0, 2.0, 8.0, 100.0])),
        readout_mode=str(rng.choice(["per_step", "final"])),
        readout_activation=str(rng.choice(["linear", "sigmoid"])),
    )
    run_rank = int(rng.integers(1, q.rank + 1)) if q.lowrank and rng.random() < 0.5 else None
    return q, run_rank


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    frames = mismatches = values = models = 0
    t0 = time.time()
    while frames < args.frames:
        q, rank = draw_model(rng, int(rng.integers(0, 2**31)))
        batch, steps = int(rng.integers(50, 400)), int(rng.integers(100, 400))
        x = random_inputs(int(rng.integers(0, 2**31)), q, batch, steps, extreme=bool(rng.random() < 0.3))
        ref = run_reference(q, x, rank=rank)
        if models % 8 == 7:
            y, states, _ = run_c(q, x, rank=rank, prefix="soak", module=build(q, prefix="soak"))
        else:
            y, states, _ = run_runtime(q, x, rank=rank)
        bad = int((y != ref.outputs).sum() + (states != ref.states).sum())
        if bad:
            print(f"model {models} ({q.kind} N={q.hidden_size} rank {rank} int{q.weight_bits}): {bad} mismatches")
        mismatches += bad
        values += y.size + states.size
        frames += batch * steps
        models += 1
    print(
        f"soak: {models} models, {frames} frames, {values} values compared, "
        f"mismatches: {mismatches} ({time.time() - t0:.0f} s)"
    )
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
