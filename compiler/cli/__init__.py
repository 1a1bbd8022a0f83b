"""The `stapes` command line: one command, one module per subcommand in `stapes.cli.commands`.

A command module defines `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`.
Modules import heavy libraries (torch, onnx) inside `run`, so `stapes --help` stays fast.
Exit codes: 0 success, 1 a check failed, 2 a user error (one line, no traceback).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import signal
import sys
import threading

from stapes._version import __version__
from stapes.cli import commands as _commands_pkg
from stapes.errors import CheckFailed, UserError
from stapes.fsutil import checked_outputs

# Order in `stapes --help`: the pipeline's order; unknown modules follow alphabetically.
_ORDER = [
    "demo",
    "train",
    "compress",
    "sweep",
    "perturb",
    "quantize",
    "emit",
    "verify",
    "budget",
    "plan",
    "board",
    "export-onnx",
    "import-onnx",
    "paper",
]


_DESCRIPTION = (
    "stapes: train small recurrent networks (tanh RNN, MGU), compress their recurrent weights\n"
    "by truncated SVD, and deploy them as bit-exact fixed-point C for low-power audio devices."
)


def _command_modules():
    mods = []
    for info in pkgutil.iter_modules(_commands_pkg.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{_commands_pkg.__name__}.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            mods.append(mod)
    rank = {name: i for i, name in enumerate(_ORDER)}
    return sorted(mods, key=lambda m: (rank.get(m.NAME, len(rank)), m.NAME))


class _Parser(argparse.ArgumentParser):
    """argparse, but a user error is one line plus a hint, with exit code 2."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stapes", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"stapes {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    previous = _handle_sigterm()
    try:
        with checked_outputs():
            return int(args._run(args) or 0)
    except UserError as e:
        print(f"stapes {args.command}: error: {e}", file=sys.stderr)
        return UserError.exit_code
    except CheckFailed as e:
        print(f"stapes {args.command}: check failed: {e}", file=sys.stderr)
        return CheckFailed.exit_code
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        print(f"stapes {args.command}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    finally:
        if previous is not False:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt: the same cleanup runs (temporary
    outputs removed, worker processes stopped), and the exit status is 143."""


def _raise_terminated(signum, frame):
    raise Terminated()


def _handle_sigterm():
    """Make SIGTERM raise :class:`Terminated`; returns the previous handler (False: not installed,
    outside the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    return signal.signal(signal.SIGTERM, _raise_terminated)


if __name__ == "__main__":
    sys.exit(main())
