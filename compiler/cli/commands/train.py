"""`stapes train`: train an RNN or MGU on a task and write a model folder."""

from __future__ import annotations

import argparse
import json

from stapes.cli import argtypes as at
from stapes.cli import outputs
from stapes.errors import UserError

NAME = "train"
HELP = "train an RNN or MGU on a task and write a model folder"
DESCRIPTION = """Train an Elman RNN or MGU on a task and write a model folder (graph.json/graph.npz,
model.pt, config.json, metrics.json); stops early once the validation metric reaches --target."""

# Task parameters with their own flags (memorization); any task takes --param KEY=VALUE.
_TASK_FLAGS = ("length", "symbols", "delay", "hold")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="memorization", help="task name (default: memorization)")
    p.add_argument("--cell", choices=("rnn", "mgu"), default="mgu", help="recurrent cell (default: mgu)")
    p.add_argument(
        "--hidden",
        type=at.int_range(1, at.MAX_HIDDEN),
        default=64,
        help=f"hidden size N, 1..{at.MAX_HIDDEN} (default: 64)",
    )
    p.add_argument(
        "--rank",
        type=at.int_range(1, at.MAX_HIDDEN),
        default=None,
        help="train with low-rank recurrent matrices of this rank (1..N)",
    )
    p.add_argument(
        "--delay",
        type=at.int_range(0, at.MAX_SEQUENCE_STEPS),
        help=f"memorization: blanks between pattern and trigger, 0..{at.MAX_SEQUENCE_STEPS} (default: 20)",
    )
    p.add_argument(
        "--length",
        type=at.int_range(1, at.MAX_SEQUENCE_STEPS),
        help=f"memorization: pattern length L, 1..{at.MAX_SEQUENCE_STEPS} (default: 5)",
    )
    p.add_argument(
        "--symbols",
        type=at.int_range(2, at.MAX_HIDDEN),
        help=f"memorization: alphabet size K, 2..{at.MAX_HIDDEN} (default: 2)",
    )
    p.add_argument(
        "--hold",
        type=at.int_range(1, at.MAX_SEQUENCE_STEPS),
        help=f"memorization: steps each pattern symbol is held, 1..{at.MAX_SEQUENCE_STEPS} (default: 1)",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any task parameter (repeatable), e.g. --param noise=0.5",
    )
    p.add_argument("--seed", type=at.seed, default=0, help=f"seed, 0..{at.SEED_MAX} (default: 0)")
    p.add_argument(
        "--steps",
        type=at.int_range(1, at.MAX_TRAIN_STEPS),
        default=None,
        help=f"maximum training steps, 1..{at.MAX_TRAIN_STEPS} (default per task: 2000 memorization, 300 audio)",
    )
    p.add_argument(
        "--batch",
        type=at.int_range(1, at.MAX_BATCH),
        default=None,
        help=f"batch size, 1..{at.MAX_BATCH}; batch x sequence steps x hidden size at most {at.MAX_BATCH_VALUES} (default per task: 64, audio 16)",
    )
    p.add_argument(
        "--lr",
        type=at.float_range(0.0, lo_open=True, what="learning rate"),
        default=None,
        help="Adam learning rate (default: 1e-2 MGU, 3e-3 RNN)",
    )
    p.add_argument("--clip", type=at.float_range(0.0), default=1.0, help="gradient-norm clip, 0 = off (default: 1.0)")
    p.add_argument(
        "--target",
        type=at.float_range(-1e300, 1e300),
        default=1.0,
        help="stop once the validation primary metric reaches this (default: 1.0)",
    )
    p.add_argument("--eval-every", type=at.int_range(1, at.MAX_TRAIN_STEPS), default=50)
    p.add_argument(
        "--spectral-radius",
        type=at.float_range(0.0, 100.0, lo_open=True),
        default=1.0,
        help="recurrent init spectral radius",
    )
    p.add_argument(
        "--threads",
        type=at.int_range(1, at.MAX_THREADS),
        default=1,
        help=f"torch threads, 1..{at.MAX_THREADS} (part of bit-for-bit determinism)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="output model folder")
    outputs.add_force(p)


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def task_params(args: argparse.Namespace) -> dict:
    params = {k: getattr(args, k) for k in _TASK_FLAGS if getattr(args, k, None) is not None}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--param expects KEY=VALUE, got {item!r}")
        params[key] = _parse_value(value)
    return params


def run(args: argparse.Namespace) -> int:
    from stapes.frontend.train import train_new
    from stapes.tasks import make_task

    out = outputs.check(args, "train")
    task = make_task(args.task, **task_params(args))
    if args.hidden < 1:
        raise UserError(f"--hidden must be a positive integer, got {args.hidden}")
    print(f"training {args.cell.upper()} N={args.hidden} on {task.describe()} (seed {args.seed})")
    trained = train_new(
        task,
        args.cell,
        args.hidden,
        progress=not args.quiet,
        model_options={"spectral_radius": args.spectral_radius, "ranks": args.rank},
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        clip=args.clip,
        seed=args.seed,
        target=args.target,
        eval_every=args.eval_every,
        threads=args.threads,
    )
    try:
        trained.save(out)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    print(format_summary(trained.metrics))
    print(f"wrote {out}")
    return 0


def format_summary(metrics: dict) -> str:
    test = ", ".join(f"{k} {v:.4f}" for k, v in metrics["test"].items())
    early = " (reached the target)" if metrics["stopped_early"] else ""
    return f"{metrics['steps']} steps in {metrics['seconds']:.1f} s{early}; test: {test}"
