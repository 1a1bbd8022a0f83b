"""Training speed of stapes' MGU against torch.nn.GRU of the same size (steps per second).

One training step = forward over the whole sequence, a per-step readout, cross-entropy loss,
backward and an Adam update, on the same random batch for both models. Prints both rates and
their ratio (the goal: the MGU at >= 0.5x the GRU's speed).

    python benchmarks/bench_train.py [--hidden 64] [--batch 64] [--steps-per-seq 31] [--iters 100]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.nn import functional as F

from stapes.frontend.models import ModelConfig, RecurrentModel


class GRUModel(nn.Module):
    def __init__(self, input_size: int, hidden: int, output: int):
        super().__init__()
        self.gru = nn.GRU(input_size, hidden, batch_first=True)
        self.out = nn.Linear(hidden, output)

    def forward(self, x):
        states, _ = self.gru(x)
        return self.out(states), states


def steps_per_second(model: nn.Module, x: torch.Tensor, y: torch.Tensor, iters: int, warmup: int = 5) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def one_step():
        out, _ = model(x)
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        one_step()
    start = time.perf_counter()
    for _ in range(iters):
        one_step()
    return iters / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps-per-seq", type=int, default=31, help="sequence length (memorization T=20: 31)")
    ap.add_argument("--input", type=int, default=4)
    ap.add_argument("--output", type=int, default=2)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.steps_per_seq, args.input)
    y = torch.randint(0, args.output, (args.batch, args.steps_per_seq))
    mgu = RecurrentModel(ModelConfig("mgu", args.input, args.hidden, args.output), seed=0)
    gru = GRUModel(args.input, args.hidden, args.output)
    # Interleave the measurements so load changes on a shared machine hit both alike.
    rates = {"mgu": [], "gru": []}
    for _ in range(3):
        rates["mgu"].append(steps_per_second(mgu, x, y, args.iters))
        rates["gru"].append(steps_per_second(gru, x, y, args.iters))
    mgu_rate, gru_rate = max(rates["mgu"]), max(rates["gru"])
    print(f"hidden {args.hidden}, batch {args.batch}, sequence {args.steps_per_seq}, threads {args.threads}")
    print(f"stapes MGU:    {mgu_rate:8.1f} training steps/s")
    print(f"torch.nn.GRU:  {gru_rate:8.1f} training steps/s")
    print(f"ratio MGU/GRU: {mgu_rate / gru_rate:.2f}x (goal >= 0.5x)")


if __name__ == "__main__":
    main()
