"""The 3D U-Net of the AI-for-Medicine brain-tumour lab, with a `depth` argument and presets."""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import keras
from keras import layers

from vggunet import choices
from vggunet.checks import check_choice, check_int
from vggunet.errors import ArgumentError
from vggunet.models.model import SegmentationModel
from vggunet.models.precision import dtype_policy

DATA_FORMATS = choices.DATA_FORMATS

UNET3D_PRESETS = choices.UNET3D_PRESETS
"""The lab's two models, name -> `{"depth", "base_filters"}` (defined in `vggunet.choices`).
With the default input (4, 160, 160, 16) and 3 classes, "lecture" (depth 2) has 833,507
parameters and "assignment" (depth 4) 16,318,307."""

DEFAULT_UNET3D_PRESET = "lecture"
"""The preset whose depth and base filters `build_unet_3d` uses when given neither."""


def _conv3d_relu(
    x: Any, filters: int, name: str, data_format: str, batchnorm: bool
) -> Any:
    # The lab keeps Conv3D and its ReLU as separate layers; keeping that makes summaries match.
    x = layers.Conv3D(filters, (3, 3, 3), padding="same", data_format=data_format, name=name)(x)
    if batchnorm:
        axis = 1 if data_format == "channels_first" else -1
        x = layers.BatchNormalization(axis=axis, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _check_arguments(
    input_shape: Sequence[int | None], depth: int, base_filters: int, n_classes: int,
    data_format: str, pool_size: int,
) -> None:
    check_int(depth, "depth")
    check_int(base_filters, "base_filters")
    check_int(n_classes, "n_classes")
    check_int(pool_size, "pool_size")
    check_choice(data_format, DATA_FORMATS, "data_format")
    if len(input_shape) != 4:
        raise ArgumentError(
            f"input_shape must have 4 entries (channels and 3 spatial sizes), got "
            f"{tuple(input_shape)!r}."
        )
    spatial = input_shape[1:] if data_format == "channels_first" else input_shape[:3]
    factor = pool_size ** (depth - 1)
    for axis, size in enumerate(spatial):
        if size is not None and int(size) % factor:
            raise ArgumentError(
                f"spatial size {size} (axis {axis}) of input_shape {tuple(input_shape)!r} is not "
                f"divisible by {factor} = pool_size**(depth-1) for depth={depth}."
            )


def _resolve_preset(
    preset: str | None, depth: int | None, base_filters: int | None
) -> tuple[int, int]:
    """`(depth, base_filters)`: a preset's values; explicit values must agree with it.

    Without a preset, the unset ones come from `DEFAULT_UNET3D_PRESET`.
    """
    if preset is None:
        values = UNET3D_PRESETS[DEFAULT_UNET3D_PRESET]
        return (values["depth"] if depth is None else depth,
                values["base_filters"] if base_filters is None else base_filters)
    explicit = {"depth": depth, "base_filters": base_filters}
    values = UNET3D_PRESETS[check_choice(preset, tuple(UNET3D_PRESETS), "preset")]
    for key, value in explicit.items():
        if value is not None and value != values[key]:
            raise ArgumentError(
                f"{key}={value!r} conflicts with preset={preset!r}, which sets {key}="
                f"{values[key]}; pass one or the other (or the preset's value).")
    return values["depth"], values["base_filters"]


def build_unet_3d(
    input_shape: Sequence[int | None] = (4, 160, 160, 16),
    depth: int | None = None,
    base_filters: int | None = None,
    n_classes: int = 3,
    data_format: str = "channels_first",
    final_activation: str | None = "sigmoid",
    batchnorm: bool = False,
    pool_size: int = 2,
    *,
    preset: str | None = None,
    precision: str | None = None,
) -> keras.Model:
    """Builds the lab's 3D U-Net (`unet_model_3d`) for volumes.

    At level i (0 = top): two Conv3D(3×3×3, same) + ReLU with `base_filters·2^i` and
    `base_filters·2^i·2` filters, MaxPooling3D except at the bottom. Going up: UpSampling3D,
    concatenation with the level's second conv on the channel axis, two Conv3D with that skip's
    channel count. Head: Conv3D(n_classes, 1×1×1) and `final_activation`. With the defaults,
    `count_params()` is exactly 833,507 and the output is (None, 3, 160, 160, 16).

    Args:
        input_shape: `(C, D1, D2, D3)` for channels_first, `(D1, D2, D3, C)` for channels_last;
            spatial sizes must be divisible by `pool_size**(depth-1)`.
        depth: number of levels (>= 1); depth 2 pools once. Default: the preset's, else 2.
        base_filters: filters of the first convolution. Default: the preset's, else 32.
        n_classes: output channels.
        data_format: `"channels_first"` (the lab's) or `"channels_last"`.
        final_activation: activation of the head (`"sigmoid"`, `"softmax"`, or None for logits).
        batchnorm: BatchNorm after each convolution.
        pool_size: pooling/upsampling factor per level.
        preset: a key of `UNET3D_PRESETS` (`"lecture"`: depth 2, `"assignment"`: depth 4; both
            32 base filters); an explicit `depth`/`base_filters` must then equal the preset's.
        precision: None (build under the global Keras dtype policy, as before presets), or as
            `build_vgg_unet`'s: `"auto"`, `"float32"`, `"mixed_bfloat16"`, `"mixed_float16"`
            (`vggunet.models.precision`). The head's activation always outputs float32.

    Returns:
        The uncompiled `SegmentationModel` (a Functional `keras.Model` recording its layer
        roles; runs on CPU in both data formats).

    Example:
        >>> model = build_unet_3d()
        >>> model.count_params()
        833507
        >>> [name for name, role in model.roles.items() if role == "skip"]
        ['encoder_level0_conv2_relu']
        >>> dict(UNET3D_PRESETS["assignment"])
        {'depth': 4, 'base_filters': 32}
    """
    depth, base_filters = _resolve_preset(preset, depth, base_filters)
    _check_arguments(input_shape, depth, base_filters, n_classes, data_format, pool_size)
    # dtype_policy checks `precision` against choices.PRECISIONS.
    policy = contextlib.nullcontext() if precision is None else dtype_policy(precision)
    with policy:
        inputs, outputs, skips = _graph(input_shape, depth, base_filters, n_classes,
                                        data_format, final_activation, batchnorm, pool_size)
    return SegmentationModel(inputs, outputs, name="unet_3d", skips=skips)


def _graph(
    input_shape: Sequence[int | None], depth: int, base_filters: int, n_classes: int,
    data_format: str, final_activation: str | None, batchnorm: bool, pool_size: int,
) -> tuple[Any, Any, list[Any]]:
    """The layers of `build_unet_3d`: `(inputs, outputs, skip tensors)`."""
    channel_axis = 1 if data_format == "channels_first" else -1

    inputs = keras.Input(tuple(input_shape), name="input_volume")
    x = inputs
    skips = []
    for level in range(depth):
        prefix = "bottleneck" if level == depth - 1 else f"encoder_level{level}"
        filters = base_filters * 2 ** level
        x = _conv3d_relu(x, filters, f"{prefix}_conv1", data_format, batchnorm)
        x = _conv3d_relu(x, filters * 2, f"{prefix}_conv2", data_format, batchnorm)
        if level < depth - 1:
            skips.append(x)
            x = layers.MaxPooling3D(pool_size, data_format=data_format, name=f"{prefix}_pool")(x)
    for level in range(depth - 2, -1, -1):
        prefix = f"decoder_level{level}"
        skip = skips[level]
        x = layers.UpSampling3D(pool_size, data_format=data_format, name=f"{prefix}_up")(x)
        x = layers.Concatenate(axis=channel_axis, name=f"{prefix}_concat")([x, skip])
        skip_channels = skip.shape[channel_axis]
        x = _conv3d_relu(x, skip_channels, f"{prefix}_conv1", data_format, batchnorm)
        x = _conv3d_relu(x, skip_channels, f"{prefix}_conv2", data_format, batchnorm)
    x = layers.Conv3D(n_classes, (1, 1, 1), data_format=data_format, name="head_conv")(x)
    # float32 output under mixed precision, so losses and probabilities are float32 (as 2D).
    outputs = layers.Activation(final_activation or "linear", dtype="float32",
                                name="head_activation")(x)
    return inputs, outputs, skips
