"""Flags for volume (3D) models and data, and the model and pipelines they describe.

`--model-type unet3d` switches `vggunet train`/`finetune`/`inspect` from the encoder U-Net to the
brain-tumour lab's 3D U-Net (`build_unet_3d`); the data flags of `cli.data_args` (`--data`,
`--images`/`--masks`, `--val-*`, `--batch-size`, `--seed`) then locate volumes, and the flags
below describe them. Defaults come from `VolumeDataSettings`, the API's one source.
`predict` and `evaluate` need no `--model-type`: a saved model with 5D input is a volume model.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from vggunet import choices
from vggunet.cli.args import fraction, positive_int
from vggunet.errors import CliError
from vggunet.training.settings import (
    VOLUME_COMPILE, VOLUME_MONITOR, CompileSettings, RunSettings, VolumeDataSettings,
)

MODEL_TYPES = ("unet", "unet3d")
"""`--model-type`: the encoder U-Net (`build_vgg_unet`) or the lab's 3D U-Net."""

PRESETS = tuple(choices.UNET3D_PRESETS)
"""`--preset` names: the lab's "lecture" (depth 2) and "assignment" (depth 4) models."""

_VOLUME = VolumeDataSettings()
# Only flips and axial quarter turns exist for volumes; any of them switches all of them on.
_VOLUME_AUGMENTS = {"flip", "rot90"}


def parse_patch(text: str) -> tuple[int, int, int]:
    """Parses `"HxWxD"` (or one `"N"` for a cube) into a patch size.

    Args:
        text: e.g. `"160x160x16"`.

    Returns:
        `(H, W, D)`, all positive.

    Example:
        >>> parse_patch("160x160x16"), parse_patch("32")
        ((160, 160, 16), (32, 32, 32))
    """
    parts = text.lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or min(values) <= 0:
        raise argparse.ArgumentTypeError(
            f"patch must be three positive integers like 160x160x16, got {text!r}")
    return values[0], values[1], values[2]


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def add_volume_model_args(parser: argparse.ArgumentParser) -> None:
    """`--model-type` and the 3D U-Net's flags (used with `--model-type unet3d`).

    Args:
        parser: the subcommand's parser, changed in place.
    """
    g = parser.add_argument_group("3D U-Net (--model-type unet3d)")
    g.add_argument("--model-type", default=MODEL_TYPES[0], choices=MODEL_TYPES,
                   help="unet: the encoder U-Net (--backbone); unet3d: the brain-tumour lab's "
                        "3D U-Net for volumes (default unet)")
    g.add_argument("--preset", default=None, choices=PRESETS,
                   help="lecture = depth 2, assignment = depth 4 (both 32 base filters)")
    g.add_argument("--depth", type=positive_int, default=None,
                   help="levels of the 3D U-Net (default 2, the lecture's)")
    g.add_argument("--base-filters", type=positive_int, default=None,
                   help="filters of its first convolution (default 32)")
    g.add_argument("--data-format", default="auto", choices=choices.DATA_FORMAT_OPTIONS,
                   help="where the model keeps channels: auto = channels_last, the faster "
                        "(1.6-1.8x on a CPU for the lab's model); channels_first is the "
                        "lab's layout (default auto)")
    g.add_argument("--patch", type=parse_patch, default=_VOLUME.patch, metavar="HxWxD",
                   help="training patch and model input size (default "
                        f"{'x'.join(map(str, _VOLUME.patch))})")


def add_volume_data_args(parser: argparse.ArgumentParser, *, training: bool) -> None:
    """Flags describing volume data (their defaults: `VolumeDataSettings`).

    Args:
        parser: the subcommand's parser, changed in place.
        training: add the patch-sampling and label flags of training.
    """
    g = parser.add_argument_group("volume data")
    g.add_argument("--layout", default=_VOLUME.layout, choices=choices.VOLUME_LAYOUTS,
                   help="decathlon: imagesTr/ + labelsTr/ NIfTI; brats: one folder per case "
                        "with CASE_<modality>.nii.gz files; folders: --images + --masks; h5: "
                        "the lab's patch files (default auto)")
    g.add_argument("--modalities", type=_names, default=_VOLUME.modalities, metavar="A,B,...",
                   help="brats layout: file suffixes in channel order (default "
                        f"{','.join(_VOLUME.modalities)})")
    g.add_argument("--label-suffix", default=_VOLUME.label_suffix,
                   help=f"brats layout: the label file suffix (default {_VOLUME.label_suffix})")
    g.add_argument("--standardize", default=_VOLUME.standardize if training else None,
                   choices=choices.STANDARDIZE_METHODS,
                   help="lab: per channel and z-slice; zscore: per channel (default "
                        + (_VOLUME.standardize if training else
                           "the training run's, from the state.json beside the model's "
                           f"checkpoints/ folder, else {_VOLUME.standardize}") + ")")
    if not training:
        return
    g.add_argument("--label-mode", default=_VOLUME.label_mode, choices=choices.LABEL_MODES,
                   help="multilabel: one sigmoid per class 1..N-1 (the lab's, soft Dice loss); "
                        "index: softmax over all N classes (default multilabel)")
    g.add_argument("--include-background", action="store_true",
                   help="multilabel: also a sigmoid channel for class 0")
    g.add_argument("--background-fraction", type=fraction,
                   default=_VOLUME.background_fraction, metavar="F",
                   help="accept a random patch when less than F of it is background "
                        f"(default {_VOLUME.background_fraction})")
    g.add_argument("--patches-per-volume", type=positive_int,
                   default=_VOLUME.patches_per_volume, metavar="N",
                   help="patches drawn from each volume per epoch (default 1)")


def add_window_args(parser: argparse.ArgumentParser) -> None:
    """Sliding-window flags of `predict`/`evaluate` for volume models.

    Args:
        parser: the subcommand's parser, changed in place.
    """
    g = parser.add_argument_group("volume models (sliding window)")
    g.add_argument("--patch", type=parse_patch, default=None, metavar="HxWxD",
                   help="window size (default: the model's input size)")
    g.add_argument("--patch-overlap", type=fraction, default=0.5, metavar="F",
                   help="overlap of neighbouring windows as a fraction of the window "
                        "(default 0.5)")
    g.add_argument("--blend", default=choices.BLEND_MODES[0], choices=choices.BLEND_MODES,
                   help="weights of overlapping windows (default gaussian)")


def is_volume_run(args: argparse.Namespace) -> bool:
    """Whether the flags ask for a 3D U-Net run.

    Args:
        args: parsed flags.

    Returns:
        True for `--model-type unet3d`.
    """
    return getattr(args, "model_type", MODEL_TYPES[0]) == "unet3d"


def _augment(spec: str | None) -> bool:
    if spec is None:
        return _VOLUME.augment
    parts = {p.strip().split("=")[0] for p in spec.lower().split(",") if p.strip()}
    if parts <= {"none", "off"}:
        return False
    if not parts <= _VOLUME_AUGMENTS:
        raise CliError(f"--augment {spec!r}: volumes support flip and rot90 (both on by "
                       f"default; --augment none switches them off)")
    return True


# 2D pipeline flags with no meaning for volumes: flag -> attribute.
_IMAGE_ONLY_FLAGS = {"--size": "size", "--crop": "crop", "--sample-weights": "sample_weights",
                     "--palette": "palette"}


def check_volume_flags(args: argparse.Namespace) -> None:
    """Refuses 2D-only flags given with `--model-type unet3d` (they would be ignored).

    Args:
        args: parsed flags.
    """
    for flag, name in _IMAGE_ONLY_FLAGS.items():
        if getattr(args, name, None) is not None:
            raise CliError(f"{flag} is for 2D images; volumes are sampled as --patch HxWxD "
                           f"patches (--model-type unet3d)")
    if getattr(args, "mask_format", "index") != "index":
        raise CliError("--mask-format is for 2D masks; volume labels are class indices (or "
                       "the lab's one-hot h5 labels)")


def volume_settings(args: argparse.Namespace) -> VolumeDataSettings:
    """The volume pipeline settings the flags ask for.

    Args:
        args: parsed flags of `train`/`finetune` with `--model-type unet3d`.

    Returns:
        The `VolumeDataSettings` (recorded in `state.json`).
    """
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(VolumeDataSettings)
              if hasattr(args, f.name) and f.name != "augment"}
    return VolumeDataSettings(**values, augment=_augment(getattr(args, "augment", None)))


def output_channels(num_classes: int, label_mode: str, include_background: bool) -> int:
    """Model output channels for `num_classes` label values (background included).

    Args:
        num_classes: label values 0..N-1.
        label_mode: "multilabel" (one sigmoid per class) or "index" (softmax).
        include_background: multilabel with a channel for class 0.

    Returns:
        N for softmax or with the background channel, else N - 1.

    Example:
        >>> output_channels(4, "multilabel", False), output_channels(3, "index", False)
        (3, 3)
    """
    if label_mode == "index" or include_background:
        return num_classes
    if num_classes < 2:
        raise CliError("--num-classes counts the label values including background: it must "
                       "be at least 2 for --label-mode multilabel")
    return num_classes - 1


def build_volume_model(args: argparse.Namespace) -> Any:
    """Builds the 3D U-Net the flags describe, sized to the training patch.

    Args:
        args: parsed flags (`add_volume_model_args`, `add_volume_data_args`, the model flags).

    Returns:
        The uncompiled model.
    """
    from vggunet.models.unet3d import build_unet_3d

    settings = volume_settings(args)
    patch = settings.patch
    shape = ((args.channels, *patch) if settings.data_format == "channels_first"
             else (*patch, args.channels))
    options = {k: v for k, v in (("preset", args.preset), ("depth", args.depth),
                                  ("base_filters", args.base_filters)) if v is not None}
    return build_unet_3d(
        shape, n_classes=output_channels(args.num_classes, settings.label_mode,
                                         settings.include_background),
        data_format=settings.data_format,
        final_activation="sigmoid" if settings.label_mode == "multilabel" else "softmax",
        precision=args.precision, **options)


def volume_training_defaults(args: argparse.Namespace) -> None:
    """Multilabel volume runs train with the lab's soft Dice loss and Dice coefficient:
    `--loss`, `--metrics` and `--monitor` left at their (2D) defaults get those, in place.

    Args:
        args: parsed training flags.
    """
    if getattr(args, "label_mode", _VOLUME.label_mode) != "multilabel":
        return
    compile_defaults = CompileSettings()
    if args.loss == compile_defaults.loss:
        args.loss = VOLUME_COMPILE.loss
    if args.metrics == ",".join(compile_defaults.metrics):
        args.metrics = ",".join(VOLUME_COMPILE.metrics)
    if args.monitor == RunSettings().monitor:
        args.monitor = VOLUME_MONITOR


def volume_cases(args: argparse.Namespace, prefix: str = "") -> list | None:
    """The volume cases that `--<prefix>data` or `--<prefix>images` + `--<prefix>masks` locate.

    Args:
        args: parsed data flags.
        prefix: "" or "val_".

    Returns:
        `VolumeCase`s, or None when no such flag is set.
    """
    from vggunet.data.volume_cases import find_volume_cases

    root = getattr(args, f"{prefix}data", None)
    images, labels = getattr(args, f"{prefix}images", None), getattr(args, f"{prefix}masks", None)
    flag = "--" + prefix.replace("_", "-")
    if root and (images or labels):
        raise CliError(f"give {flag}data DIR or {flag}images DIR {flag}masks DIR, not both")
    if getattr(args, f"{prefix}pairs", None):
        raise CliError(f"{flag}pairs lists 2D image pairs; volumes are found with {flag}data "
                       f"or {flag}images/{flag}masks")
    if not (root or images or labels):
        return None
    if bool(images) != bool(labels):
        raise CliError(f"{flag}images and {flag}masks go together")
    return find_volume_cases(root, images=images, labels=labels, layout=args.layout,
                             modalities=args.modalities, label_suffix=args.label_suffix)


def make_volume_datasets(args: argparse.Namespace) -> tuple[Any, Any, int, int]:
    """Patch pipelines for training and validation from the flags.

    Args:
        args: parsed flags of `train`/`finetune` with `--model-type unet3d`.

    Returns:
        `(train_data, val_data_or_None, n_train, n_val)`: `VolumePatchDataset`s.
    """
    from vggunet.cli.data_args import hold_out
    from vggunet.data.volume_pipeline import make_volume_dataset

    train = volume_cases(args)
    if train is None:
        raise CliError("no training volumes: give --data DIR or --images DIR --masks DIR")
    val = volume_cases(args, "val_")
    settings = volume_settings(args)
    if settings.val_split:
        if val is not None:
            raise CliError("--val-split cannot be combined with --val-data/--val-images")
        train, val = hold_out(train, settings.val_split, settings.seed, "volumes")
    common = dict(patch=settings.patch, num_classes=args.num_classes,
                  batch_size=settings.batch_size, label_mode=settings.label_mode,
                  include_background=settings.include_background,
                  data_format=settings.data_format, standardize=settings.standardize,
                  background_fraction=settings.background_fraction)
    train_data = make_volume_dataset(train, augment=settings.augment, seed=settings.seed,
                                     patches_per_volume=settings.patches_per_volume,
                                     shuffle=True, **common)
    # Validation patches are drawn once with a fixed seed: every epoch scores the same ones.
    val_data = (make_volume_dataset(val, augment=False, shuffle=False, resample=False,
                                    seed=settings.seed if settings.seed is not None else 0,
                                    **common) if val else None)
    return train_data, val_data, len(train), len(val or [])
