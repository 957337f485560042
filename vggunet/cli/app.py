"""The `vggunet` command: the parser, the subcommand list and the entry point.

Each subcommand lives in its own module of `vggunet.cli` (`_add_<name>` registers its flags,
`_cmd_<name>` runs it) and is listed in `_SUBCOMMANDS`. Building the parser imports neither
Keras nor TensorFlow (`vggunet --help` and usage errors are instant); a subcommand imports what
it needs when it runs.

A user error (any `vggunet.errors.VggUnetError`: bad flag values, missing or bad files, data
that cannot be used, outputs that cannot be written) ends with a one-line
`vggunet <command>: error: ...` message and exit code 2; `--debug` shows the traceback
instead. Any other exception is a bug in vggunet and shows its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Sequence

from vggunet.cli.demo import _add_demo
from vggunet.cli.evaluate import _add_evaluate
from vggunet.cli.export import _add_export
from vggunet.cli.inspect import _add_inspect
from vggunet.cli.predict import _add_predict
from vggunet.cli.train import _add_finetune, _add_train
from vggunet.errors import VggUnetError

EXIT_USAGE = 2

# The command's environment defaults, set by `main` before anything imports TensorFlow or
# matplotlib (the library itself never changes the user's environment): TensorFlow's C++ info
# and warning logs off, unless the user set the variable.
_ENVIRONMENT_DEFAULTS = {"TF_CPP_MIN_LOG_LEVEL": "3"}


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (no usage dump) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


_SUBCOMMANDS: list[Callable[[Any], None]] = [
    _add_inspect, _add_train, _add_finetune, _add_predict, _add_evaluate, _add_export, _add_demo,
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered.

    Returns:
        The parser.
    """
    parser = _Parser(prog="vggunet", description="U-Nets with pretrained encoders for Keras 3.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for register in _SUBCOMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vggunet` console script.

    Args:
        argv: arguments (default `sys.argv[1:]`).

    Returns:
        The exit code: 0 on success, 2 on a user error (a `VggUnetError`), 130 when
        interrupted.
    """
    for name, value in _ENVIRONMENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"vggunet {args.command}: interrupted", file=sys.stderr)
        return 130
    except VggUnetError as exc:
        if args.debug:
            raise
        print(f"vggunet {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE


def _one_line(exc: BaseException) -> str:
    """The error's message on one line (an OSError's "[Errno N]" prefix dropped)."""
    text = str(exc)
    if isinstance(exc, OSError) and exc.errno and exc.strerror:
        text = exc.strerror
        if exc.filename and str(exc.filename) not in text:
            text += f": '{exc.filename}'"
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
