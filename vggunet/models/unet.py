"""`build_vgg_unet`: a U-Net on a pretrained `keras.applications` encoder.

Graph: raw pixels → (grey→RGB) → backbone preprocessing → reflect-pad to a multiple of
`2**len(decoder_filters)` → backbone (no dense head), tapped at `skip_layers` → bottleneck
(MaxPooling2D when its source sits at the deepest skip's resolution, as for VGG, then two 3×3
convs with `bottleneck_filters`) → one decoder stage per entry of `decoder_filters` (upsample
×2, concat the skip of that resolution, two 3×3 convs) → 1×1 conv head → crop back to the
input's H×W → activation in float32. Valid-padding backbones (Xception, Inception, NASNet),
whose feature maps are not exact halvings, are not padded: each decoder stage crops or
edge-pads its upsampled map to its skip's H×W (`decoder_stage*_fit`) and the head its output
to the input's (`head_fit`).

The builder runs in named steps: check the arguments, build the encoder (`build_encoder`),
plan which skip feeds which decoder stage (from measured strides, or strides counted in the
graph for valid-padding backbones; not from the backbone's family), then the bottleneck, the
decoder stages and the head; it records every layer's role and returns a `SegmentationModel`,
then loads backbone weights and applies a freeze spec. A keras-hub backbone
(`vggunet.models.hub`) replaces the encoder step and brings its own weights.

`skip_batchnorm`: pretrained encoders can emit features whose channel scales differ by 10³
(HED's VGG16: std 49 at `block1_conv2`, max ~900); a BatchNorm after the decoder's convs does
not repair that input conditioning, a decoder-side BatchNorm on each skip does.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import keras
from keras import layers

from vggunet.checks import check_choice, check_int, check_number
from vggunet.errors import ArgumentError
from vggunet.models.blocks import DECODER_BN_MOMENTUM, DECODERS, conv_relu, decoder_stage
from vggunet.models.encoder import build_encoder, check_pretrained_channels, resolve_skip_layers
from vggunet.models.hub import backbone_name, hub_unet_encoder, is_hub_backbone
from vggunet.models.layers import CropOrPadToReference, CropToReference
from vggunet.models.model import SegmentationModel
from vggunet.models.precision import dtype_policy
from vggunet.models.reference import build_unet  # noqa: F401  its old home
from vggunet.models.registry import EncoderSpec, LayerRef, get_encoder_spec
from vggunet.models.weights import load_backbone_weights
from vggunet.transfer.freezing import freeze as freeze_layers

ACTIVATIONS = ("auto", "softmax", "sigmoid", None)


def _stage_of_level(level: float, n_stages: int, layer: str) -> int:
    """Decoder stage (1 = deepest) whose output has stride `2**level`, for a skip from `layer`."""
    if level != int(level) or not 0 <= level < n_stages:
        raise ArgumentError(
            f"skip layer {layer!r} has stride {2 ** level:g} relative to the input; with "
            f"{n_stages} decoder stages skips must have stride 1, 2, ..., {2 ** (n_stages - 1)}."
        )
    return n_stages - int(level)


def _log2_stride(layer: keras.layers.Layer) -> int:
    """How many times a layer halves its input (2 for a stride-4 conv); nested models sum."""
    if isinstance(layer, keras.Model):
        return sum(_log2_stride(inner) for inner in layer.layers)
    strides = getattr(layer, "strides", None)
    if isinstance(strides, (tuple, list)) and strides and isinstance(strides[0], int):
        return int(round(math.log2(max(strides))))
    return 0


def downsampling_levels(model: keras.Model) -> dict[str, int]:
    """log2 of each layer's stride relative to the input, counted in the graph.

    Valid-padding backbones shrink their feature maps by a few pixels besides each halving, so
    measured sizes give strides such as 44.8 for 32 at 224 px, and 25 for 16 at 75 px, where no
    rounding tells the levels apart. Counting the strided layers on the way from the input
    does, at any input size.

    Args:
        model: a Functional model (e.g. an `Encoder`).

    Returns:
        `{layer_name: level}`; a layer's level is the largest of its inputs' levels plus the
        halvings it does itself (its `strides`).

    Example:
        >>> inputs = keras.Input((None, None, 3))
        >>> x = keras.layers.Conv2D(4, 3, strides=2, name="conv")(inputs)
        >>> x = keras.layers.MaxPooling2D(3, strides=2, name="pool")(x)
        >>> levels = downsampling_levels(keras.Model(inputs, x))
        >>> levels["conv"], levels["pool"]
        (1, 2)
    """
    producers = {id(tensor): layer.name for layer in model.layers
                 for tensor in keras.tree.flatten(layer.output)}
    levels: dict[str, int] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            levels[layer.name] = 0
            continue
        sources = [producers.get(id(t)) for t in keras.tree.flatten(layer.input)]
        base = max((levels.get(name, 0) for name in sources if name), default=0)
        levels[layer.name] = base + _log2_stride(layer)
    return levels


def _measured_levels(encoder: keras.Model, n_stages: int) -> list[float]:
    """log2 of the stride of each encoder output, from its size at a probe input size."""
    multiple = 2 ** n_stages
    _, height, width, channels = encoder.inputs[0].shape
    # Static sizes must be probed as they are; free ones with a multiple of the total stride
    # large enough for the backbone's deeper layers (up to stride 32 even with few stages).
    height = height or max(2 * multiple, 256)
    width = width or max(2 * multiple, 256)
    shapes = encoder.compute_output_shape((1, height, width, channels))
    probe = -(-height // multiple) * multiple  # the height after PadToMultiple
    shapes = shapes if isinstance(shapes, list) else [shapes]
    return [math.log2(probe / shape[1]) for shape in shapes]


def _plan_skips(
    encoder: keras.Model, n_stages: int, counted: bool = False
) -> tuple[dict[int, Any], bool]:
    """Assigns each skip tensor to the decoder stage of its resolution.

    Strides are measured from output sizes (exact for same-padding backbones, whose input is
    padded to a multiple of the total stride), or, with `counted`, counted in the graph
    (valid-padding backbones; see `downsampling_levels`).

    Returns:
        `({stage: skip_tensor}, pool_before_bottleneck)`.
    """
    if counted:
        counts = downsampling_levels(encoder)
        levels = [float(counts[name]) for name in encoder.output_names]
    else:
        levels = _measured_levels(encoder, n_stages)
    *skip_levels, source_level = levels
    stages: dict[int, Any] = {}
    for name, level, tensor in zip(encoder.output_names, skip_levels, encoder.outputs):
        stage = _stage_of_level(level, n_stages, name)
        if stage in stages:
            raise ArgumentError(
                f"skip layers {stages[stage][0]!r} and {name!r} have the same resolution; "
                f"give one skip layer per resolution."
            )
        stages[stage] = (name, tensor)
    if source_level not in (n_stages, n_stages - 1):
        raise ArgumentError(
            f"the bottleneck source has stride {2 ** source_level:g}; with {n_stages} decoder "
            f"stages it must have stride {2 ** (n_stages - 1)} (pooled once more) or "
            f"{2 ** n_stages}."
        )
    return {s: t for s, (_, t) in stages.items()}, source_level == n_stages - 1


def _check_arguments(
    num_classes: Any, bottleneck_filters: Any, bn_momentum: Any, decoder: Any, activation: Any,
    decoder_filters: Sequence[int],
) -> tuple[int, ...]:
    """Checks the decoder-side arguments; returns `decoder_filters` as a tuple."""
    check_int(num_classes, "num_classes")
    check_int(bottleneck_filters, "bottleneck_filters")
    check_number(bn_momentum, "bn_momentum", low=0.0, high=1.0, high_open=True)
    check_choice(decoder, DECODERS, "decoder")
    check_choice(activation, ACTIVATIONS, "activation")
    decoder_filters = tuple(decoder_filters)
    if not decoder_filters:
        raise ArgumentError("decoder_filters must name at least one decoder stage, got ().")
    for filters in decoder_filters:
        check_int(filters, "each entry of decoder_filters")
    return decoder_filters


def _encoder(
    spec: EncoderSpec, input_shape: Sequence[int | None],
    skip_layers: Sequence[LayerRef] | None, bottleneck_source: LayerRef | None, n_stages: int,
    precision: str, weights: Any,
) -> tuple[keras.Model, str | None]:
    """The encoder, reflect-padded when H or W may be no multiple of the total stride; its
    weights are loaded later, into the whole model, once `weights` is known to fit.

    Returns:
        `(encoder, how the head restores the input's H×W)`: `"crop"` after padding, `"fit"`
        for valid-padding backbones (never padded), None when nothing changed the size.
    """
    check_pretrained_channels(input_shape, weights)
    multiple = 2 ** n_stages
    needs_pad = not spec.valid_padding and any(
        d is None or int(d) % multiple for d in input_shape[:2])
    encoder = build_encoder(
        spec, resolve_skip_layers(spec, skip_layers), weights=None, input_shape=input_shape,
        bottleneck_source=bottleneck_source, pad_to_multiple=multiple if needs_pad else None,
        precision=precision,
    )
    return encoder, "fit" if spec.valid_padding else "crop" if needs_pad else None


def _standardise_skips(skips: dict[int, Any], bn_momentum: float) -> dict[int, Any]:
    """A decoder-side BatchNorm on every skip tensor (`skip_batchnorm=True`)."""
    return {
        stage: layers.BatchNormalization(
            momentum=bn_momentum, name=f"decoder_stage{stage}_skip_bn")(tensor)
        for stage, tensor in skips.items()
    }


def _bottleneck(
    x: Any, filters: int, pool: bool, batchnorm: bool, bn_momentum: float, input_bn: bool
) -> Any:
    """[BatchNorm on the input] → [MaxPooling2D] → two 3×3 convs, all named `bottleneck*`."""
    if input_bn:
        x = layers.BatchNormalization(momentum=bn_momentum, name="bottleneck_input_bn")(x)
    if pool:
        x = layers.MaxPooling2D(2, name="bottleneck_pool")(x)
    x = conv_relu(x, filters, 3, "bottleneck_conv1", batchnorm, bn_momentum)
    return conv_relu(x, filters, 3, "bottleneck_conv2", batchnorm, bn_momentum)


def _decoder(
    x: Any, skips: dict[int, Any], decoder_filters: Sequence[int], decoder: str,
    batchnorm: bool, bn_momentum: float, fit_to_skip: bool,
) -> Any:
    """One `decoder_stage` per entry of `decoder_filters`, deepest first."""
    for stage, filters in enumerate(decoder_filters, start=1):
        x = decoder_stage(x, skips.get(stage), filters, f"decoder_stage{stage}", decoder,
                          batchnorm, bn_momentum, fit_to_skip=fit_to_skip)
    return x


def _head(x: Any, num_classes: int, activation: str | None, inputs: Any,
          restore: str | None) -> Any:
    """1×1 conv to classes, [crop or fit back to the input's H×W], activation in float32."""
    x = layers.Conv2D(num_classes, 1, name="head_conv")(x)
    if restore == "crop":
        x = CropToReference(name="head_crop")([x, inputs])
    elif restore == "fit":
        x = CropOrPadToReference(name="head_fit")([x, inputs])
    if activation == "auto":
        activation = "softmax" if num_classes > 1 else "sigmoid"
    return layers.Activation(activation or "linear", dtype="float32",
                             name="head_activation")(x)


def _recorded_model(encoder: keras.Model, outputs: Any, name: str) -> SegmentationModel:
    """The U-Net, with the encoder's record: roles (the decoder side's layers get theirs from
    their names), backbone numbering, stages and minimum input size."""
    return SegmentationModel(encoder.inputs[0], outputs, name=name, roles=encoder.roles,
                             backbone_layers=encoder.backbone_layers, stages=encoder.stages,
                             min_input_size=encoder.min_input_size)


def _model_stem(backbone: Any, spec: EncoderSpec | None) -> str:
    """The model's name before `_unet`: the registry key, or `hub_<family>` for keras-hub."""
    return backbone_name(backbone) if spec is None else spec.name or "custom"


def _load_and_freeze(
    model: keras.Model, spec: EncoderSpec | None, weights: Any, freeze: Any, train_bn: bool
) -> None:
    if weights is not None:
        load_backbone_weights(model, spec, weights)
    if freeze is not None:
        freeze_layers(model, freeze, train_bn=train_bn)


def build_vgg_unet(
    backbone: str = "vgg16",
    input_shape: Sequence[int | None] = (None, None, 3),
    num_classes: int = 2,
    weights: str | None = "imagenet",
    *,
    skip_layers: Sequence[LayerRef] | None = None,
    bottleneck_source: LayerRef | None = None,
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
) -> SegmentationModel:
    """Builds a U-Net on a pretrained `keras.applications` encoder (graph: module docstring).

    Args:
        backbone: a key of `ENCODERS` (`"vgg16"`, `"resnet50"`, `"efficientnetb0"`,
            `"convnexttiny"`, ...; case, `_` and `-` are ignored), an `EncoderSpec`, or a
            keras-hub Backbone/image task with a feature pyramid (`vggunet.models.hub`).
        input_shape: `(H, W, C)`; `(None, None, C)` accepts any H, W >= the backbone's
            `min_input_size` (32 for VGG; NASNet needs fixed H and W).
        num_classes: output channels (classes).
        weights: `"imagenet"`, `None`, or a path to a backbone weights file.
        skip_layers: backbone layers (names or indices) to skip-connect, high to low resolution.
        bottleneck_source: backbone layer (name or index) the bottleneck grows from.
        bottleneck_filters: filters of the two bottleneck convolutions.
        decoder: `"upsampling"` (UpSampling2D + 2×2 conv) or `"transpose"` (Conv2DTranspose 3×3).
        decoder_filters: channels per decoder stage, deepest first; its length sets the number
            of stages (and the total stride, 2**len).
        decoder_batchnorm: BatchNorm after every bottleneck/decoder 3×3 conv.
        skip_batchnorm: BatchNorm (decoder-side, trainable) on every skip tensor and on the
            bottleneck's input: encoder features reach the decoder standardised (module doc).
        bn_momentum: momentum of the decoder-side BatchNorms' moving statistics (default 0.9,
            PyTorch's rate; Keras's 0.99 leaves them stale for hundreds of steps).
        activation: `"auto"` (softmax; sigmoid for 1 class), `"softmax"`, `"sigmoid"`, None.
        freeze: a freeze spec for `vggunet.freeze` (e.g. `"encoder"`, 10, `["block1"]`).
        train_bn: with `freeze`, whether encoder BatchNorm layers may train (default no).
        precision: `"auto"`, `"float32"`, `"mixed_bfloat16"`, `"mixed_float16"`; output float32.
        name: model name (default `"<backbone>_unet"`).

    Returns:
        An uncompiled `SegmentationModel` (a Functional `keras.Model` that records its layer
        roles) mapping (B, H, W, C) raw pixels in [0, 255] to (B, H, W, num_classes).

    Example:
        >>> model = build_vgg_unet("vgg16", input_shape=(64, 96, 3), num_classes=3, weights=None)
        >>> tuple(model.output.shape)
        (None, 64, 96, 3)
        >>> model.roles["block1_conv1"], model.roles["block1_conv2"], model.roles["head_conv"]
        ('encoder', 'skip', 'head')
    """
    hub = is_hub_backbone(backbone)  # a keras-hub backbone brings its taps and its weights
    spec = None if hub else get_encoder_spec(backbone)
    decoder_filters = _check_arguments(num_classes, bottleneck_filters, bn_momentum, decoder,
                                       activation, decoder_filters)
    encoder, restore = (
        hub_unet_encoder(backbone, input_shape, skip_layers, bottleneck_source,
                         len(decoder_filters), precision, weights) if hub else
        _encoder(spec, input_shape, skip_layers, bottleneck_source, len(decoder_filters),
                 precision, weights))
    valid_padding = bool(spec and spec.valid_padding)
    skips, pool = _plan_skips(encoder, len(decoder_filters), counted=valid_padding)
    with dtype_policy(precision):
        if skip_batchnorm:
            skips = _standardise_skips(skips, bn_momentum)
        x = _bottleneck(encoder.outputs[-1], bottleneck_filters, pool, decoder_batchnorm,
                        bn_momentum, input_bn=skip_batchnorm)
        x = _decoder(x, skips, decoder_filters, decoder, decoder_batchnorm, bn_momentum,
                     fit_to_skip=valid_padding)
        outputs = _head(x, num_classes, activation, encoder.inputs[0], restore)
    model = _recorded_model(encoder, outputs, name or f"{_model_stem(backbone, spec)}_unet")
    _load_and_freeze(model, spec, None if hub else weights, freeze, train_bn)
    return model


build_encoder_unet: Callable[..., keras.Model] = build_vgg_unet
"""Alias of `build_vgg_unet` for non-VGG backbones (`build_encoder_unet("resnet50", ...)`)."""
