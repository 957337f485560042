"""`vggunet evaluate`: scores of a saved model on labelled data."""

from __future__ import annotations

import argparse
from typing import Any

from vggunet.cli.args import parse_class_names, positive_int
from vggunet.cli.data_args import _dataset_kwargs, _pairs_of, add_data_args
from vggunet.cli.volume_args import add_volume_data_args, add_window_args
from vggunet.cli.volume_commands import (
    add_volume_output_args, evaluate_volumes_command, is_volume_model,
)
from vggunet.console import resolve_say
from vggunet.errors import CliError


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from vggunet.data import make_dataset
    from vggunet.evaluate import evaluate
    from vggunet.fileio import check_destination
    from vggunet.saving import load_model

    # Before any scoring: a destination that cannot be written would waste the evaluation.
    for flag, path in (("--out", args.out), ("--confusion", args.confusion)):
        if path:
            check_destination(path, what=f"{flag} ", error=CliError)
    model = load_model(args.model, compile=False)
    if is_volume_model(model):
        if args.scales is not None or args.confusion:
            raise CliError("--scales and --confusion of evaluate are for 2D models")
        return evaluate_volumes_command(args, model)
    if args.slices:
        raise CliError("--slices of evaluate is for volume models")
    split = args.split
    if args.data and not (args.images or args.masks or args.pairs):
        from vggunet.data import discover_layout

        layout = discover_layout(args.data)
        if split == "auto":
            split = next((s for s in ("test", "val") if s in layout.splits), "all")
        elif split != "all" and split not in layout.splits and layout.kind == "folders":
            # Training may take a flat folder as any split; scoring it as "test" would
            # silently include the images a model was trained on.
            raise CliError(f"--split {split}: {layout.root} has no {split} split (a two-folder "
                           f"layout); give --split all to score all its images")
    pairs = _pairs_of(args.data, args.images, args.masks, split, pairs=args.pairs)
    if pairs is None:
        raise CliError("no data: give --data DIR, --images DIR --masks DIR or --pairs FILE")
    if args.num_classes is None:
        args.num_classes = max(2, int(model.output_shape[-1]))
    if args.channels is None:
        args.channels = int(model.input_shape[-1] or 3)
    dataset = make_dataset(pairs=pairs, batch_size=args.batch_size if args.size else 1,
                           shuffle=False, **_dataset_kwargs(args))
    names = parse_class_names(args.class_names)
    resolve_say(not args.quiet)(f"evaluating {model.name} on {len(pairs)} image(s)")
    # The scores table is the command's result: printed (say=print) even with --quiet.
    result = evaluate(model, dataset, num_classes=args.num_classes,
                      ignore_index=args.ignore_index, class_names=names, out_json=args.out,
                      verbose=not args.quiet, say=resolve_say(), tta=args.tta,
                      scales=args.scales or (1.0,))
    if args.confusion:
        from vggunet.plots_confusion import plot_confusion_matrix

        path = plot_confusion_matrix(result["confusion_matrix"], args.confusion,
                                     class_names=result["class_names"])
        resolve_say()(f"Wrote {path}")
    return 0


def parse_scales(text: str) -> tuple[float, ...]:
    """Parses `--scales`: comma-separated positive numbers (image scales).

    Args:
        text: e.g. `"0.75,1,1.25"`.

    Returns:
        The scales.

    Example:
        >>> parse_scales("0.75,1,1.25")
        (0.75, 1.0, 1.25)
    """
    from vggunet.errors import ArgumentError
    from vggunet.inference.multiscale import check_scales

    values = []
    for part in text.split(","):
        try:
            values.append(float(part))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected numbers like 0.75,1,1.25, got {part.strip()!r} in {text!r}") from None
    try:
        return check_scales(values, "--scales")
    except ArgumentError as error:
        raise argparse.ArgumentTypeError(f"{error} (in {text!r})") from None


def _add_evaluate(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="score a saved model on labelled data",
                       description="Per-class IoU and Dice, mean IoU, pixel accuracy and error; "
                                   "optionally written as JSON.")
    p.add_argument("--model", required=True, help="a saved .keras model")
    add_data_args(p, validation=False, augmentation=False)
    p.add_argument("--split", default="auto",
                   help="split of a --data root: train, val, test, all (default: test, "
                        "else val, else all)")
    p.add_argument("--num-classes", type=positive_int, default=None,
                   help="default: the model's output channels")
    p.add_argument("--channels", type=positive_int, default=None,
                   help="default: the model's input channels (counts other than 1 and 3 need "
                        "files with that many: .npy (H, W, C) arrays, LA = 2, RGBA = 4)")
    p.add_argument("--class-names", default=None, metavar="a,b,...|FILE",
                   help="one per class: comma-separated, or a text file of 'index name' (or "
                        "'name') lines such as classes.txt")
    p.add_argument("--out", default=None, metavar="metrics.json", help="write the scores here")
    p.add_argument("--scales", type=parse_scales, default=None, metavar="S,S,...",
                   help="2D models: multi-scale inference, e.g. 0.75,1,1.25 (predict each image "
                        "resized by every scale and average the probabilities; default 1)")
    p.add_argument("--confusion", default=None, metavar="PNG",
                   help="2D models: write the row-normalised confusion matrix here")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (the scores table is still printed)")
    add_window_args(p)
    add_volume_data_args(p, training=False)
    add_volume_output_args(p, evaluate=True)
    p.set_defaults(func=_cmd_evaluate)
