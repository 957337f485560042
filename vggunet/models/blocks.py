"""Building blocks: the 2D U-Net lab's `conv_block`/`upsampling_block` and the decoder stages.

Each block takes an optional `name` prefix; vggunet's builders pass one so that every layer's name
says where it sits (`decoder_stage1_up`, ...), which is also how `layer_table` assigns roles.
"""

from __future__ import annotations

from typing import Any

from keras import layers

from vggunet import choices
from vggunet.checks import check_choice
from vggunet.models.layers import CropOrPadToReference

DECODERS = choices.DECODERS


def _named(prefix: str | None, suffix: str) -> str | None:
    return f"{prefix}_{suffix}" if prefix else None


def conv_block(
    inputs: Any,
    n_filters: int = 32,
    dropout_prob: float = 0.0,
    max_pooling: bool = True,
    *,
    name: str | None = None,
) -> tuple[Any, Any]:
    """The 2D U-Net lab's encoder block: two 3×3 ReLU convs, optional dropout and 2×2 max-pool.

    Args:
        inputs: input tensor.
        n_filters: filters of both convolutions.
        dropout_prob: dropout rate after the convolutions (0 = no Dropout layer).
        max_pooling: add a MaxPooling2D(2) for the next block.
        name: optional prefix for layer names.

    Returns:
        `(next_layer, skip_connection)`: the pooled tensor (or the conv output when
        `max_pooling=False`) and the tensor to skip-connect to the decoder.

    Example:
        >>> import keras
        >>> inputs = keras.Input((32, 32, 3))
        >>> next_layer, skip = conv_block(inputs, 8, dropout_prob=0.3, name="encoder_block1")
        >>> tuple(next_layer.shape), tuple(skip.shape)
        ((None, 16, 16, 8), (None, 32, 32, 8))
    """
    conv = layers.Conv2D(
        n_filters, 3, activation="relu", padding="same", kernel_initializer="he_normal",
        name=_named(name, "conv1"),
    )(inputs)
    conv = layers.Conv2D(
        n_filters, 3, activation="relu", padding="same", kernel_initializer="he_normal",
        name=_named(name, "conv2"),
    )(conv)
    if dropout_prob > 0:
        conv = layers.Dropout(dropout_prob, name=_named(name, "dropout"))(conv)
    next_layer = (layers.MaxPooling2D((2, 2), name=_named(name, "pool"))(conv) if max_pooling
                  else conv)
    return next_layer, conv


def upsampling_block(
    expansive_input: Any,
    contractive_input: Any,
    n_filters: int = 32,
    *,
    name: str | None = None,
) -> Any:
    """The 2D U-Net lab's decoder block: 3×3 stride-2 transpose conv, concat, two 3×3 ReLU convs.

    Args:
        expansive_input: the tensor from the previous (lower resolution) block.
        contractive_input: the skip tensor from the encoder.
        n_filters: filters of all three convolutions.
        name: optional prefix for layer names.

    Returns:
        The block's output tensor.
    """
    up = layers.Conv2DTranspose(
        n_filters, 3, strides=2, padding="same", name=_named(name, "up")
    )(expansive_input)
    merge = layers.Concatenate(axis=3, name=_named(name, "concat"))([up, contractive_input])
    conv = layers.Conv2D(
        n_filters, 3, activation="relu", padding="same", kernel_initializer="he_normal",
        name=_named(name, "conv1"),
    )(merge)
    return layers.Conv2D(
        n_filters, 3, activation="relu", padding="same", kernel_initializer="he_normal",
        name=_named(name, "conv2"),
    )(conv)


# Decoder-side BatchNorm momentum: PyTorch's (and smp's) 0.1 update rate. Keras's default 0.99
# keeps the moving statistics near their start values (mean 0, variance 1) for hundreds of steps,
# which on ISBI turned a well-trained fine-tuned model into 0.597 held-out pixel error
# (BENCHMARKS.md, "Stale BatchNorm statistics").
DECODER_BN_MOMENTUM = 0.9


def conv_relu(
    x: Any, filters: int, kernel_size: int, name: str, batchnorm: bool = False,
    bn_momentum: float = DECODER_BN_MOMENTUM,
) -> Any:
    """Conv2D (same padding) + ReLU, or Conv2D + BatchNorm + ReLU when `batchnorm`.

    Args:
        x: input tensor.
        filters: output channels.
        kernel_size: square kernel size.
        name: layer name of the conv; BatchNorm/ReLU get `_bn`/`_relu` appended.
        batchnorm: insert BatchNormalization between conv and ReLU (the conv then has no bias).
        bn_momentum: momentum of that BatchNorm's moving statistics.

    Returns:
        The activated tensor.
    """
    if not batchnorm:
        return layers.Conv2D(
            filters, kernel_size, padding="same", activation="relu",
            kernel_initializer="he_normal", name=name,
        )(x)
    x = layers.Conv2D(
        filters, kernel_size, padding="same", use_bias=False,
        kernel_initializer="he_normal", name=name,
    )(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def decoder_stage(
    x: Any,
    skip: Any | None,
    filters: int,
    name: str,
    decoder: str = "upsampling",
    batchnorm: bool = False,
    bn_momentum: float = DECODER_BN_MOMENTUM,
    *,
    fit_to_skip: bool = False,
) -> Any:
    """One decoder stage: upsample ×2, optionally concatenate a skip, two 3×3 convs.

    `decoder="upsampling"`: UpSampling2D(2) → Conv2D(filters, 2×2, ReLU) → concat → 2 convs.
    `decoder="transpose"`: Conv2DTranspose(filters, 3×3, strides 2) → concat → 2 convs.
    With `fit_to_skip`, the upsampled map is centre-cropped or edge-padded to the skip's H×W
    before the concatenation (`CropOrPadToReference`, `<name>_fit`): for valid-padding
    backbones, whose skips are not exactly twice the size of the map below them.

    Args:
        x: the lower-resolution tensor.
        skip: the encoder tensor at twice the resolution, or None for a stage without skip.
        filters: channels of the stage.
        name: prefix, e.g. `"decoder_stage1"`.
        decoder: `"upsampling"` or `"transpose"`.
        batchnorm: BatchNorm after each 3×3 conv.
        bn_momentum: momentum of those BatchNorms' moving statistics.
        fit_to_skip: match the upsampled map's H×W to the skip's.

    Returns:
        The stage output.

    Example:
        >>> import keras
        >>> x, skip = keras.Input((8, 8, 16)), keras.Input((16, 16, 4))
        >>> tuple(decoder_stage(x, skip, 8, "decoder_stage1").shape)
        (None, 16, 16, 8)
    """
    if decoder == "upsampling":
        x = layers.UpSampling2D(2, name=f"{name}_up")(x)
        x = layers.Conv2D(
            filters, 2, padding="same", activation="relu",
            kernel_initializer="he_normal", name=f"{name}_upconv",
        )(x)
    elif decoder == "transpose":
        x = layers.Conv2DTranspose(
            filters, 3, strides=2, padding="same", kernel_initializer="he_normal",
            name=f"{name}_up",
        )(x)
    else:
        check_choice(decoder, DECODERS, "decoder")
    if skip is not None:
        if fit_to_skip:
            x = CropOrPadToReference(name=f"{name}_fit")([x, skip])
        x = layers.Concatenate(axis=-1, name=f"{name}_concat")([x, skip])
    x = conv_relu(x, filters, 3, f"{name}_conv1", batchnorm, bn_momentum)
    return conv_relu(x, filters, 3, f"{name}_conv2", batchnorm, bn_momentum)
