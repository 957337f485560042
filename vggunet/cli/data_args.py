"""Flags that locate segmentation data, and the tf.data pipelines they describe."""

from __future__ import annotations

import argparse
from typing import Any

from vggunet.choices import MASK_FORMATS, SAMPLE_WEIGHTS
from vggunet.cli.args import (
    fraction, non_negative_int, parse_palette, parse_size, positive_float, positive_int,
)
from vggunet.errors import CliError
from vggunet.training.settings import CompileSettings, DataSettings

_DEFAULTS = DataSettings()


def add_data_args(parser: argparse.ArgumentParser, *, validation: bool = True,
                  augmentation: bool = True) -> None:
    """Flags that locate segmentation data and describe its masks.

    Args:
        parser: the subcommand's parser, changed in place.
        validation: add the `--val-*` flags.
        augmentation: add the augmentation and crop flags.
    """
    g = parser.add_argument_group("data")
    g.add_argument("--data", metavar="DIR",
                   help="data-set root with a known layout (images/+masks/, image/+label/, "
                        "train/ val/ test/ splits, or CamVid train/+trainannot/)")
    g.add_argument("--images", metavar="DIR", help="image folder (with --masks)")
    g.add_argument("--masks", metavar="DIR", help="mask folder (with --images)")
    g.add_argument("--pairs", metavar="FILE",
                   help="list file of 'image mask' relative paths, one pair per line "
                        "(relative to the file's folder; '..' and absolute paths refused)")
    if validation:
        g.add_argument("--val-pairs", metavar="FILE", help="validation list file (as --pairs)")
        g.add_argument("--val-data", metavar="DIR", help="validation data-set root")
        g.add_argument("--val-images", metavar="DIR", help="validation image folder")
        g.add_argument("--val-masks", metavar="DIR", help="validation mask folder")
        g.add_argument("--val-split", type=fraction, default=_DEFAULTS.val_split, metavar="F",
                       help="hold out this fraction of the training pairs for validation")
    # Defaults come from DataSettings, the pipeline settings a run records in state.json.
    g.add_argument("--mask-format", default=_DEFAULTS.mask_format,
                   choices=MASK_FORMATS,
                   help="index: pixel = class; binary: 0/255; palette: RGB colours "
                        "(--palette); channel: one channel holds the class (--mask-channel)")
    g.add_argument("--palette", default=None,
                   help="for --mask-format palette: JSON list of [r,g,b] (position = class) "
                        "or a JSON file")
    g.add_argument("--mask-channel", type=non_negative_int, default=_DEFAULTS.mask_channel,
                   help="for --mask-format channel: 0 = red")
    g.add_argument("--ignore-index", type=int, default=CompileSettings().ignore_index,
                   metavar="V",
                   help="mask value that is not scored or trained on (e.g. 255)")
    g.add_argument("--size", type=parse_size, default=_DEFAULTS.size, metavar="HxW",
                   help="resize every image and mask to HxW")
    g.add_argument("--batch-size", type=positive_int, default=_DEFAULTS.batch_size,
                   help=f"images per batch (default {_DEFAULTS.batch_size})")
    if augmentation:
        g.add_argument("--crop", type=parse_size, default=_DEFAULTS.crop, metavar="HxW",
                       help="random training crops of HxW")
        g.add_argument("--augment", default=_DEFAULTS.augment, metavar="SPEC",
                       help="training augmentations, e.g. flip,rot90,elastic "
                            "(also rotate=DEG, brightness=B, contrast=C; for photos "
                            "scale=MIN:MAX (needs --ignore-index), saturation=S, hue=H, "
                            "jitter)")
        g.add_argument("--cache", action="store_true", default=_DEFAULTS.cache,
                       help="keep decoded images in memory after the first epoch")
        g.add_argument("--sample-weights", default=_DEFAULTS.sample_weights,
                       choices=SAMPLE_WEIGHTS,
                       help="per-pixel loss weights: class weights by median or inverse "
                            "frequency, or border = U-Net separation weights (with "
                            "median-frequency class weights)")
        g.add_argument("--border-w0", type=positive_float, default=_DEFAULTS.border_w0,
                       metavar="W0",
                       help="for --sample-weights border: weight of the separation term")
        g.add_argument("--border-sigma", type=positive_float, default=_DEFAULTS.border_sigma,
                       metavar="PX",
                       help="for --sample-weights border: its width in pixels")
        g.add_argument("--max-weight", type=positive_float, default=_DEFAULTS.max_weight,
                       metavar="W",
                       help="with --sample-weights: cap every class weight at W, so rare "
                            "classes are not over-predicted (default: no cap)")
    g.add_argument("--seed", type=int, default=_DEFAULTS.seed,
                   help="seed for data order and augmentation")


def _pairs_of(data: str | None, images: str | None, masks: str | None, split: str,
              prefix: str = "", pairs: str | None = None) -> list | None:
    """Pairs from `--<prefix>data`, `--<prefix>images` + `--<prefix>masks` or
    `--<prefix>pairs`; None if none is set."""
    from vggunet.data import find_pairs, load_split, read_pairs_list

    if sum(bool(v) for v in (data, images or masks, pairs)) > 1:
        raise CliError(f"give one of --{prefix}data DIR, --{prefix}images DIR --{prefix}masks "
                       f"DIR or --{prefix}pairs FILE")
    if pairs:
        return read_pairs_list(pairs)
    if data:
        return load_split(data, split)
    if images or masks:
        if not (images and masks):
            raise CliError(f"--{prefix}images and --{prefix}masks go together")
        return find_pairs(images, masks)
    return None


def _has_split(root: str, split: str) -> bool:
    from vggunet.data import discover_layout

    return split in discover_layout(root).splits


def resolve_pairs(args: argparse.Namespace) -> tuple[list, list | None]:
    """The (train, validation) pairs the data flags select.

    With `--data` on a split layout the `train` split trains and the `val` split validates
    (unless `--val-*` flags say otherwise); `--val-split F` holds out a seeded random fraction.

    Args:
        args: parsed flags from `add_data_args`.

    Returns:
        `(train_pairs, val_pairs_or_None)`.
    """
    split = "all"
    if args.data and _has_split(args.data, "train"):
        split = "train"
    train = _pairs_of(args.data, args.images, args.masks, split, pairs=args.pairs)
    if train is None:
        raise CliError("no training data: give --data DIR, --images DIR --masks DIR or "
                       "--pairs FILE")
    val = None
    if getattr(args, "val_data", None) is not None or getattr(args, "val_images", None) or \
            getattr(args, "val_masks", None) or getattr(args, "val_pairs", None):
        val_root = args.val_data
        val_split = "val" if val_root and _has_split(val_root, "val") else "all"
        val = _pairs_of(val_root, args.val_images, args.val_masks, val_split, "val-",
                        pairs=args.val_pairs)
    elif split == "train" and _has_split(args.data, "val"):
        val = _pairs_of(args.data, None, None, "val")
    if getattr(args, "val_split", None):
        if val is not None:
            raise CliError("--val-split cannot be combined with separate validation data "
                           "(--val-* flags, or the val/ split of --data)")
        train, val = hold_out(train, args.val_split, args.seed, "pairs")
    return train, val


def hold_out(items: list, fraction: float, seed: int | None, what: str) -> tuple[list, list]:
    """Splits `items` into (kept, held out): a seeded random `fraction` (at least one) held out.

    Args:
        items: training pairs or volume cases.
        fraction: `--val-split`.
        seed: `--seed` (None: 0, so the split is the same every time).
        what: the items' name for the error message.

    Returns:
        `(train, val)`, each in the original order.

    Example:
        >>> hold_out(list("abcdefghij"), 0.2, 0, "pairs")[1]
        ['h', 'i']
    """
    import random

    order = list(range(len(items)))
    random.Random(seed if seed is not None else 0).shuffle(order)
    n_val = max(1, round(len(items) * fraction))
    if n_val >= len(items):
        raise CliError(f"--val-split {fraction} leaves no training data ({len(items)} {what})")
    held = set(order[:n_val])
    return ([x for i, x in enumerate(items) if i not in held],
            [x for i, x in enumerate(items) if i in held])


def _dataset_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return dict(
        num_classes=args.num_classes, mask_format=args.mask_format,
        palette=parse_palette(args.palette), mask_channel=args.mask_channel,
        ignore_index=args.ignore_index, channels=args.channels, size=args.size,
    )


def data_settings(args: argparse.Namespace) -> DataSettings:
    """The pipeline settings the data flags ask for (flags a command lacks keep their defaults).

    Args:
        args: parsed flags from `add_data_args`.

    Returns:
        The `DataSettings`.
    """
    import dataclasses

    return DataSettings(**{f.name: getattr(args, f.name)
                           for f in dataclasses.fields(DataSettings) if hasattr(args, f.name)})


def make_datasets(args: argparse.Namespace) -> tuple[Any, Any, int, int]:
    """tf.data pipelines for training and validation from the data flags.

    Args:
        args: parsed flags from `add_data_args` (and the training flags).

    Returns:
        `(train_ds, val_ds_or_None, n_train, n_val)`.
    """
    from vggunet.data import make_dataset

    train_pairs, val_pairs = resolve_pairs(args)
    common = _dataset_kwargs(args)
    settings = data_settings(args)
    repeat = bool(getattr(args, "steps_per_epoch", None))
    train_ds = make_dataset(
        pairs=train_pairs, crop=settings.crop, augment=settings.augment,
        batch_size=settings.batch_size, shuffle=True, seed=settings.seed, repeat=repeat,
        cache=settings.cache, sample_weights=settings.sample_weights,
        border_w0=settings.border_w0, border_sigma=settings.border_sigma,
        max_weight=settings.max_weight, **common,
    )
    val_ds = None
    if val_pairs:
        # Full-size validation images may differ in size: batch them one by one unless resized.
        val_ds = make_dataset(
            pairs=val_pairs, batch_size=settings.batch_size if settings.size else 1,
            shuffle=False, cache=settings.cache, **common,
        )
    return train_ds, val_ds, len(train_pairs), len(val_pairs or [])
