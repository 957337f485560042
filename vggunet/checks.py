"""Argument checks shared by every module: one place for "must be a positive integer", option
lists with "did you mean ...?" suggestions, booleans and numbers in a range.

Each check returns the value (normalised: numpy integers become `int`) or raises the error class
the caller names (default `ArgumentError`), with the argument's name and the value received in
the message. Imports nothing heavy, so the CLI can use it before Keras is loaded.
"""

from __future__ import annotations

import difflib
import math
import numbers
from typing import Any, Iterable, Sequence

from vggunet.errors import ArgumentError

__all__ = [
    "check_bool",
    "check_choice",
    "check_int",
    "check_number",
    "did_you_mean",
]


def did_you_mean(value: Any, options: Iterable[Any]) -> str:
    """A " Did you mean 'x'?" suffix for the closest option names, or "" when none is close.

    Args:
        value: what the user gave.
        options: the valid values (non-strings are ignored for the suggestion).

    Returns:
        The suffix, starting with a space, or an empty string.

    Example:
        >>> did_you_mean("upsampleing", ["upsampling", "transpose"])
        " Did you mean 'upsampling'?"
        >>> did_you_mean("xyz", ["vgg16"])
        ''
    """
    if not isinstance(value, str):
        return ""
    names = [o for o in options if isinstance(o, str)]
    lowered = {n.lower(): n for n in names}
    close = difflib.get_close_matches(value.lower(), list(lowered), n=3, cutoff=0.6)
    if not close:
        return ""
    quoted = " or ".join(repr(lowered[c]) for c in close)
    return f" Did you mean {quoted}?"


def check_choice(
    value: Any,
    options: Sequence[Any],
    argument: str,
    *,
    error: type[Exception] = ArgumentError,
    case_sensitive: bool = True,
) -> Any:
    """Checks that `value` is one of `options`.

    Args:
        value: the value to check.
        options: the valid values, in the order the message lists them.
        argument: the argument's name, for the message.
        error: exception class to raise.
        case_sensitive: with False, strings match ignoring case and the option's own spelling
            is returned.

    Returns:
        The matching option.

    Raises:
        error: `value` is not an option; the message lists the options and suggests the
            closest ones.

    Example:
        >>> check_choice("cosine", ("constant", "cosine"), "lr_schedule")
        'cosine'
        >>> check_choice("cosin", ("constant", "cosine"), "lr_schedule")
        Traceback (most recent call last):
        ...
        vggunet.errors.ArgumentError: lr_schedule must be one of ('constant', 'cosine'), got
        'cosin'. Did you mean 'cosine'?
    """
    for option in options:
        if value == option and type(value) is type(option):
            return option
        if (not case_sensitive and isinstance(value, str) and isinstance(option, str)
                and value.lower() == option.lower()):
            return option
    raise error(f"{argument} must be one of {tuple(options)}, got {value!r}."
                f"{did_you_mean(value, options)}")


def check_int(
    value: Any,
    argument: str,
    *,
    minimum: int | None = 1,
    allow_none: bool = False,
    error: type[Exception] = ArgumentError,
) -> int | None:
    """Checks that `value` is an integer (not a bool, not a float) of at least `minimum`.

    Args:
        value: the value to check; numpy integers are accepted.
        argument: the argument's name, for the message.
        minimum: the smallest valid value (1: "a positive integer"; 0: "an integer >= 0";
            None: any integer).
        allow_none: accept None (returned as is).
        error: exception class to raise.

    Returns:
        The value as a Python int (or None).

    Example:
        >>> check_int(8, "batch_size")
        8
        >>> check_int(0, "epochs", minimum=0)
        0
        >>> check_int(2.0, "num_classes")
        Traceback (most recent call last):
        ...
        vggunet.errors.ArgumentError: num_classes must be a positive integer, got 2.0.
    """
    if value is None and allow_none:
        return None
    valid = not isinstance(value, bool) and hasattr(value, "__index__")
    if valid:
        number = int(value)
        valid = minimum is None or number >= minimum
    if not valid:
        if minimum == 1:
            wanted = "a positive integer"
        elif minimum is None:
            wanted = "an integer"
        else:
            wanted = f"an integer >= {minimum}"
        if allow_none:
            wanted += " or None"
        raise error(f"{argument} must be {wanted}, got {value!r}.")
    return number


def check_bool(value: Any, argument: str, *, error: type[Exception] = ArgumentError) -> bool:
    """Checks that `value` is True or False (not 0/1, not a string).

    Args:
        value: the value to check.
        argument: the argument's name, for the message.
        error: exception class to raise.

    Returns:
        The value.

    Example:
        >>> check_bool("yes", "from_logits")
        Traceback (most recent call last):
        ...
        vggunet.errors.ArgumentError: from_logits must be True or False, got 'yes'.
    """
    if not isinstance(value, bool):
        raise error(f"{argument} must be True or False, got {value!r}.")
    return value


def check_number(
    value: Any,
    argument: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
    error: type[Exception] = ArgumentError,
) -> float | None:
    """Checks that `value` is a finite real number inside [low, high] (ends open on request).

    Args:
        value: the value to check (a real number: int, float or a numpy scalar; not a bool
            or a string).
        argument: the argument's name, for the message.
        low, high: bounds (None: unbounded on that side).
        low_open, high_open: exclude that bound.
        allow_none: accept None (returned as is).
        error: exception class to raise.

    Returns:
        The value as a float (or None).

    Example:
        >>> check_number(0.9, "bn_momentum", low=0, high=1, high_open=True)
        0.9
        >>> check_number(1.0, "bn_momentum", low=0, high=1, high_open=True)
        Traceback (most recent call last):
        ...
        vggunet.errors.ArgumentError: bn_momentum must be a number in [0, 1), got 1.0.
    """
    if value is None and allow_none:
        return None
    # Real numbers only: float("0.9") would let a string through.
    number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) \
        else None
    ok = number is not None and math.isfinite(number)
    if ok and low is not None:
        ok = number > low if low_open else number >= low
    if ok and high is not None:
        ok = number < high if high_open else number <= high
    if not ok:
        if low is not None and high is not None:
            wanted = (f"a number in {'(' if low_open else '['}{low:g}, {high:g}"
                      f"{')' if high_open else ']'}")
        elif low is not None:
            wanted = f"a number {'>' if low_open else '>='} {low:g}"
        elif high is not None:
            wanted = f"a number {'<' if high_open else '<='} {high:g}"
        else:
            wanted = "a finite number"
        raise error(f"{argument} must be {wanted}, got {value!r}.")
    return number


def check_min_side(input_shape: Sequence[Any], min_size: float, why: str) -> None:
    """Checks that the known height and width of `input_shape` are at least `min_size`.

    Args:
        input_shape: `(H, W, C)`; None for H or W is not checked.
        min_size: the smallest height and width.
        why: the reason, completing "input height 20 is too small: {why} at least N px".

    Returns:
        None; raises `ArgumentError` naming the side, its value and the minimum.

    Example:
        >>> check_min_side((20, None, 3), 32, "the network pools 5 times and needs")
        Traceback (most recent call last):
        ...
        vggunet.errors.ArgumentError: input height 20 is too small: the network pools 5 times
        and needs at least 32 px (got input_shape=(20, None, 3)).
    """
    for label, dim in (("height", input_shape[0]), ("width", input_shape[1])):
        if dim is not None and int(dim) < min_size:
            raise ArgumentError(f"input {label} {dim} is too small: {why} at least {min_size:g} "
                                f"px (got input_shape={tuple(input_shape)!r}).")
