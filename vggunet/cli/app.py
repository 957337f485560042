"""The `vggunet` command: the parser, the subcommand list and the entry point.

Each subcommand lives in its own module of `vggunet.cli` (`_add_<name>` registers its flags,
`_cmd_<name>` runs it) and is listed in `_SUBCOMMANDS`; a bad argument or bad data ends with a one-line `vggunet <command>: error: ...` message and exit
code 2 (`--debug` shows the traceback instead).
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

EXIT_USAGE = 2


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
        The exit code: 0 on success, 2 on a user error.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"vggunet {args.command}: interrupted", file=sys.stderr)
        return 130
    except (VggUnetError, ValueError, OSError, KeyError) as exc:
        if args.debug:
            raise
        message = " ".join(str(exc).split())
        print(f"vggunet {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
