"""U-Net builders: `build_vgg_unet` on a pretrained encoder, and the 2D U-Net lab model."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import keras
from keras import layers

from vggunet.errors import ArgumentError
from vggunet.models.blocks import (
    DECODER_BN_MOMENTUM,
    DECODERS,
    conv_block,
    conv_relu,
    decoder_stage,
    upsampling_block,
)
from vggunet.models.encoder import build_encoder, check_pretrained_channels, resolve_skip_layers
from vggunet.models.registry import get_encoder_spec
from vggunet.models.layers import CropToReference
from vggunet.models.precision import dtype_policy

ACTIVATIONS = ("auto", "softmax", "sigmoid", None)


def _check_positive_int(value: Any, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ArgumentError(f"{argument} must be a positive integer, got {value!r}.")
    return value


def _stage_of_stride(stride: float, n_stages: int, layer: str) -> int:
    """Decoder stage (1 = deepest) whose output has this stride, for a skip from `layer`."""
    level = math.log2(stride) if stride > 0 else -1
    if level != int(level) or not 0 <= level < n_stages:
        raise ArgumentError(
            f"skip layer {layer!r} has stride {stride:g} relative to the input; with "
            f"{n_stages} decoder stages skips must have stride 1, 2, ..., {2 ** (n_stages - 1)}."
        )
    return n_stages - int(level)


def _plan_skips(
    encoder: keras.Model, skip_names: Sequence[str], n_stages: int
) -> tuple[dict[int, Any], bool]:
    """Assigns each skip tensor to the decoder stage of its resolution.

    Returns:
        `({stage: skip_tensor}, pool_before_bottleneck)`.
    """
    multiple = 2 ** n_stages
    _, height, width, channels = encoder.inputs[0].shape
    # Static sizes must be probed as they are; free ones with any multiple of the total stride.
    height = height or 2 * multiple
    width = width or 2 * multiple
    shapes = encoder.compute_output_shape((1, height, width, channels))
    probe = -(-height // multiple) * multiple  # the height after PadToMultiple
    if not isinstance(shapes, list):
        shapes = [shapes]
    *skip_shapes, source_shape = shapes
    stages: dict[int, Any] = {}
    for name, shape, tensor in zip(skip_names, skip_shapes, encoder.outputs):
        stage = _stage_of_stride(probe / shape[1], n_stages, name)
        if stage in stages:
            raise ArgumentError(
                f"skip layers {stages[stage][0]!r} and {name!r} have the same resolution; "
                f"give one skip layer per resolution."
            )
        stages[stage] = (name, tensor)
    source_stride = probe / source_shape[1]
    if source_stride not in (2 ** n_stages, 2 ** (n_stages - 1)):
        raise ArgumentError(
            f"the bottleneck source has stride {source_stride:g}; with {n_stages} decoder stages "
            f"it must have stride {2 ** (n_stages - 1)} (pooled once more) or {2 ** n_stages}."
        )
    return {s: t for s, (_, t) in stages.items()}, source_stride == 2 ** (n_stages - 1)


def build_vgg_unet(
    backbone: str = "vgg16",
    input_shape: Sequence[int | None] = (None, None, 3),
    num_classes: int = 2,
    weights: str | None = "imagenet",
    *,
    skip_layers: Sequence[str] | None = None,
    bottleneck_source: str | None = None,
    bottleneck_filters: int = 1024,
    decoder: str = "upsampling",
    decoder_filters: Sequence[int] = (512, 256, 128, 64, 64),
    decoder_batchnorm: bool = False,
    skip_batchnorm: bool = False,
    bn_momentum: float = DECODER_BN_MOMENTUM,
    activation: str | None = "auto",
    freeze: Any = None,
    train_bn: bool = False,
    precision: str = "auto",
    name: str | None = None,
) -> keras.Model:
    """Builds a U-Net on a pretrained `keras.applications` encoder.

    Graph: raw pixels → (grey→RGB) → backbone preprocessing → reflect-pad to a multiple of
    `2**len(decoder_filters)` → backbone (no dense head), tapped at `skip_layers` →
    bottleneck (MaxPooling2D when its source sits at the deepest skip's resolution, as for VGG,
    then two 3×3 convs with `bottleneck_filters`) → one decoder stage per entry of
    `decoder_filters` (upsample ×2, concat the skip of that resolution, two 3×3 convs) →
    1×1 conv head → crop back to the input's H×W → activation in float32.

    Args:
        backbone: registry name: `"vgg16"`, `"vgg19"`, `"resnet50"`, `"resnet101"`, `"resnet152"`.
        input_shape: `(H, W, C)`; `(None, None, C)` accepts any H, W >= 32.
        num_classes: output channels (classes).
        weights: `"imagenet"`, `None`, or a path to a backbone weights file.
        skip_layers: backbone layers to skip-connect, high to low resolution.
        bottleneck_source: backbone layer the bottleneck grows from.
        bottleneck_filters: filters of the two bottleneck convolutions.
        decoder: `"upsampling"` (UpSampling2D + 2×2 conv) or `"transpose"` (Conv2DTranspose 3×3).
        decoder_filters: channels per decoder stage, deepest first; its length sets the number
            of stages (and the total stride, 2**len).
        decoder_batchnorm: BatchNorm after every bottleneck/decoder 3×3 conv.
        skip_batchnorm: BatchNorm (decoder-side, trainable) on every skip tensor before its
            concatenation and on the bottleneck's input, so encoder features reach the decoder
            standardised per channel. Pretrained encoders can emit features whose channel
            scales differ by 10³ (HED's VGG16: std 49 at `block1_conv2`, max ~900); a BatchNorm
            after the decoder's convs does not repair that input conditioning, this does.
        bn_momentum: momentum of the moving statistics of those decoder-side BatchNorms
            (default 0.9, PyTorch's rate; Keras's 0.99 leaves them stale for hundreds of
            steps). The encoder's own BatchNorms keep theirs.
        activation: `"auto"` (softmax for >1 class, sigmoid for 1), `"softmax"`, `"sigmoid"` or
            None (logits).
        freeze: a freeze spec for `vggunet.freeze` (e.g. `"encoder"`, 10, `["block1"]`).
        train_bn: with `freeze`, whether encoder BatchNorm layers may train (default no).
        precision: `"auto"`, `"float32"`, `"mixed_bfloat16"` or `"mixed_float16"`; the output is
            float32 in every case.
        name: model name (default `"<backbone>_unet"`).

    Returns:
        An uncompiled `keras.Model` mapping (B, H, W, C) raw pixels in [0, 255] to
        (B, H, W, num_classes).

    Example:
        >>> model = build_vgg_unet("vgg16", input_shape=(64, 96, 3), num_classes=3, weights=None)
        >>> tuple(model.output.shape)
        (None, 64, 96, 3)
    """
    spec = get_encoder_spec(backbone)
    _check_positive_int(num_classes, "num_classes")
    check_pretrained_channels(input_shape, weights)
    _check_positive_int(bottleneck_filters, "bottleneck_filters")
    if isinstance(bn_momentum, bool) or not isinstance(bn_momentum, (int, float)) \
            or not 0.0 <= bn_momentum < 1.0:
        raise ArgumentError(f"bn_momentum must be a number in [0, 1), got {bn_momentum!r}.")
    if decoder not in DECODERS:
        raise ArgumentError(f"decoder must be one of {DECODERS}, got {decoder!r}.")
    if activation not in ACTIVATIONS:
        raise ArgumentError(f"activation must be one of {ACTIVATIONS}, got {activation!r}.")
    decoder_filters = tuple(decoder_filters)
    if not decoder_filters:
        raise ArgumentError("decoder_filters must name at least one decoder stage, got ().")
    for f in decoder_filters:
        _check_positive_int(f, "each entry of decoder_filters")
    n_stages = len(decoder_filters)
    multiple = 2 ** n_stages
    height, width = input_shape[0], input_shape[1]
    needs_pad = any(d is None or int(d) % multiple for d in (height, width))

    skip_names = resolve_skip_layers(spec, skip_layers)
    encoder = build_encoder(
        backbone, skip_names, weights=None, input_shape=input_shape,
        bottleneck_source=bottleneck_source, pad_to_multiple=multiple if needs_pad else None,
        precision=precision,
    )
    skips, pool = _plan_skips(encoder, skip_names, n_stages)

    with dtype_policy(precision):
        x = encoder.outputs[-1]
        if skip_batchnorm:
            skips = {
                stage: layers.BatchNormalization(
                    momentum=bn_momentum, name=f"decoder_stage{stage}_skip_bn")(tensor)
                for stage, tensor in skips.items()
            }
            x = layers.BatchNormalization(momentum=bn_momentum, name="bottleneck_input_bn")(x)
        if pool:
            x = layers.MaxPooling2D(2, name="bottleneck_pool")(x)
        x = conv_relu(x, bottleneck_filters, 3, "bottleneck_conv1", decoder_batchnorm,
                      bn_momentum)
        x = conv_relu(x, bottleneck_filters, 3, "bottleneck_conv2", decoder_batchnorm,
                      bn_momentum)
        for stage, filters in enumerate(decoder_filters, start=1):
            x = decoder_stage(x, skips.get(stage), filters, f"decoder_stage{stage}", decoder,
                              decoder_batchnorm, bn_momentum)
        x = layers.Conv2D(num_classes, 1, name="head_conv")(x)
        if needs_pad:
            x = CropToReference(name="head_crop")([x, encoder.inputs[0]])
        if activation == "auto":
            activation = "softmax" if num_classes > 1 else "sigmoid"
        outputs = layers.Activation(
            activation or "linear", dtype="float32", name="head_activation"
        )(x)
    model = keras.Model(encoder.inputs[0], outputs, name=name or f"{backbone.lower()}_unet")
    if weights is not None:
        from vggunet.models.weights import load_backbone_weights

        load_backbone_weights(model, backbone, weights)
    if freeze is not None:
        from vggunet.transfer.freezing import freeze as freeze_layers

        freeze_layers(model, freeze, train_bn=train_bn)
    return model


build_encoder_unet: Callable[..., keras.Model] = build_vgg_unet
"""Alias of `build_vgg_unet` for non-VGG backbones (`build_encoder_unet("resnet50", ...)`)."""


def build_unet(
    input_size: Sequence[int] = (96, 128, 3), n_filters: int = 32, n_classes: int = 23
) -> keras.Model:
    """The 2D U-Net of the Coursera lab (C4W3), built from `conv_block` and `upsampling_block`.

    Four encoder blocks (dropout 0.3 on the fourth) and a bottleneck block with dropout 0.3,
    four transpose-conv decoder blocks, a 3×3 conv and a 1×1 conv head producing logits.
    With the defaults `count_params()` is exactly 8,640,471.

    Args:
        input_size: `(H, W, C)`; H and W must be multiples of 16.
        n_filters: filters of the first block (doubled at each level).
        n_classes: output channels (logits, no activation).

    Returns:
        The uncompiled `keras.Model`.

    Example:
        >>> build_unet().count_params()
        8640471
    """
    _check_positive_int(n_filters, "n_filters")
    _check_positive_int(n_classes, "n_classes")
    if len(input_size) != 3:
        raise ArgumentError(f"input_size must be (height, width, channels), got {tuple(input_size)!r}.")
    for label, dim in zip(("height", "width"), input_size[:2]):
        if dim is not None and (int(dim) < 16 or int(dim) % 16):
            raise ArgumentError(
                f"input {label} {dim} must be a positive multiple of 16 (the lab U-Net pools "
                f"4 times and has no padding layer); got input_size={tuple(input_size)!r}."
            )
    inputs = keras.Input(input_size, name="input_image")
    cblock1 = conv_block(inputs, n_filters, name="encoder_block1")
    cblock2 = conv_block(cblock1[0], n_filters * 2, name="encoder_block2")
    cblock3 = conv_block(cblock2[0], n_filters * 4, name="encoder_block3")
    cblock4 = conv_block(cblock3[0], n_filters * 8, dropout_prob=0.3, name="encoder_block4")
    cblock5 = conv_block(
        cblock4[0], n_filters * 16, dropout_prob=0.3, max_pooling=False, name="bottleneck"
    )
    ublock6 = upsampling_block(cblock5[0], cblock4[1], n_filters * 8, name="decoder_block1")
    ublock7 = upsampling_block(ublock6, cblock3[1], n_filters * 4, name="decoder_block2")
    ublock8 = upsampling_block(ublock7, cblock2[1], n_filters * 2, name="decoder_block3")
    ublock9 = upsampling_block(ublock8, cblock1[1], n_filters, name="decoder_block4")
    conv9 = layers.Conv2D(
        n_filters, 3, activation="relu", padding="same", kernel_initializer="he_normal",
        name="decoder_final_conv",
    )(ublock9)
    conv10 = layers.Conv2D(n_classes, 1, padding="same", name="head_conv")(conv9)
    return keras.Model(inputs=inputs, outputs=conv10, name="unet")
