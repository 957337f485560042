"""Flag value types shared by the subcommands: sizes, counts, fractions, specs, palettes.

Each raises `argparse.ArgumentTypeError` (or `CliError`) with the offending text, which the
parser turns into the one-line `vggunet <command>: error: ...` message.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Any, Callable, TypeVar

from vggunet.errors import CliError
from vggunet.transfer.numbering import ENCODER_SLICE_FORMS, parse_encoder_slice

T = TypeVar("T")


FREEZE_SPEC_HELP = ("N (the model's first N layers), encoder, encoder[:N] (the backbone's own "
                    "layers[:N], as in VGG16(...).layers[:N]), or prefixes like block1,block2")
"""What `--freeze`/`--unfreeze` take (the forms of `vggunet.freeze`)."""

def _flag_value(text: str, convert: Callable[[str], T], valid: Callable[[T], bool],
                wanted: str) -> T:
    """`convert(text)` if that succeeds and passes `valid`, else "expected <wanted>, got ..."."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
    if not valid(value):
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text}")
    return value


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
    """Parses a freeze spec from the command line: an int, a role, a slice of the backbone's own
    layer numbering, or comma-separated prefixes.

    Args:
        text: e.g. `"10"` (the model's first 10 layers), `"encoder"`, `"encoder[:10]"` (what
            `keras.applications.VGG16(...).layers[:10]` are; also `"encoder[3:10]"`,
            `"encoder[10:]"`), `"block1,block2"`.

    Returns:
        The spec in the form `vggunet.freeze` takes, or None.

    Example:
        >>> parse_spec("10"), parse_spec("encoder"), parse_spec("block1, block2")
        (10, 'encoder', ['block1', 'block2'])
        >>> parse_spec(" encoder[ :10]")
        'encoder[:10]'
    """
    if text is None:
        return None
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    layers = parse_encoder_slice(text)  # keras-free; a malformed slice fails here, before Keras
    if layers is not None:
        return f"encoder[{'' if layers.start is None else layers.start}:" \
               f"{'' if layers.stop is None else layers.stop}]"
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise CliError(f"empty layer spec {text!r}: give N, a role such as encoder, "
                       f"{ENCODER_SLICE_FORMS}, or layer-name prefixes like block1,block2")
    return parts[0] if len(parts) == 1 else parts


def positive_int(text: str) -> int:
    """argparse type: an integer > 0 (else `argparse.ArgumentTypeError`).

    Args:
        text: the flag's value.

    Returns:
        The integer.

    Example:
        >>> positive_int("8")
        8
    """
    return _flag_value(text, int, lambda v: v > 0, "a positive integer")


def _bn_momentum_arg(text: str) -> float:
    return _flag_value(text, float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


def _weights_arg(text: str) -> str | None:
    return None if text.lower() in ("none", "random", "") else text


def decoder_filters_arg(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated positive ints, deepest decoder stage first (else
    `argparse.ArgumentTypeError`).

    Args:
        text: the flag's value.

    Returns:
        The values as a tuple.

    Example:
        >>> decoder_filters_arg("64,32,16")
        (64, 32, 16)
    """
    return _flag_value(text, lambda t: tuple(int(p) for p in t.split(",") if p.strip()),
                       lambda values: bool(values) and min(values) > 0,
                       "comma-separated positive integers like 512,256,128,64,64")


def layer_refs_arg(text: str) -> tuple[str | int, ...]:
    """argparse type: comma-separated backbone layer names or indices (`-1`: the last layer).

    Args:
        text: the flag's value, e.g. `"block1_conv2,block2_conv2"`.

    Returns:
        The names (str) and indices (int), in order.

    Example:
        >>> layer_refs_arg("block1_conv2, 5,-1")
        ('block1_conv2', 5, -1)
    """
    return _flag_value(text, _layer_refs, bool, "comma-separated layer names or indices like "
                                                "block1_conv2,block2_conv2")


def layer_ref_arg(text: str) -> str | int:
    """argparse type: one backbone layer name or index.

    Args:
        text: the flag's value, e.g. `"block2_pool"` or `"-1"`.

    Returns:
        The name (str) or index (int).

    Example:
        >>> layer_ref_arg("block2_pool"), layer_ref_arg("-1")
        ('block2_pool', -1)
    """
    return _flag_value(text, _layer_refs, lambda refs: len(refs) == 1,
                       "one layer name or index like block2_pool")[0]


def _layer_refs(text: str) -> tuple[str | int, ...]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    return tuple(int(part) if part.lstrip("-").isdigit() else part for part in parts)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (else `argparse.ArgumentTypeError`).

    Args:
        text: the flag's value.

    Returns:
        The integer.
    """
    return _flag_value(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0 (else `argparse.ArgumentTypeError`).

    Args:
        text: the flag's value.

    Returns:
        The number.
    """
    return _flag_value(text, float, lambda v: v > 0 and math.isfinite(v), "a positive number")


def fraction(text: str) -> float:
    """argparse type: a float strictly between 0 and 1 (else `argparse.ArgumentTypeError`).

    Args:
        text: the flag's value, a decimal fraction.

    Returns:
        The fraction, as a float in (0, 1).

    Example:
        >>> fraction("0.2"), fraction(".5")
        (0.2, 0.5)
    """
    return _flag_value(text, float, lambda v: 0.0 < v < 1.0,
                       "a fraction between 0 and 1 like 0.2")


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
        try:
            with open(text, encoding="utf-8") as handle:
                source = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"--palette file {text!r} cannot be read: {exc}") from None
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


def parse_class_names(text: str | None) -> list[str] | None:
    """Parses `--class-names`: comma-separated names, or a file of names (`read_class_names`).

    Args:
        text: e.g. `"background,cell"` or `"data/ccp/classes.txt"` (an existing file).

    Returns:
        The names, or None when not given.

    Example:
        >>> parse_class_names("background, cell")
        ['background', 'cell']
    """
    if not text:
        return None
    if os.path.isfile(text):
        from vggunet.inference.outputs import read_class_names

        return read_class_names(text)
    return [name.strip() for name in text.split(",")]
