"""The `vggunet` command: a thin shell over the Python API.

Each subcommand lives in its own `_cmd_<name>` function registered in `_SUBCOMMANDS`; a bad
argument or bad data ends with a one-line `vggunet <command>: error: ...` message and exit
code 2 (`--debug` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

EXIT_USAGE = 2


class CliError(ValueError):
    """A user error detected by the CLI itself (bad flag value)."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (no usage dump) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def parse_size(text: str) -> tuple[int, int]:
    """Parses `"HxW"` (or a single `"N"` for a square) into `(H, W)`.

    Args:
        text: e.g. `"224x224"`.

    Returns:
        `(height, width)`, both positive.
    """
    parts = text.lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 224x224, got {text!r}") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) <= 0:
        raise argparse.ArgumentTypeError(
            f"size must be two positive integers like 224x224, got {text!r}"
        )
    return values[0], values[1]


def parse_spec(text: str | None) -> Any:
    """Parses a freeze spec from the command line: an int, a role, or comma-separated prefixes.

    Args:
        text: e.g. `"10"`, `"encoder"`, `"block1,block2"`.

    Returns:
        The spec in the form `vggunet.freeze` takes, or None.
    """
    if text is None:
        return None
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"empty layer spec {text!r}")
    return parts[0] if len(parts) == 1 else parts


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _weights_arg(text: str) -> str | None:
    return None if text.lower() in ("none", "random", "") else text


def add_model_args(parser: argparse.ArgumentParser, weights_default: str = "none") -> None:
    """Flags shared by commands that build an encoder U-Net."""
    from vggunet.encoders import ENCODERS

    parser.add_argument("--backbone", default="vgg16", choices=sorted(ENCODERS),
                        help="encoder backbone (default vgg16)")
    parser.add_argument("--weights", type=_weights_arg, default=_weights_arg(weights_default),
                        help="imagenet, none, or a path to a backbone weights file "
                             f"(default {weights_default})")
    parser.add_argument("--input-size", type=parse_size, default=None, metavar="HxW",
                        help="fixed input size; default: any size")
    parser.add_argument("--channels", type=positive_int, default=3, help="input channels")
    parser.add_argument("--num-classes", type=positive_int, default=2, help="output classes")
    parser.add_argument("--decoder", default="upsampling", choices=("upsampling", "transpose"))
    parser.add_argument("--decoder-batchnorm", action="store_true",
                        help="BatchNorm in bottleneck and decoder")
    parser.add_argument("--precision", default="auto",
                        choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"))


def build_model_from_args(args: argparse.Namespace) -> Any:
    """Builds the encoder U-Net the model flags describe."""
    from vggunet.unet import build_vgg_unet

    height, width = args.input_size if args.input_size else (None, None)
    return build_vgg_unet(
        args.backbone, input_shape=(height, width, args.channels), num_classes=args.num_classes,
        weights=args.weights, decoder=args.decoder, decoder_batchnorm=args.decoder_batchnorm,
        precision=args.precision,
    )


def _cmd_inspect(args: argparse.Namespace) -> int:
    from vggunet.freezing import freeze, unfreeze
    from vggunet.inspect import print_layers

    if args.model:
        from vggunet.saving import load_model

        model = load_model(args.model, compile=False)
    else:
        model = build_model_from_args(args)
    if args.freeze is not None or args.up_to is not None:
        print(freeze(model, parse_spec(args.freeze), up_to=args.up_to))
    if args.unfreeze is not None:
        print(unfreeze(model, parse_spec(args.unfreeze)))
    roles = tuple(args.roles.split(",")) if args.roles else None
    print_layers(model, roles=roles)
    return 0


def _add_inspect(sub: Any) -> None:
    p = sub.add_parser("inspect", help="print the layer table of a model",
                       description="Build (or load) a model and print index, name, class, "
                                   "trainable, output shape, params and role of every layer.")
    add_model_args(p)
    p.add_argument("--model", help="inspect a saved .keras model instead of building one")
    p.add_argument("--freeze", default=None,
                   help="freeze spec: N (first N layers), encoder, or prefixes like block1,block2")
    p.add_argument("--up-to", default=None, help="freeze the encoder up to this block (block4)")
    p.add_argument("--unfreeze", default=None, help="unfreeze spec, applied after --freeze")
    p.add_argument("--roles", default=None,
                   help="only show these roles, e.g. skip,bottleneck")
    p.set_defaults(func=_cmd_inspect)


# Subcommand registrars, in the order `vggunet --help` lists them.
_SUBCOMMANDS: list[Callable[[Any], None]] = [_add_inspect]


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
    except (ValueError, OSError, KeyError) as exc:
        if args.debug:
            raise
        message = " ".join(str(exc).split())
        print(f"vggunet {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
