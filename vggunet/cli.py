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


def add_model_args(parser: argparse.ArgumentParser, weights_default: str = "none") -> None:
    """Flags shared by commands that build an encoder U-Net.

    Args:
        parser: the subcommand's parser, changed in place.
        weights_default: the `--weights` default (`"none"` or `"imagenet"`).
    """
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
    parser.add_argument("--skip-batchnorm", action="store_true",
                        help="BatchNorm on each skip tensor and the bottleneck input "
                             "(standardises pretrained features with large scales)")
    parser.add_argument("--bn-momentum", type=_bn_momentum_arg, default=None, metavar="M",
                        help="momentum of those decoder-side BatchNorms (default 0.9)")
    parser.add_argument("--precision", default="auto",
                        choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"))
    parser.add_argument("--decoder-filters", type=decoder_filters_arg, default=None,
                        metavar="N,N,...",
                        help="channels per decoder stage, deepest first "
                             "(default 512,256,128,64,64)")
    parser.add_argument("--bottleneck-filters", type=positive_int, default=None, metavar="N",
                        help="channels of the bottleneck convolutions (default 1024)")


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


def build_model_from_args(args: argparse.Namespace, **overrides: Any) -> Any:
    """Builds the encoder U-Net the model flags describe.

    Args:
        args: parsed flags from `add_model_args`.
        **overrides: extra `build_vgg_unet` keywords (e.g. `freeze=`).

    Returns:
        The uncompiled model.
    """
    from vggunet.unet import build_vgg_unet
    from vggunet.weights import ImagenetWeightsUnavailable

    height, width = args.input_size if args.input_size else (None, None)
    kwargs: dict[str, Any] = {}
    if getattr(args, "decoder_filters", None):
        kwargs["decoder_filters"] = args.decoder_filters
    if getattr(args, "bottleneck_filters", None):
        kwargs["bottleneck_filters"] = args.bottleneck_filters
    if getattr(args, "skip_batchnorm", False):
        kwargs["skip_batchnorm"] = True
    if getattr(args, "bn_momentum", None) is not None:
        kwargs["bn_momentum"] = args.bn_momentum
    kwargs.update(overrides)
    try:
        return build_vgg_unet(
            args.backbone, input_shape=(height, width, args.channels),
            num_classes=args.num_classes, weights=args.weights, decoder=args.decoder,
            decoder_batchnorm=args.decoder_batchnorm, precision=args.precision, **kwargs,
        )
    except ImagenetWeightsUnavailable as exc:
        raise ImagenetWeightsUnavailable(
            f"{exc} On the command line: --weights none (random encoder) or "
            f"--weights /path/to/weights.h5."
        ) from None


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


# --------------------------------------------------------------------------- shared flag types


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


# --------------------------------------------------------------------------- data flags


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
        g.add_argument("--val-split", type=fraction, default=None, metavar="F",
                       help="hold out this fraction of the training pairs for validation")
    g.add_argument("--mask-format", default="index",
                   choices=("index", "binary", "palette", "channel"),
                   help="index: pixel = class; binary: 0/255; palette: RGB colours "
                        "(--palette); channel: one channel holds the class (--mask-channel)")
    g.add_argument("--palette", default=None,
                   help="for --mask-format palette: JSON list of [r,g,b] (position = class) "
                        "or a JSON file")
    g.add_argument("--mask-channel", type=non_negative_int, default=0,
                   help="for --mask-format channel: 0 = red")
    g.add_argument("--ignore-index", type=int, default=None, metavar="V",
                   help="mask value that is not scored or trained on (e.g. 255)")
    g.add_argument("--size", type=parse_size, default=None, metavar="HxW",
                   help="resize every image and mask to HxW")
    g.add_argument("--batch-size", type=positive_int, default=4)
    if augmentation:
        g.add_argument("--crop", type=parse_size, default=None, metavar="HxW",
                       help="random training crops of HxW")
        g.add_argument("--augment", default=None, metavar="SPEC",
                       help="training augmentations, e.g. flip,rot90,elastic "
                            "(also rotate=DEG, brightness=B, contrast=C)")
        g.add_argument("--cache", action="store_true",
                       help="keep decoded images in memory after the first epoch")
        g.add_argument("--sample-weights", default=None,
                       choices=("median_frequency", "inverse_frequency", "border"),
                       help="per-pixel loss weights: class weights by median or inverse "
                            "frequency, or border = U-Net separation weights (with "
                            "median-frequency class weights)")
        g.add_argument("--border-w0", type=positive_float, default=10.0, metavar="W0",
                       help="for --sample-weights border: weight of the separation term")
        g.add_argument("--border-sigma", type=positive_float, default=5.0, metavar="PX",
                       help="for --sample-weights border: its width in pixels")
    g.add_argument("--seed", type=int, default=None, help="seed for data order and augmentation")


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
    import random

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
        order = list(range(len(train)))
        random.Random(args.seed if args.seed is not None else 0).shuffle(order)
        n_val = max(1, round(len(train) * args.val_split))
        if n_val >= len(train):
            raise CliError(f"--val-split {args.val_split} leaves no training data "
                           f"({len(train)} pairs)")
        held = set(order[:n_val])
        val = [p for i, p in enumerate(train) if i in held]
        train = [p for i, p in enumerate(train) if i not in held]
    return train, val


def _dataset_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return dict(
        num_classes=args.num_classes, mask_format=args.mask_format,
        palette=parse_palette(args.palette), mask_channel=args.mask_channel,
        ignore_index=args.ignore_index, channels=args.channels, size=args.size,
    )


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
    repeat = bool(getattr(args, "steps_per_epoch", None))
    train_ds = make_dataset(
        pairs=train_pairs, crop=args.crop, augment=args.augment, batch_size=args.batch_size,
        shuffle=True, seed=args.seed, repeat=repeat, cache=args.cache,
        sample_weights=getattr(args, "sample_weights", None),
        border_w0=getattr(args, "border_w0", 10.0),
        border_sigma=getattr(args, "border_sigma", 5.0), **common,
    )
    val_ds = None
    if val_pairs:
        # Full-size validation images may differ in size: batch them one by one unless resized.
        val_ds = make_dataset(
            pairs=val_pairs, batch_size=args.batch_size if args.size else 1, shuffle=False,
            cache=args.cache, **common,
        )
    return train_ds, val_ds, len(train_pairs), len(val_pairs or [])


# --------------------------------------------------------------------------- train / finetune


def _add_training_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--out", required=True, metavar="DIR",
                   help="run folder: checkpoints/{last,best}.keras, log.csv, state.json")
    g.add_argument("--loss", default="ce+dice",
                   help="ce, dice, jaccard, focal or ce+dice (default ce+dice)")
    g.add_argument("--metrics", default="miou,dice,accuracy",
                   help="comma-separated metrics (default miou,dice,accuracy)")
    g.add_argument("--monitor", default=None,
                   help="metric that picks the best checkpoint (default: the trainer's, "
                        "val_loss with validation data)")
    g.add_argument("--early-stopping", type=non_negative_int, default=0, metavar="N",
                   help="stop after N epochs without improvement (0 = off)")
    g.add_argument("--steps-per-epoch", type=positive_int, default=None, metavar="N",
                   help="batches per epoch (the training data repeats)")
    g.add_argument("--validation-steps", type=positive_int, default=None, metavar="N")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")
    g.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard logs to OUT/tensorboard")
    g.add_argument("--recalibrate-bn", type=non_negative_int, default=0, metavar="N",
                   help="re-estimate the decoder's BatchNorm statistics on N training batches "
                        "before each validation and checkpoint (0 = off)")
    g.add_argument("--lr-schedule", default="constant", choices=("constant", "cosine"),
                   help="learning rate over the (last) phase: constant, or cosine from the "
                        "phase's rate towards 0, set per epoch (default constant)")
    g.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    g.add_argument("--strategy", default="none", choices=("none", "mirrored", "multiworker"),
                   help="distribution: mirrored = all GPUs of this machine, multiworker = the "
                        "machines in TF_CONFIG (run the same command on each); --batch-size is "
                        "then the global batch, split across replicas (default none)")


def _resolve_cli_strategy(args: argparse.Namespace) -> Any:
    """Resolves `--strategy` before TensorFlow runs anything (multi-worker must come first).

    Args:
        args: parsed flags of `train`/`finetune`.

    Returns:
        The `tf.distribute.Strategy`, or None for `--strategy none`.
    """
    from vggunet.distribute import is_chief, num_replicas, resolve_strategy, strategy_name

    strategy = resolve_strategy(getattr(args, "strategy", "none"))
    if strategy is not None:
        replicas = num_replicas(strategy)
        role = "" if is_chief(strategy) else "; not the chief: writes nothing to --out"
        print(f"strategy: {strategy_name(strategy)}, {replicas} replica(s); global batch "
              f"{args.batch_size} ({args.batch_size / replicas:g} per replica){role}")
    return strategy


def _training_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    kwargs: dict[str, Any] = dict(
        out_dir=args.out, loss=args.loss, metrics=metrics, ignore_index=args.ignore_index,
        early_stopping=args.early_stopping or None, steps_per_epoch=args.steps_per_epoch,
        validation_steps=args.validation_steps, resume=args.resume,
        tensorboard=args.tensorboard, verbose=0 if args.quiet else 2,
        recalibrate_bn=args.recalibrate_bn or None, lr_schedule=args.lr_schedule,
    )
    if args.monitor:
        kwargs["monitor"] = args.monitor
    return kwargs


def _report_training(result: Any, out: str) -> None:
    def get(name: str, default: Any = None) -> Any:
        return getattr(result, name, default)

    best = get("best_value")
    best_text = f"{float(best):.4f}" if isinstance(best, (int, float)) else str(best)
    print(f"epochs completed: {get('epochs_completed')}"
          + (f" (stopped: {get('stopped_reason')})" if get("stopped_reason") else "")
          + (f" in {get('wall_time_s'):.1f} s" if get("wall_time_s") is not None else ""))
    print(f"best {get('monitor')}: {best_text}")
    print(f"best checkpoint: {get('best_checkpoint')}")
    print(f"last checkpoint: {get('last_checkpoint')}")
    log = os.path.join(out, "log.csv")
    # A non-chief worker of a multi-worker run writes nothing to --out.
    print(f"log: {log}" if os.path.isfile(log) else "log: none written here")


def _build_for_training(args: argparse.Namespace) -> Any:
    from vggunet.saving import load_model

    if getattr(args, "model", None):
        return load_model(args.model, compile=False)
    return build_model_from_args(args)


def _cmd_train(args: argparse.Namespace) -> int:
    from vggunet.training import train

    strategy = _resolve_cli_strategy(args)
    train_ds, val_ds, n_train, n_val = make_datasets(args)
    print(f"data: {n_train} training pairs, {n_val} validation pairs")

    def model_fn() -> Any:
        # Called by train() inside the strategy's scope, so the variables are mirrored.
        model = _build_for_training(args)
        if args.freeze is not None:
            from vggunet.freezing import freeze

            print(freeze(model, parse_spec(args.freeze)))
        return model

    result = train(model_fn, train_ds, val_ds, epochs=args.epochs, learning_rate=args.lr,
                   strategy=strategy, **_training_kwargs(args))
    _report_training(result, args.out)
    return 0


def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train a U-Net on a segmentation data set",
                       description="Build a U-Net (or load --model), train it on the data and "
                                   "write checkpoints, log.csv and state.json to --out.")
    add_model_args(p, weights_default="imagenet")
    add_data_args(p)
    _add_training_args(p)
    p.add_argument("--model", default=None, help="start from this saved .keras model instead")
    p.add_argument("--epochs", type=positive_int, default=10)
    p.add_argument("--lr", type=positive_float, default=1e-3, help="learning rate")
    p.add_argument("--freeze", default=None,
                   help="freeze spec while training: N, encoder, or prefixes like block1,block2")
    p.set_defaults(func=_cmd_train)


def _cmd_finetune(args: argparse.Namespace) -> int:
    from vggunet.training import finetune

    strategy = _resolve_cli_strategy(args)
    train_ds, val_ds, n_train, n_val = make_datasets(args)
    print(f"data: {n_train} training pairs, {n_val} validation pairs")
    result = finetune(
        lambda: _build_for_training(args), train_ds, val_ds, phase1_epochs=args.phase1_epochs,
        phase2_epochs=args.phase2_epochs, phase1_lr=args.phase1_lr, phase2_lr=args.phase2_lr,
        unfreeze=parse_spec(args.unfreeze), train_bn=args.train_bn, strategy=strategy,
        **_training_kwargs(args),
    )
    _report_training(result, args.out)
    return 0


def _add_finetune(sub: Any) -> None:
    p = sub.add_parser("finetune", help="two-phase transfer learning (frozen, then unfrozen)",
                       description="Phase 1 trains the decoder with the encoder frozen; phase 2 "
                                   "unfreezes the top encoder blocks at a lower learning rate.")
    add_model_args(p, weights_default="imagenet")
    add_data_args(p)
    _add_training_args(p)
    p.add_argument("--model", default=None, help="start from this saved .keras model instead")
    p.add_argument("--phase1-epochs", type=non_negative_int, default=5)
    p.add_argument("--phase2-epochs", type=non_negative_int, default=10)
    p.add_argument("--phase1-lr", type=positive_float, default=1e-3)
    p.add_argument("--phase2-lr", type=positive_float, default=1e-4)
    p.add_argument("--unfreeze", default="top2",
                   help="what phase 2 unfreezes: topN (top N encoder blocks), encoder/all, "
                        "or prefixes like block4,block5 (default top2)")
    p.add_argument("--train-bn", action="store_true",
                   help="let encoder BatchNorm layers train in phase 2")
    p.set_defaults(func=_cmd_finetune)


# --------------------------------------------------------------------------- predict


def _predict_file(model: Any, source: Any, out: Any, args: argparse.Namespace,
                  overlap: int) -> list:
    import numpy as np

    from vggunet import predict as P

    image = P.read_image(source, args.channels)
    if args.tile:
        proba = np.asarray(P.predict_tiled(model, image, tile=args.tile, overlap=overlap,
                                           tta=args.tta, mirror_pad=args.mirror_pad))
    else:
        proba = np.asarray(P.predict_proba(model, image, tta=args.tta,
                                           mirror_pad=args.mirror_pad))
    mask = (proba[..., 0] > 0.5 if proba.shape[-1] == 1 else np.argmax(proba, -1))
    mask = mask.astype(np.int32)
    written = [P.save_mask_png(mask, out / f"{source.stem}.png")]
    if not args.no_overlay:
        written.append(P.save_overlay(image, mask, out / f"{source.stem}_overlay.png"))
    return written


def _cmd_predict(args: argparse.Namespace) -> int:
    import inspect
    from pathlib import Path

    from vggunet import predict as P
    from vggunet.saving import load_model

    source = Path(args.input)
    if not source.exists():
        raise FileNotFoundError(f"--input {source} does not exist")
    if args.overlap is not None and args.tile is None:
        raise CliError("--overlap needs --tile")
    overlap = args.overlap if args.overlap is not None else (
        min(64, args.tile // 4) if args.tile else 0)
    if args.tile is not None and overlap >= args.tile:
        raise CliError(f"--overlap {overlap} must be smaller than --tile {args.tile}")
    if args.channels not in (1, 3):
        raise CliError(f"--channels must be 1 or 3, got {args.channels}")
    out = Path(args.out)
    if source.is_file() and out.resolve() == source.parent.resolve():
        raise CliError("--out must not be the folder of the input image (it would be "
                       "overwritten)")
    model = load_model(args.model, compile=False)
    folder_takes_overlap = "overlap" in inspect.signature(P.predict_folder).parameters
    if source.is_dir() and (args.overlap is None or folder_takes_overlap):
        kwargs: dict[str, Any] = dict(tile=args.tile, tta=args.tta, overlay=not args.no_overlay,
                                      channels=args.channels, mirror_pad=args.mirror_pad)
        if args.overlap is not None:
            kwargs["overlap"] = overlap
        written = P.predict_folder(model, source, out, **kwargs)
    else:
        files = [source] if source.is_file() else sorted(
            p for p in source.iterdir() if p.is_file() and p.suffix.lower() in P.IMAGE_SUFFIXES)
        out.mkdir(parents=True, exist_ok=True)
        written = [path for f in files for path in _predict_file(model, f, out, args, overlap)]
    for path in written:
        print(path)
    print(f"wrote {len(written)} file(s) to {out}")
    return 0


def _add_predict(sub: Any) -> None:
    p = sub.add_parser("predict", help="segment images with a saved model",
                       description="Write a class-index mask PNG (and an overlay) per image.")
    p.add_argument("--model", required=True, help="a saved .keras model")
    p.add_argument("--input", required=True, metavar="DIR_OR_FILE", help="an image or a folder")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--tile", type=positive_int, default=None, metavar="N",
                   help="predict in NxN tiles (large images)")
    p.add_argument("--overlap", type=non_negative_int, default=None, metavar="N",
                   help="tile overlap in pixels (default min(64, tile/4))")
    p.add_argument("--tta", action="store_true", help="test-time augmentation (flips)")
    p.add_argument("--mirror-pad", type=non_negative_int, default=0, metavar="N",
                   help="add N mirrored pixels of context on each side before predicting "
                        "(the U-Net paper's border handling; default 0)")
    p.add_argument("--no-overlay", action="store_true", help="masks only, no overlay PNGs")
    p.add_argument("--channels", type=positive_int, default=3,
                   help="channels the model expects (default 3)")
    p.set_defaults(func=_cmd_predict)


# --------------------------------------------------------------------------- evaluate


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from vggunet.data import make_dataset
    from vggunet.evaluate import evaluate
    from vggunet.saving import load_model

    split = args.split
    if split == "auto" and args.data and not (args.images or args.masks or args.pairs):
        from vggunet.data import discover_layout

        splits = discover_layout(args.data).splits
        split = next((s for s in ("test", "val") if s in splits), "all")
    pairs = _pairs_of(args.data, args.images, args.masks, split, pairs=args.pairs)
    if pairs is None:
        raise CliError("no data: give --data DIR, --images DIR --masks DIR or --pairs FILE")
    model = load_model(args.model, compile=False)
    if args.num_classes is None:
        args.num_classes = max(2, int(model.output_shape[-1]))
    if args.channels is None:
        args.channels = int(model.input_shape[-1] or 3)
    dataset = make_dataset(pairs=pairs, batch_size=args.batch_size if args.size else 1,
                           shuffle=False, **_dataset_kwargs(args))
    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    print(f"evaluating {model.name} on {len(pairs)} image(s)")
    evaluate(model, dataset, num_classes=args.num_classes, ignore_index=args.ignore_index,
             class_names=names, out_json=args.out, verbose=True)
    return 0


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
                   help="default: the model's input channels")
    p.add_argument("--class-names", default=None, help="comma-separated, one per class")
    p.add_argument("--out", default=None, metavar="metrics.json", help="write the scores here")
    p.set_defaults(func=_cmd_evaluate)


# --------------------------------------------------------------------------- export

# Kept here, not imported from vggunet.export, so `vggunet --help` does not import Keras.
EXPORT_FORMATS = ("keras", "savedmodel", "tflite", "onnx")


def _cmd_export(args: argparse.Namespace) -> int:
    from vggunet.export import export_model

    out = export_model(args.model, args.out, args.format, input_size=args.input_size,
                       keep_precision=args.keep_precision, keep_optimizer=args.keep_optimizer,
                       opset=args.opset)
    files = [out] if out.is_file() else [f for f in out.rglob("*") if f.is_file()]
    size_mb = sum(f.stat().st_size for f in files) / 2**20
    print(f"exported {args.model} to {out} ({size_mb:.1f} MB)")
    return 0


def _add_export(sub: Any) -> None:
    p = sub.add_parser(
        "export", help="export a saved model for inference or serving",
        description="Export a .keras model as .keras (no optimizer state), a TensorFlow "
                    "SavedModel folder for TF Serving (any HxW), TFLite (fixed HxW) or ONNX "
                    "(any HxW; needs the export extra). Mixed-precision models are exported "
                    "with float32 compute.")
    p.add_argument("--model", required=True, help="a saved .keras model (e.g. checkpoints/best)")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="destination: a .keras/.tflite/.onnx file, or a folder for savedmodel")
    p.add_argument("--format", default=None, metavar="FORMAT",
                   help=f"one of {', '.join(EXPORT_FORMATS)} (default: from the --out suffix "
                        f".keras, .tflite or .onnx)")
    p.add_argument("--input-size", type=parse_size, default=None, metavar="HxW",
                   help="fix the input size; required for tflite unless the model has a fixed "
                        "size (default: any HxW)")
    p.add_argument("--keep-precision", action="store_true",
                   help="savedmodel: keep a mixed-precision compute policy (default: float32)")
    p.add_argument("--keep-optimizer", action="store_true",
                   help="keras: keep the training configuration and optimizer state")
    p.add_argument("--opset", type=positive_int, default=None,
                   help="onnx: ONNX opset version (default: tf2onnx's)")
    p.set_defaults(func=_cmd_export)


# --------------------------------------------------------------------------- demo


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


# Subcommand registrars, in the order `vggunet --help` lists them.
_SUBCOMMANDS: list[Callable[[Any], None]] = [
    _add_inspect, _add_train, _add_finetune, _add_predict, _add_evaluate, _add_export, _add_demo,
]


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
