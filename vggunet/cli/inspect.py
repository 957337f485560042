"""`vggunet inspect`: the layer table of a built or saved model."""

from __future__ import annotations

import argparse
from typing import Any

from vggunet.cli.args import FREEZE_SPEC_HELP, parse_spec
from vggunet.cli.model_args import add_model_args, build_model_from_args
from vggunet.cli.volume_args import add_volume_model_args, build_volume_model, is_volume_run


def _cmd_inspect(args: argparse.Namespace) -> int:
    from vggunet.transfer.freezing import freeze, unfreeze
    from vggunet.transfer.inspect import print_layers

    if args.model:
        from vggunet.saving import load_model

        model = load_model(args.model, compile=False)
    else:
        model = build_volume_model(args) if is_volume_run(args) else build_model_from_args(args)
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
    add_volume_model_args(p)
    p.add_argument("--model", help="inspect a saved .keras model instead of building one")
    p.add_argument("--freeze", default=None,
                   help=f"freeze spec: {FREEZE_SPEC_HELP}")
    p.add_argument("--up-to", default=None, help="freeze the encoder up to this block (block4)")
    p.add_argument("--unfreeze", default=None,
                   help="unfreeze spec (as --freeze), applied after --freeze")
    p.add_argument("--roles", default=None,
                   help="only show these roles, e.g. skip,bottleneck")
    p.set_defaults(func=_cmd_inspect)
