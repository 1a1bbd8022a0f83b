"""`stapes train`: train an RNN or MGU on a task and write a model folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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
    p.add_argument("--hidden", type=int, default=64, help="hidden size N (default: 64)")
    p.add_argument("--rank", type=int, default=None, help="train with low-rank recurrent matrices of this rank")
    p.add_argument("--delay", type=int, help="memorization: blanks between pattern and trigger (default: 20)")
    p.add_argument("--length", type=int, help="memorization: pattern length L (default: 5)")
    p.add_argument("--symbols", type=int, help="memorization: alphabet size K (default: 2)")
    p.add_argument("--hold", type=int, help="memorization: steps each pattern symbol is held (default: 1)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any task parameter (repeatable), e.g. --param noise=0.5",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="maximum training steps (default per task: 2000 memorization, 300 audio)",
    )
    p.add_argument("--batch", type=int, default=None, help="batch size (default per task: 64, audio 16)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: 1e-2 MGU, 3e-3 RNN)")
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip, 0 = off (default: 1.0)")
    p.add_argument(
        "--target", type=float, default=1.0, help="stop once the validation primary metric reaches this (default: 1.0)"
    )
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--spectral-radius", type=float, default=1.0, help="recurrent init spectral radius")
    p.add_argument("--threads", type=int, default=1, help="torch threads (part of bit-for-bit determinism)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="output model folder")


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


def check_output_folder(out: str) -> Path:
    """Refuse outputs that would clobber something that is not a stapes folder."""
    from stapes.ir.float_graph import is_model_folder

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not is_model_folder(path):
        raise UserError(f"--out {out}: a non-empty folder that is not a stapes model folder; refusing to replace it")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {out}: {parent} is not a folder")
            break
    return path


def run(args: argparse.Namespace) -> int:
    from stapes.frontend.train import train_new
    from stapes.tasks import make_task

    out = check_output_folder(args.out)
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
