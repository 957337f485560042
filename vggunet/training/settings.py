"""The settings of a training run: the one typed source of the defaults of `train`, `finetune`,
the `vggunet train`/`finetune` flags and `state.json`.

Four frozen dataclasses describe a run, and their field defaults are the defaults everywhere:
`CompileSettings` (how the model is compiled), `PhaseSettings` (one phase: epochs, learning rate,
schedule, what is unfrozen), `RunSettings` (monitoring, early stopping, steps, logs) and
`DataSettings` (the CLI's pipeline flags; `VolumeDataSettings` for volumes). The phases of the
two entry points:

* `TRAIN_PHASE`: `train` and `vggunet train` (10 epochs at 1e-3; the API requires `epochs`);
* `FINETUNE_PHASE1`: 5 epochs at 1e-3 with the encoder frozen;
* `FINETUNE_PHASE2`: 10 epochs at 1e-4 with the top two encoder blocks unfrozen. On ISBI,
  1e-4..3e-4 suited phase 2 and 1e-5 barely moved the weights (BENCHMARKS.md).

This module imports nothing heavy, so the CLI builds its flags from it without loading Keras.

Resuming with other settings. `state.json` records the settings of the run; a resume compares
the requested ones with them (`vggunet.training.resume.check_resume`):

* applied, and named in one line: the epochs of the phase under way (more or fewer), early
  stopping, `steps_per_epoch`, `validation_steps`, TensorBoard, `recalibrate_bn`, `verbose`,
  `jit_compile` (how steps execute, not what they compute), the data pipeline
  (`DataSettings`, `max_weight` included), and any setting of a phase that has not started
  yet;
* refused with `SettingsMismatchError`, each difference named with its stored and requested value:
  the kind of run (train/finetune); the other `CompileSettings` fields (the checkpoint's optimizer
  state, loss and metrics were built from them); the monitored quantity and its mode (`best.keras`
  and the best value were chosen by them); the learning rate, schedule, `warmup_epochs`,
  `lr_per_step`, `layerwise_lr`, unfreeze spec and `train_bn` of a phase under way (its
  optimizer state and learning-rate curve were built on them; a silent switch would leave
  `log.csv` and `state.json` describing a run that never happened); and anything of a phase
  that has ended. To go on with such a change, start a new run from the checkpoint:
  `train(load_model(".../checkpoints/last.keras"), ..., out_dir=<another folder>)`. A phase
  setting that a `state.json` predates counts as its default there (the run trained that
  way).

`state.json` files of version 1 (written before the settings were recorded) hold the phases'
epochs, learning rates and schedules and the monitor: those are compared as above; compile, run
and data settings cannot be, and the requested ones are used (said in the resume line).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from vggunet import choices
from vggunet.checks import check_bool, check_choice, check_int, check_number
from vggunet.errors import ArgumentError

__all__ = [
    "CompileSettings",
    "DataSettings",
    "FINETUNE_PHASE1",
    "FINETUNE_PHASE2",
    "LR_SCHEDULES",
    "MONITOR_MODES",
    "PhaseSettings",
    "RunSettings",
    "STRATEGIES",
    "TRAIN_PHASE",
    "VOLUME_COMPILE",
    "VOLUME_MONITOR",
    "VolumeDataSettings",
    "resolve_volume_data_format",
]

LR_SCHEDULES = ("constant", "cosine", "poly")
"""Learning-rate schedules of a phase (`lr_schedule=`, `--lr-schedule`)."""

MONITOR_MODES = ("auto", "min", "max")
"""How the monitored value improves (`mode=`): "auto" reads it from the name."""

STRATEGIES = ("none", "mirrored", "multiworker")
"""Strategy names accepted by `resolve_strategy` and the CLI's `--strategy`."""

JIT_OPTIONS = ("auto", True, False)


def _set(settings: Any, **values: Any) -> None:
    for name, value in values.items():
        object.__setattr__(settings, name, value)  # frozen dataclass: normalised once, here


@dataclasses.dataclass(frozen=True)
class CompileSettings:
    """How the model is compiled (`compile_model`); the learning rate belongs to each phase.

    Attributes:
        loss: a `get_loss` name ("ce", "dice", "jaccard", "focal", "ce+dice") or a Loss.
        metrics: `get_metrics` names and/or Metric instances (a comma-separated string is split).
        optimizer: an optimizer name ("adam", "sgd", ...) or instance.
        ignore_index: mask value not counted by loss and metrics.
        class_weights: per-class loss weights, or None.
        num_classes: classes (None: the model's output channels).
        jit_compile: passed to `model.compile` ("auto", True or False).
    """

    loss: Any = "ce+dice"
    metrics: Any = ("miou", "dice", "accuracy")
    optimizer: Any = "adam"
    ignore_index: int | None = None
    class_weights: Any = None
    num_classes: int | None = None
    jit_compile: Any = "auto"

    def __post_init__(self) -> None:
        metrics = self.metrics
        if isinstance(metrics, str):
            metrics = [m.strip() for m in metrics.split(",") if m.strip()]
        weights = self.class_weights
        _set(self, metrics=tuple(metrics or ()),
             class_weights=None if weights is None else tuple(float(w) for w in weights),
             ignore_index=check_int(self.ignore_index, "ignore_index", minimum=None,
                                    allow_none=True),
             num_classes=check_int(self.num_classes, "num_classes", allow_none=True),
             jit_compile=check_choice(self.jit_compile, JIT_OPTIONS, "jit_compile"))


_PHASE_NAMES = {"epochs": "epochs", "learning_rate": "learning_rate",
                "lr_schedule": "lr_schedule", "train_bn": "train_bn",
                "warmup_epochs": "warmup_epochs", "layerwise_lr": "layerwise_lr",
                "lr_per_step": "lr_per_step"}


def _checked_phase(values: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    return {
        "epochs": check_int(values["epochs"], names["epochs"], minimum=0),
        "learning_rate": check_number(values["learning_rate"], names["learning_rate"], low=0,
                                      low_open=True),
        "lr_schedule": check_choice(values["lr_schedule"], LR_SCHEDULES, names["lr_schedule"]),
        "unfreeze": values["unfreeze"],
        "train_bn": check_bool(values["train_bn"], names["train_bn"]),
        "warmup_epochs": check_int(values["warmup_epochs"], names["warmup_epochs"], minimum=0),
        "layerwise_lr": check_number(values["layerwise_lr"], names["layerwise_lr"], low=0,
                                     high=1, low_open=True, allow_none=True),
        "lr_per_step": check_bool(values["lr_per_step"], names["lr_per_step"]),
    }


@dataclasses.dataclass(frozen=True)
class PhaseSettings:
    """One training phase. Defaults: `TRAIN_PHASE`; fine-tuning uses `FINETUNE_PHASE1/2`.

    Attributes:
        epochs: epochs of the phase (0 skips it).
        learning_rate: the phase's learning rate (> 0).
        lr_schedule: "constant", "cosine" (half a cosine from `learning_rate` towards 0 over
            the phase; see `cosine_lr`) or "poly" (polynomial decay, power 0.9, from
            `learning_rate` to 0 over the phase; see `poly_lr`), each after the warm-up and
            set per epoch, or per batch with `lr_per_step`
            (`vggunet.training.schedules.phase_schedule`).
        unfreeze: what the phase unfreezes (fine-tuning's phase 2: "topN", "encoder" or any
            `vggunet.freeze` spec); None: nothing.
        train_bn: let encoder BatchNorm layers train when unfreezing.
        warmup_epochs: epochs of linear warm-up at the phase's start, from a tenth of
            `learning_rate` up to it (any schedule; "constant" then holds the rate); 0: none.
        layerwise_lr: layer-wise rates for fine-tuning, a factor F in (0, 1]: encoder stage
            i of N (1 = the lowest) trains at `learning_rate * F ** (N - i)`, so the top
            stage, the bottleneck, decoder and head train at `learning_rate` and each stage
            below at F times the rate of the one above (`vggunet.training.layerwise`);
            None: one rate for all.
        lr_per_step: set the scheduled rate before every batch (the schedule and the
            warm-up run over steps, as in most segmentation code) instead of once per epoch;
            with few long epochs the per-epoch rate moves in coarse stairs.
    """

    epochs: int = 10
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"
    unfreeze: Any = None
    train_bn: bool = False
    warmup_epochs: int = 0
    layerwise_lr: float | None = None
    lr_per_step: bool = False

    def __post_init__(self) -> None:
        _set(self, **_checked_phase(dataclasses.asdict(self), _PHASE_NAMES))

    @classmethod
    def from_arguments(cls, names: Mapping[str, str], **values: Any) -> "PhaseSettings":
        """Builds the settings from a function's keywords; errors name those keywords.

        Args:
            names: field -> the caller's keyword (e.g. `{"learning_rate": "phase2_lr"}`).
            **values: field values (missing ones take the class defaults).

        Returns:
            The settings.

        Example:
            >>> PhaseSettings.from_arguments({"learning_rate": "phase2_lr"}, learning_rate=0)
            Traceback (most recent call last):
            ...
            vggunet.errors.ArgumentError: phase2_lr must be a number > 0, got 0.
        """
        defaults = dataclasses.asdict(cls())
        return cls(**_checked_phase({**defaults, **values}, {**_PHASE_NAMES, **names}))


TRAIN_PHASE = PhaseSettings()
"""`train`'s phase: 10 epochs (the CLI's `--epochs`) at 1e-3, trainable flags as given."""

FINETUNE_PHASE1 = PhaseSettings(epochs=5, learning_rate=1e-3)
"""`finetune`'s phase 1: the decoder trains on the frozen encoder."""

FINETUNE_PHASE2 = PhaseSettings(epochs=10, learning_rate=1e-4, unfreeze="top2")
"""`finetune`'s phase 2: the top two encoder blocks unfrozen (BatchNorm stays frozen)."""


def _optional_int(value: Any, name: str, minimum: int = 1) -> int | None:
    # None means "off"; the message names the valid numbers, as the CLI's flags do.
    return None if value is None else check_int(value, name, minimum=minimum)


def _verbosity(value: Any) -> Any:
    # Keras's own values: 0, 1, 2 or "auto" (True/False read as 1/0).
    if isinstance(value, bool):
        return int(value)
    return value if value == "auto" else check_int(value, "verbose", minimum=0)


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How a run is watched and logged.

    Attributes:
        monitor: the quantity that picks `best.keras` and drives early stopping. Without
            validation data "val_X" becomes "X"; without a "miou" metric "mean_iou" becomes the
            loss. None means the default.
        mode: "auto" ("min" for losses and errors, else "max"), "min" or "max".
        early_stopping: patience in epochs, or None (off).
        steps_per_epoch: batches per epoch (None: one pass over the data).
        validation_steps: validation batches per epoch (None: all).
        tensorboard: write TensorBoard logs to `out_dir/tensorboard`.
        recalibrate_bn: re-estimate the trainable BatchNorm statistics on this many training
            batches before each validation and checkpoint; None: off.
        verbose: Keras progress verbosity (0 silent, 1 bar, 2 a line per epoch, "auto"); 0
            also silences vggunet's own progress lines.
    """

    monitor: str | None = "val_mean_iou"
    mode: str = "auto"
    early_stopping: int | None = None
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    tensorboard: bool = True
    recalibrate_bn: int | None = None
    verbose: int = 1

    def __post_init__(self) -> None:
        default = RunSettings.__dataclass_fields__["monitor"].default
        _set(self, monitor=default if self.monitor is None else str(self.monitor),
             mode=check_choice(self.mode, MONITOR_MODES, "mode"),
             early_stopping=_optional_int(self.early_stopping, "early_stopping", minimum=0),
             steps_per_epoch=_optional_int(self.steps_per_epoch, "steps_per_epoch"),
             validation_steps=_optional_int(self.validation_steps, "validation_steps"),
             tensorboard=check_bool(self.tensorboard, "tensorboard"),
             recalibrate_bn=_optional_int(self.recalibrate_bn, "recalibrate_bn"),
             verbose=_verbosity(self.verbose))


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """The training pipeline the CLI builds (`make_datasets`), recorded in `state.json`.

    Attributes:
        batch_size: images per (global) batch.
        size: resize every image and mask to (H, W), or None.
        crop: random training crops of (H, W), or None.
        augment: augmentation spec, e.g. "flip,rot90,elastic", or None.
        cache: keep decoded images in memory after the first epoch.
        sample_weights: one of `vggunet.choices.SAMPLE_WEIGHTS` ("median_frequency",
            "inverse_frequency", "inverse_sqrt_frequency", "border") or None.
        border_w0: weight of the separation term of "border" weights.
        border_sigma: its width in pixels.
        max_weight: cap of the class weights of `sample_weights` (> 0), or None: weights
            above it are set to it, so rare classes cannot dominate the loss.
        seed: seed of data order, augmentation and the validation split.
        val_split: fraction of the training pairs held out for validation, or None.
        mask_format: "index", "binary", "palette" or "channel".
        mask_channel: the channel holding the class for "channel" masks.
    """

    batch_size: int = 4
    size: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    augment: str | None = None
    cache: bool = False
    sample_weights: str | None = None
    border_w0: float = 10.0
    border_sigma: float = 5.0
    max_weight: float | None = None
    seed: int | None = None
    val_split: float | None = None
    mask_format: str = "index"
    mask_channel: int = 0

    def __post_init__(self) -> None:
        _set(self, batch_size=check_int(self.batch_size, "batch_size"),
             size=None if self.size is None else tuple(self.size),
             crop=None if self.crop is None else tuple(self.crop))


def resolve_volume_data_format(data_format: str) -> str:
    """The data format a volume run uses: "auto" is "channels_last".

    Measured on this project's 2-core CPU (BENCHMARKS.md, "Volumes (3D)"): TensorFlow's CPU
    3D convolution is channels-last only, so Keras transposes around channels-first ones:
    1.6x (training) to 1.8x (inference) slower for the lab's depth-4 model in float32, 11x for
    a tiny one. On GPUs channels-last is the layout tensor cores want under mixed precision.
    "channels_first" stays available for the lab's exact layout.

    Args:
        data_format: one of `vggunet.choices.DATA_FORMAT_OPTIONS`.

    Returns:
        "channels_first" or "channels_last".

    Example:
        >>> resolve_volume_data_format("auto"), resolve_volume_data_format("channels_first")
        ('channels_last', 'channels_first')
    """
    data_format = check_choice(data_format, choices.DATA_FORMAT_OPTIONS, "data_format")
    return "channels_last" if data_format == "auto" else data_format


def _patch(value: Any) -> tuple[int, int, int]:
    patch = tuple(value)
    if len(patch) != 3:
        raise ArgumentError(f"patch must have 3 sizes (H, W, D), got {value!r}.")
    return tuple(check_int(size, "patch size") for size in patch)  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class VolumeDataSettings:
    """The volume pipeline (`make_volume_dataset`), recorded in `state.json` like `DataSettings`.

    Defaults are the brain-tumour lab's: 160×160×16 patches with at most 95 % background,
    per-slice standardisation, three sigmoid tumour classes without the background channel;
    the data format is the faster one ("auto": channels last; the lab's is channels first).

    Attributes:
        patch: training patch size (H, W, D).
        batch_size: patches per (global) batch.
        layout: folder layout of the data, one of `vggunet.choices.VOLUME_LAYOUTS`.
        modalities: the BraTS layout's per-case file suffixes, in channel order.
        label_suffix: the BraTS layout's label file suffix.
        label_mode: "multilabel" (one-hot sigmoid targets) or "index" (class indices, softmax).
        include_background: multilabel targets keep the background channel.
        data_format: the model's data format: "auto" (stored resolved, see
            `resolve_volume_data_format`), "channels_first" or "channels_last".
        standardize: "lab" (per channel and z-slice), "zscore" (per channel) or "none".
        augment: random flips of every axis and axial 90° rotations.
        background_fraction: a patch is accepted when less than this fraction is background.
        patches_per_volume: patches drawn from each volume per epoch.
        seed: seed of order, patches, augmentation and the validation split.
        val_split: fraction of the cases held out for validation, or None.
    """

    patch: tuple[int, int, int] = (160, 160, 16)
    batch_size: int = 2
    layout: str = "auto"
    modalities: tuple[str, ...] = choices.BRATS_MODALITIES
    label_suffix: str = "seg"
    label_mode: str = "multilabel"
    include_background: bool = False
    data_format: str = "auto"
    standardize: str = "lab"
    augment: bool = True
    background_fraction: float = 0.95
    patches_per_volume: int = 1
    seed: int | None = None
    val_split: float | None = None

    def __post_init__(self) -> None:
        _set(self, patch=_patch(self.patch),
             batch_size=check_int(self.batch_size, "batch_size"),
             layout=check_choice(self.layout, choices.VOLUME_LAYOUTS, "layout"),
             modalities=tuple(str(m) for m in self.modalities),
             label_mode=check_choice(self.label_mode, choices.LABEL_MODES, "label_mode"),
             include_background=check_bool(self.include_background, "include_background"),
             data_format=resolve_volume_data_format(self.data_format),
             standardize=check_choice(self.standardize, choices.STANDARDIZE_METHODS,
                                      "standardize"),
             augment=check_bool(self.augment, "augment"),
             background_fraction=check_number(self.background_fraction, "background_fraction",
                                              low=0, high=1, low_open=True),
             patches_per_volume=check_int(self.patches_per_volume, "patches_per_volume"),
             seed=check_int(self.seed, "seed", minimum=None, allow_none=True),
             val_split=check_number(self.val_split, "val_split", low=0, high=1, low_open=True,
                                    high_open=True, allow_none=True))


VOLUME_COMPILE = CompileSettings(loss="soft_dice", metrics=("dice_coefficient", "class_dice"))
"""Compile settings of the lab's sigmoid multi-label volumes (`label_mode="multilabel"`): the
soft Dice loss and the thresholded Dice coefficient. Class-index volumes (softmax) use the
`CompileSettings` defaults."""

VOLUME_MONITOR = "val_dice_coefficient"
"""The quantity that picks `best.keras` for multilabel volume runs."""
