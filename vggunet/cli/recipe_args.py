"""`--recipe` of `vggunet train`/`finetune`: a named recipe fills in the flags left alone.

The recipes live in `vggunet.training.recipes` (the one source, shared with `train(...,
recipe=)`/`finetune(..., recipe=)`); this module maps their keywords to flags. A flag left at its
default takes the recipe's value; a flag given with another value keeps it. argparse cannot tell
a flag given with exactly its default value from one left out, so such a flag takes the
recipe's value too. Store-true flags the recipe switches on (`--decoder-batchnorm`,
`--skip-batchnorm`) cannot be switched off under it: build the model in Python for that.
"""

from __future__ import annotations

import argparse
from typing import Any

from vggunet.cli.volume_args import is_volume_run
from vggunet.errors import CliError
from vggunet.training.recipes import RECIPES, get_recipe, recipe_keywords

# Keywords whose flag has another name (train's learning rate is --lr).
_DESTS = {"train": {"learning_rate": "lr"}, "finetune": {}}


def recipe_arg(text: str) -> str:
    """`--recipe`'s type: a recipe name, with a did-you-mean for unknown ones.

    Args:
        text: the flag's value.

    Returns:
        The name.

    Example:
        >>> recipe_arg("photos")
        'photos'
    """
    from vggunet.errors import ArgumentError

    try:
        get_recipe(text)
    except ArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_recipe_arg(parser: argparse.ArgumentParser) -> None:
    """Adds `--recipe NAME` to a training command.

    Args:
        parser: the `train` or `finetune` parser, changed in place.
    """
    names = ", ".join(f"{name} ({recipe.summary})" for name, recipe in RECIPES.items())
    parser.add_argument("--recipe", type=recipe_arg, default=None, metavar="NAME",
                        help=f"named bundle of settings: {names}. Flags left at their "
                             "defaults take the recipe's values; flags you give win "
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


def apply_recipe(args: argparse.Namespace, command: str,
                 parser: argparse.ArgumentParser | None = None) -> dict[str, Any]:
    """Gives every flag left at its default the value of `args.recipe` (no recipe: nothing).

    Args:
        args: parsed flags of `train`/`finetune`, changed in place.
        command: "train" or "finetune".
        parser: the command's parser, whose defaults tell which flags were left alone
            (None: built here).

    Returns:
        dest -> value of the flags the recipe set.

    Raises:
        CliError: a recipe with a 3D (volume) model, or a flag the command lacks.
    """
    name = getattr(args, "recipe", None)
    if name is None:
        return {}
    if is_volume_run(args):
        raise CliError("--recipe is for 2D encoder U-Nets, not --model-type unet3d")
    parser = parser or _command_parser(command)
    applied = {}
    for dest, value in recipe_flags(name, command).items():
        if not hasattr(args, dest):
            raise CliError(f"recipe {name!r} sets {dest!r}, which vggunet {command} lacks")
        if getattr(args, dest) == parser.get_default(dest) and value != getattr(args, dest):
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
