"""Flag value types shared by the subcommands: sizes, counts, fractions, specs, palettes.

Each raises `argparse.ArgumentTypeError` (or `CliError`) with the offending text, which the
parser turns into the one-line `vggunet <command>: error: ...` message.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from vggunet.errors import CliError


def parse_size(text: str) -> tuple[int, int]:
    """Parses `"HxW"` (or a single `"N"` for a square) into `(H, W)`.

    Args:
        text: e.g. `"224x224"`.

    Returns:
        `(height, width)`, both positive.

    Example:
        >>> parse_size("256x320"), parse_size("64")
        ((256, 320), (64, 64))
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
    """argparse type: an integer > 0.

    Args:
        text: the flag's value.

    Returns:
        The integer.

    Raises:
        argparse.ArgumentTypeError: not an integer, or <= 0.

    Example:
        >>> positive_int("8")
        8
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _bn_momentum_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {value:g}")
    return value


def _weights_arg(text: str) -> str | None:
    return None if text.lower() in ("none", "random", "") else text


def decoder_filters_arg(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated positive ints, deepest decoder stage first.

    Args:
        text: the flag's value.

    Returns:
        The values as a tuple.

    Raises:
        argparse.ArgumentTypeError: not a list of positive integers.

    Example:
        >>> decoder_filters_arg("64,32,16")
        (64, 32, 16)
    """
    try:
        values = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers like 512,256,128,64,64, got {text!r}"
        ) from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers like 512,256,128,64,64, got {text!r}"
        )
    return values


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0.

    Args:
        text: the flag's value.

    Returns:
        The integer.

    Raises:
        argparse.ArgumentTypeError: not an integer, or negative.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0.

    Args:
        text: the flag's value.

    Returns:
        The number.

    Raises:
        argparse.ArgumentTypeError: not a finite positive number.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def fraction(text: str) -> float:
    """argparse type: a float strictly between 0 and 1.

    Args:
        text: the flag's value.

    Returns:
        The fraction.

    Raises:
        argparse.ArgumentTypeError: not a number in (0, 1).

    Example:
        >>> fraction("0.2")
        0.2
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction like 0.2, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text}")
    return value


def parse_palette(text: str | None) -> Any:
    """Reads `--palette`: a JSON list of [r, g, b] (position = class) or {class: [r, g, b]},
    inline or in a JSON file.

    Args:
        text: the JSON text, a path to a JSON file, or None.

    Returns:
        The palette as parsed JSON (list or dict with int keys), or None.
    """
    import json

    if text is None:
        return None
    source = text
    if os.path.isfile(text):
        with open(text, encoding="utf-8") as handle:
            source = handle.read()
    try:
        palette = json.loads(source)
    except json.JSONDecodeError as exc:
        raise CliError(f"--palette must be a JSON list like [[0,0,0],[255,0,0]] or a JSON file, "
                       f"got {text!r} ({exc.msg})") from None
    if isinstance(palette, dict):
        try:
            palette = {int(k): v for k, v in palette.items()}
        except ValueError:
            raise CliError("--palette keys must be class indices") from None
    elif not isinstance(palette, list):
        raise CliError("--palette must be a JSON list or object")
    return palette
