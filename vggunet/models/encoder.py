"""`build_encoder`: a keras.applications backbone truncated to its skip tensors and bottleneck
source."""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import keras
from keras import layers

from vggunet.checks import check_min_side
from vggunet.errors import ArgumentError
from vggunet.models.hub import build_hub_encoder, is_hub_backbone
from vggunet.models.layers import BackbonePreprocess, PadToMultiple
from vggunet.models.model import Encoder
from vggunet.models.precision import dtype_policy
from vggunet.models.registry import EncoderSpec, LayerRef, get_encoder_spec
from vggunet.models.weights import load_backbone_weights


def _check_input_shape(input_shape: Sequence[int | None], spec: EncoderSpec) -> tuple:
    if len(input_shape) != 3:
        raise ArgumentError(
            f"input_shape must be (height, width, channels), got {tuple(input_shape)!r}."
        )
    height, width, channels = input_shape
    if channels is None or int(channels) < 1:
        raise ArgumentError(f"input_shape needs a known channel count >= 1, got {channels!r}.")
    min_size = spec.min_input_size
    if spec.fixed_size and (height is None or width is None):
        raise ArgumentError(
            f"backbone {spec.name!r} needs a fixed input size: its cells choose their padding "
            f"from the static input shape (got input_shape={tuple(input_shape)!r}); give "
            f"input_shape=(H, W, {channels}) with H, W >= {min_size}, e.g. (224, 224, {channels})."
        )
    # Every backbone pools 5 times; valid-padding ones also lose borders on the way, and some
    # need more than 32 px for that (Inception: 75).
    why = ("the network pools 5 times and needs" if min_size == 32
           else f"backbone {spec.name!r} (valid-padding convolutions) needs")
    check_min_side(input_shape, min_size, why)
    return tuple(input_shape)


def _is_layer_ref(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def resolve_skip_layers(
    spec: EncoderSpec, skip_layers: Sequence[LayerRef] | None
) -> tuple[LayerRef, ...]:
    """The skip layers to use: the registry default or the user's list.

    Args:
        spec: the backbone's registry entry.
        skip_layers: None, or a list of layer names and/or indices in the backbone's own
            `layers` list (see `EncoderSpec`).

    Returns:
        A tuple of names and indices (indices are resolved to names by `build_encoder`).
    """
    if skip_layers is None:
        return spec.skip_layers
    if isinstance(skip_layers, str) or not all(_is_layer_ref(n) for n in skip_layers):
        raise ArgumentError(f"skip_layers must be a list of layer names (or indices in the "
                            f"backbone's layers), got {skip_layers!r}.")
    return tuple(skip_layers)


def _layer_names(spec: EncoderSpec, backbone_layers: Sequence[str],
                 refs: Sequence[LayerRef], argument: str) -> tuple[str, ...]:
    """Names for layer references: an int `i` is the backbone's own layer `i` (`-1`: the last)."""
    names = []
    for ref in refs:
        if isinstance(ref, str):
            names.append(ref)
        elif isinstance(ref, int) and not isinstance(ref, bool) and (
                -len(backbone_layers) < ref < 0 or 0 < ref < len(backbone_layers)):
            names.append(backbone_layers[ref])
        else:
            constructor = getattr(spec.constructor, "name", None) or getattr(
                spec.constructor, "__name__", spec.name)
            raise ArgumentError(
                f"{argument}: {ref!r} is no layer of backbone {spec.name!r}; give a layer name "
                f"or an index 1..{len(backbone_layers) - 1} (or -1 for the last) in "
                f"keras.applications.{constructor}(include_top=False).layers."
            )
    return tuple(names)


def check_pretrained_channels(input_shape: Sequence[int | None], weights: Any) -> None:
    """Checks that pretrained `weights` can meet the input's channel count.

    Any known count can: 1 is repeated to RGB inside the model; for 2 and more than 3 the
    pretrained first convolution is tiled over the channels when the weights are loaded
    (`vggunet.models.weights.tile_input_kernel`) and the preprocessing statistics are cycled
    (`BackbonePreprocess`). Only an unknown count (None) is refused.

    Args:
        input_shape: `(H, W, C)`.
        weights: the `weights` argument of a builder.

    Returns:
        None.
    """
    channels = input_shape[-1] if len(input_shape) else None
    if weights is not None and channels is None:
        raise ArgumentError(
            f"Pretrained weights ({weights!r}) need a known number of input channels, got "
            f"input_shape={tuple(input_shape)!r}; give C, e.g. (None, None, 3)."
        )


def _check_layer_names(base: keras.Model, names: Sequence[str], argument: str) -> None:
    valid = [layer.name for layer in base.layers[1:]]
    missing = [name for name in names if name not in valid]
    if missing:
        raise ArgumentError(
            f"{argument}: layer(s) {missing} not found in backbone {base.name!r}. "
            f"Valid layer names: {', '.join(valid)}."
        )


def _check_taps(base: keras.Model, skips: Sequence[str], source: str) -> None:
    """Skip layers and bottleneck source exist and run from high to low resolution."""
    _check_layer_names(base, skips, "skip_layers")
    _check_layer_names(base, [source], "bottleneck_source")
    order = {layer.name: i for i, layer in enumerate(base.layers)}
    in_order = sorted(skips, key=order.__getitem__)
    if list(skips) != in_order:
        raise ArgumentError(
            f"skip_layers must be ordered from high to low resolution (input to output), got "
            f"{list(skips)}; in this backbone the order is {in_order}."
        )
    if skips and order[source] < order[skips[-1]]:
        raise ArgumentError(
            f"bottleneck_source {source!r} comes before the deepest skip layer {skips[-1]!r}; "
            f"it must be at or below it."
        )


def stage_numbers(layer_names: Sequence[str], stage_ends: Sequence[str]) -> dict[str, int]:
    """The stage (1, 2, ...) of each backbone layer, from the last layer of each stage.

    Args:
        layer_names: the backbone's layers in its own order (without its input).
        stage_ends: the last layer of each stage (`EncoderSpec.stage_ends`); empty: no stages.

    Returns:
        `{layer_name: stage}`; layers after the last stage end belong to the last stage.

    Example:
        >>> stage_numbers(["c1", "p1", "c2", "p2", "c3"], ["p1", "p2"])
        {'c1': 1, 'p1': 1, 'c2': 2, 'p2': 2, 'c3': 2}
    """
    if not stage_ends:
        return {}
    stages, stage, last = {}, 1, len(stage_ends)
    ends = set(stage_ends)
    for name in layer_names:
        stages[name] = stage
        if name in ends and stage < last:
            stage += 1
    return stages


def _replaces_rgb_only(spec: EncoderSpec, x: Any) -> bool:
    """Whether the backbone's in-model preprocessing, made for RGB only, gives way to ours
    (`EncoderSpec.rgb_only_preprocessing`) for this input's channel count."""
    return bool(spec.rgb_only_preprocessing) and x.shape[-1] != 3


def _input_side(
    inputs: Any, spec: EncoderSpec, preprocessing: bool, pad_to_multiple: int | None
) -> tuple[Any, list[str]]:
    """Grey to RGB, the backbone's preprocessing and padding: the layers before the backbone.

    Returns:
        `(tensor for the backbone, names of the layers made here)`.
    """
    x, names = inputs, ["input_image"]
    if inputs.shape[-1] == 1:
        x = layers.Concatenate(axis=-1, name="input_gray_to_rgb", dtype="float32")([x, x, x])
        names.append("input_gray_to_rgb")
    if preprocessing:
        # Other channel counts than 3 get the backbone's statistics cycled (BackbonePreprocess).
        mode = spec.rgb_only_preprocessing if _replaces_rgb_only(spec, x) else spec.preprocessing
        x = BackbonePreprocess(mode, name="input_preprocess")(x)
        names.append("input_preprocess")
    if pad_to_multiple:
        x = PadToMultiple(pad_to_multiple, name="input_pad")(x)
        names.append("input_pad")
    return x, names


def build_encoder(
    backbone: str | EncoderSpec = "vgg16",
    skip_layers: Sequence[LayerRef] | None = None,
    weights: str | None = None,
    input_shape: Sequence[int | None] = (None, None, 3),
    *,
    bottleneck_source: LayerRef | None = None,
    preprocessing: bool = True,
    pad_to_multiple: int | None = None,
    precision: str = "auto",
) -> Encoder:
    """Builds a truncated backbone whose outputs are its skip tensors and the bottleneck source.

    This is the feature extractor users otherwise write by hand as
    `keras.Model(base.input, [base.get_layer(n).output for n in names])`, with the dense head
    dropped (`include_top=False`), the backbone's preprocessing inside the model (so it takes
    raw pixels in [0, 255]) and greyscale input repeated to RGB. Its outputs are named after
    the layers they tap, and its layer roles (input, encoder, skip) are recorded.

    Args:
        backbone: a registry name (`"vgg16"`, `"resnet50"`, `"efficientnetb0"`,
            `"convnext_tiny"`, ...: any key of `ENCODERS`, in any case) or an `EncoderSpec`,
            or a keras-hub Backbone / image task with a feature pyramid (handed to
            `vggunet.models.hub.build_hub_encoder`).
        skip_layers: layers to tap, high to low resolution: names, or indices in the
            backbone's own `keras.applications.<Backbone>(include_top=False).layers` (for
            layers Keras names automatically); defaults to the registry's.
        weights: `"imagenet"`, `None` (random init) or a path to a backbone weights file
            (Keras `.weights.h5` or a legacy `*_notop.h5`).
        input_shape: `(H, W, C)`; H and W may be None (except for NASNet, which needs a
            fixed size) and must be at least the backbone's `min_input_size`. C=1 is repeated
            to 3 channels; with pretrained weights, other C than 1 or 3 get the RGB kernel of
            the first convolution tiled over the channels (`tile_input_kernel`).
        bottleneck_source: layer (name or index) the bottleneck grows from; defaults to the
            registry's.
        preprocessing: apply the backbone's `preprocess_input` inside the model.
        pad_to_multiple: when set, reflect-pad H and W up to this multiple before the backbone.
        precision: `"auto"`, `"float32"`, `"mixed_bfloat16"` or `"mixed_float16"`.

    Returns:
        An `Encoder` (a Functional `keras.Model`) with outputs `[*skips, bottleneck_source]`,
        highest resolution first.

    Example:
        >>> enc = build_encoder("vgg16", weights=None, input_shape=(64, 64, 3))
        >>> [tuple(o.shape[1:]) for o in enc.outputs][:2]
        [(64, 64, 64), (32, 32, 128)]
        >>> [o.name for o in enc.outputs]
        ['block1_conv2', 'block2_conv2', 'block3_conv2', 'block4_conv2', 'block5_conv2',
         'block5_conv3']
        >>> enc.roles["input_preprocess"], enc.roles["block1_conv1"], enc.roles["block1_conv2"]
        ('input', 'encoder', 'skip')
    """
    if is_hub_backbone(backbone):  # a keras-hub backbone: its feature pyramid gives the taps
        return build_hub_encoder(backbone, skip_layers, weights, input_shape,
                                 bottleneck_source=bottleneck_source, preprocessing=preprocessing,
                                 pad_to_multiple=pad_to_multiple, precision=precision)
    spec = get_encoder_spec(backbone)
    height, width, channels = _check_input_shape(input_shape, spec)
    check_pretrained_channels(input_shape, weights)
    taps = (*resolve_skip_layers(spec, skip_layers),
            spec.bottleneck_source if bottleneck_source is None else bottleneck_source)

    with dtype_policy(precision):
        inputs = keras.Input(shape=(height, width, channels), name="input_image")
        x, input_names = _input_side(inputs, spec, preprocessing, pad_to_multiple)
        # The shape too: EfficientNetV2 and ConvNeXt choose their in-model preprocessing by
        # `input_shape`'s channels, which Keras otherwise assumes to be 3.
        with warnings.catch_warnings():
            # Keras warns for C not in {1, 3} and, for MobileNetV3, about which ImageNet file
            # suits the input size; vggunet adapts any C and chooses weights files itself.
            warnings.filterwarnings("ignore", message="This model usually expects")
            warnings.filterwarnings("ignore", message="`input_shape` is undefined")
            options = {"include_preprocessing": False} if _replaces_rgb_only(spec, x) else {}
            base = spec.constructor(include_top=False, weights=None, input_tensor=x,
                                    input_shape=tuple(x.shape[1:]), **options)
    # The backbone's own numbering: its input (here, ours) at 0, then its layers in order.
    backbone_layers = ["input_image"] + [layer.name for layer in base.layers
                                         if layer.name not in input_names]
    skips = _layer_names(spec, backbone_layers, taps[:-1], "skip_layers")
    (source,) = _layer_names(spec, backbone_layers, taps[-1:], "bottleneck_source")
    _check_taps(base, skips, source)
    # Recorded by construction: the layers made above are the input side, every other layer
    # comes from the backbone. (Entries for backbone layers below the cut are dropped.)
    roles = {layer.name: "skip" if layer.name in skips else "encoder" for layer in base.layers}
    roles.update(dict.fromkeys(input_names, "input"))
    stage_ends = _layer_names(spec, backbone_layers, spec.stage_ends, "stage_ends")
    outputs = [base.get_layer(name).output for name in (*skips, source)]
    encoder = Encoder(inputs, outputs, name=f"{spec.name or 'custom'}_encoder", roles=roles,
                      backbone_layers=backbone_layers,
                      stages=stage_numbers(backbone_layers[1:], stage_ends),
                      min_input_size=spec.min_input_size)
    if weights is not None:
        load_backbone_weights(encoder, spec, weights)
    return encoder


def encoder_layer_names(backbone: str | EncoderSpec) -> list[str]:
    """Names of all layers of a backbone (without its input layer), in graph order.

    Args:
        backbone: registry name or `EncoderSpec`.

    Returns:
        The layer names, e.g. `["block1_conv1", ..., "block5_pool"]` for VGG16.
    """
    spec = get_encoder_spec(backbone)
    base = spec.constructor(include_top=False, weights=None, input_shape=(None, None, 3))
    return [layer.name for layer in base.layers[1:]]
