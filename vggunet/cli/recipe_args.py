"""`--recipe` of `vggunet train`/`finetune`: a named recipe fills in the flags left alone.

The recipes live in `vggunet.training.recipes` (the one source, shared with `train(...,
recipe=)`/`finetune(..., recipe=)`); this module maps their keywords to flags. A flag given on
the command line keeps its value, even when that value is the default (`--loss ce+dice` with a
recipe that says `ce`); every other flag a recipe names takes the recipe's value. The flags a
recipe can set record that they were given (`add_recipe_arg` wraps their argparse actions).
Switches a recipe turns on have a `--no-` form to turn them off (`--no-decoder-batchnorm`).
"""

from __future__ import annotations

import argparse
from typing import Any

from vggunet.cli.volume_args import is_volume_run
from vggunet.errors import CliError
from vggunet.training.recipes import RECIPES, get_recipe, recipe_keywords

# Keywords whose flag has another name (train's learning rate is --lr).
_DESTS = {"train": {"learning_rate": "lr"}, "finetune": {}}
# The parsed flags' attribute listing the recipe-settable flags given on the command line.
GIVEN = "recipe_given_flags"
_TRACKED: dict[type, type] = {}


def _tracked(base: type) -> type:
    """`base` (an argparse action class) that also records its dest as given."""
    if base not in _TRACKED:
        def __call__(self: Any, parser: Any, namespace: Any, values: Any,
                     option_string: Any = None) -> None:
            base.__call__(self, parser, namespace, values, option_string)
            setattr(namespace, GIVEN, getattr(namespace, GIVEN, frozenset()) | {self.dest})

        _TRACKED[base] = type(f"Tracked{base.__name__}", (base,), {"__call__": __call__})
    return _TRACKED[base]


def recipe_arg(text: str) -> str:
    """`--recipe`'s type: a recipe name, with a did-you-mean for unknown ones.

    Args:
        text: the flag's value.

    Returns:
        The name.

    Raises:
        argparse.ArgumentTypeError: an unknown name (argparse prints it as the flag's error).
    """
    from vggunet.errors import ArgumentError

    try:
        get_recipe(text)
    except ArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_recipe_arg(parser: argparse.ArgumentParser) -> None:
    """Adds `--recipe NAME` to a training command, after all its other flags.

    Args:
        parser: the `train` or `finetune` parser, changed in place; its flags that a recipe
            can set record when they are given.
    """
    settable = {dest for name in RECIPES for command in _DESTS
                for dest in recipe_flags(name, command)}
    for action in parser._actions:
        if action.dest in settable:
            action.__class__ = _tracked(type(action))
    names = ", ".join(f"{name} ({recipe.summary})" for name, recipe in RECIPES.items())
    parser.add_argument("--recipe", type=recipe_arg, default=None, metavar="NAME",
                        help=f"named bundle of settings: {names}. Flags you leave out "
                             "take the recipe's values; flags you give win "
                             "(README: Fine-tuning guide). Default: none")


def recipe_flags(name: str, command: str) -> dict[str, Any]:
    """The flag values (by argparse dest) recipe `name` gives `command`.

    Args:
        name: a recipe name.
        command: "train" or "finetune".

    Returns:
        dest -> value, as the parsed flags hold them.

    Example:
        >>> recipe_flags("em", "train")["lr"]
        0.0001
    """
    keywords = {**recipe_keywords(name, command), **recipe_keywords(name, "data"),
                **recipe_keywords(name, "model")}
    flags = {}
    for key, value in keywords.items():
        if key == "metrics":
            value = ",".join(value)  # --metrics holds the comma-separated text
        flags[_DESTS[command].get(key, key)] = value
    return flags


def _command_parser(command: str) -> argparse.ArgumentParser:
    from vggunet.cli.app import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def apply_recipe(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Gives every flag not given on the command line the value of `args.recipe`.

    Args:
        args: parsed flags of `train`/`finetune` (from the parser `add_recipe_arg` extended),
            changed in place.
        command: "train" or "finetune".

    Returns:
        dest -> value of the flags the recipe changed (none without `--recipe`).

    Raises:
        CliError: a recipe with a 3D (volume) model, or a flag the command lacks.
    """
    name = getattr(args, "recipe", None)
    if name is None:
        return {}
    if is_volume_run(args):
        raise CliError("--recipe is for 2D encoder U-Nets, not --model-type unet3d")
    given = getattr(args, GIVEN, frozenset())
    applied = {}
    for dest, value in recipe_flags(name, command).items():
        if not hasattr(args, dest):
            raise CliError(f"recipe {name!r} sets {dest!r}, which vggunet {command} lacks")
        if dest not in given and value != getattr(args, dest):
            setattr(args, dest, value)
            applied[dest] = value
    return applied


def describe_recipe(name: str, applied: dict[str, Any]) -> str:
    """The line saying what a recipe set.

    Args:
        name: the recipe.
        applied: `apply_recipe`'s result.

    Returns:
        e.g. "recipe em: --loss ce, --lr 0.0001 (flags given keep their values)".

    Example:
        >>> describe_recipe("em", {"loss": "ce", "decoder_batchnorm": True})
        'recipe em: --loss ce, --decoder-batchnorm (flags given keep their values)'
    """
    parts = [f"--{dest.replace('_', '-')}" + ("" if value is True else f" {value}")
             for dest, value in applied.items()]
    return f"recipe {name}: {', '.join(parts) or 'nothing to set'} (flags given keep their values)"
