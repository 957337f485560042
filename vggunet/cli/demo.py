"""`vggunet demo`: the offline tour on the bundled ISBI sample."""

from __future__ import annotations

import argparse
from typing import Any

from vggunet.cli.args import non_negative_int


def _cmd_demo(args: argparse.Namespace) -> int:
    from vggunet.demo import run_demo

    kwargs: dict[str, Any] = dict(seed=args.seed, crop=args.crop or None)
    if args.phase1_epochs is not None:
        kwargs["phase1_epochs"] = args.phase1_epochs
    if args.phase2_epochs is not None:
        kwargs["phase2_epochs"] = args.phase2_epochs
    run_demo(args.out, **kwargs)
    return 0


def _add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="one-minute offline tour on the bundled ISBI sample",
                       description="Build a VGG16 U-Net, print its layers, fine-tune it in two "
                                   "phases on 6 bundled ISBI tiles, evaluate on 2, and write a "
                                   "training curve, a prediction grid and metrics JSON.")
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="output folder")
    p.add_argument("--phase1-epochs", type=non_negative_int, default=None)
    p.add_argument("--phase2-epochs", type=non_negative_int, default=None)
    p.add_argument("--crop", type=non_negative_int, default=64,
                   help="training crop side (0 = full 128x128 tiles)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)


