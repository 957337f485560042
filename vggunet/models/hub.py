"""keras-hub backbones as U-Net encoders (the optional extra `vggunet[hub]`, Python >= 3.11).

keras-hub's image backbones (`keras_hub.models.ResNetBackbone`, `EfficientNetBackbone`,
`CSPNetBackbone`, `DenseNetBackbone`, ...) expose a feature pyramid, `backbone.pyramid_outputs`
(`{"P2": tensor, ...}`). vggunet taps it as it taps a registry backbone's skip layers: the
deepest level is the bottleneck source and every other level a skip connection, each feeding the
decoder stage of its stride. Strides are measured, not read from the keys: keras-hub's CSPNet
calls its stride-2 level `P2` and MiT its stride-4 level `P1`.

The backbone's layers are copied (rebuilt from their configs, weights copied) and called on the
model's own input side (grey to RGB, preprocessing, reflect padding), so the result is one flat
Functional graph as with `keras.applications` backbones: every backbone layer is a layer of the
model with its role (`encoder`/`skip`), its stage (the pyramid levels are the stages, for
`top_blocks` and `up_to`) and its index in `backbone.layers` (`backbone_layers`) recorded. The
backbone object given is neither changed nor shared.

Preprocessing: the model takes raw [0, 255] pixels. A keras-hub backbone does not carry its
preprocessing (keras-hub keeps it in the preset's `ImageConverter`), so by default the model
applies the ImageNet mean/std normalisation (`"torch"` mode) that keras-hub's ImageNet presets
ported from timm use. To use a preset's exact preprocessing pass an image task instead of the
bare backbone (`keras_hub.models.ImageClassifier.from_preset(name)`: its backbone and its
converter's scale and offset are used), or `preprocessing=converter` to `build_hub_encoder`.
The converter's resizing is never applied: the U-Net keeps the image's size.

Weights: the backbone's own (pretrained from `from_preset`, random from a constructor);
`weights=` may name a `.weights.h5` file of the same backbone (`backbone.save_weights`), loaded
into a copy first.

Saving: `.keras` files of these models load in safe mode without `custom_objects`: Keras imports
keras-hub's modules itself when a file names them, so keras-hub must be installed where the file
is loaded (`import keras_hub` is not needed).

Precision: `precision` sets vggunet's layers (input side, bottleneck, decoder, head); the
backbone's layers keep the dtype policy it was built with (float32 unless keras-hub's `dtype=`
said otherwise, e.g. `from_preset(name, dtype="mixed_bfloat16")`). Its `.keras` files predict
the same after loading under the global policy the backbone was built with (float32 unless
set): some keras-hub layers (EfficientNet's `MBConvBlock`) give their sublayers the global
policy rather than their own.

Not supported: backbones without a feature pyramid, and backbones whose layers cannot be rebuilt
from their configs (keras-hub 0.32's MiT: `HierarchicalTransformerEncoder`), which a `.keras` file
could not load either; both raise an `ArgumentError` that names the backbone or layer.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Sequence

import keras

from vggunet.checks import check_min_side, did_you_mean
from vggunet.errors import ArgumentError, MissingFileError, WeightsError
from vggunet.models.layers import PREPROCESSING_MODES, BackbonePreprocess, PadToMultiple
from vggunet.models.model import Encoder
from vggunet.models.precision import PRECISIONS, dtype_policy
from vggunet.models.roles import tensor_producers

# Height and width at which strides are measured when the backbone takes any size.
_PROBE_SIZE = 256
# The working examples, named in error messages.
_SUPPORTED = "ResNet, EfficientNet, CSPNet, DenseNet"


@dataclasses.dataclass(frozen=True)
class PyramidLevel:
    """One level of a keras-hub backbone's feature pyramid.

    Attributes:
        key: its key in `backbone.pyramid_outputs` (`"P2"`).
        layer: the backbone layer whose output it is.
        stride: input size / level size (2, 4, ..., 32), measured.
        channels: its channel count.
    """

    key: str
    layer: str
    stride: float
    channels: int


def is_hub_backbone(obj: Any) -> bool:
    """Whether `obj` is a keras-hub backbone, or a keras-hub task holding one.

    keras-hub is not imported here: objects of its classes exist only once it is.

    Args:
        obj: anything passed as `backbone=`.

    Returns:
        True for a `keras_hub.models.Backbone` or `keras_hub.models.Task`.

    Example:
        >>> is_hub_backbone("vgg16")
        False
    """
    hub = sys.modules.get("keras_hub")
    return hub is not None and isinstance(obj, (hub.models.Backbone, hub.models.Task))


def split_hub_model(model: Any) -> tuple[Any, Any]:
    """The backbone and the image converter of a keras-hub backbone or image task.

    Args:
        model: a `keras_hub.models.Backbone`, or a task such as
            `keras_hub.models.ImageClassifier` (whose `preprocessor.image_converter` holds the
            preset's preprocessing).

    Returns:
        `(backbone, image_converter or None)`.
    """
    if not is_hub_backbone(model):
        raise ArgumentError(f"expected a keras-hub Backbone or task, got {type(model).__name__}.")
    if isinstance(model, sys.modules["keras_hub"].models.Task):
        preprocessor = getattr(model, "preprocessor", None)
        return model.backbone, getattr(preprocessor, "image_converter", None)
    return model, None


def backbone_name(model: Any) -> str:
    """The name vggunet gives models built on a keras-hub backbone: `hub_<family>`.

    Args:
        model: a keras-hub backbone or task.

    Returns:
        E.g. `"hub_resnet"` for a `ResNetBackbone`; builders append `_encoder` / `_unet`.
    """
    backbone, _ = split_hub_model(model)
    family = type(backbone).__name__.removesuffix("Backbone").lower()
    return f"hub_{family or 'backbone'}"


def pyramid_levels(model: Any) -> list[PyramidLevel]:
    """A keras-hub backbone's feature pyramid, shallowest level first, with measured strides.

    Args:
        model: a keras-hub backbone or image task.

    Returns:
        One `PyramidLevel` per entry of `backbone.pyramid_outputs`, sorted by stride.
    """
    backbone, _ = split_hub_model(model)
    pyramid = dict(getattr(backbone, "pyramid_outputs", None) or {})
    if not pyramid:
        raise ArgumentError(
            f"keras-hub backbone {backbone.name!r} ({type(backbone).__name__}) has no feature "
            f"pyramid (`pyramid_outputs` is empty), so it has nothing to skip-connect; use one "
            f"that has: {_SUPPORTED}, ...")
    producers = tensor_producers(backbone)
    missing = [key for key, tensor in pyramid.items() if id(tensor) not in producers]
    if missing:
        raise ArgumentError(
            f"pyramid level(s) {missing} of keras-hub backbone {backbone.name!r} are not the "
            f"output of a layer called once; vggunet cannot tap them.")
    _, height, width, channels = backbone.inputs[0].shape
    height, width = height or _PROBE_SIZE, width or _PROBE_SIZE
    features = keras.Model(backbone.inputs[0], list(pyramid.values()))
    shapes = features.compute_output_shape((1, height, width, channels))
    shapes = shapes if len(pyramid) > 1 else [shapes]  # one output: a bare shape
    levels = [PyramidLevel(key, producers[id(tensor)].name, height / shape[1], int(shape[-1]))
              for (key, tensor), shape in zip(pyramid.items(), shapes)]
    return sorted(levels, key=lambda level: level.stride)


def _resolve_taps(
    backbone: Any, levels: Sequence[PyramidLevel], skip_layers: Sequence[str] | None,
    bottleneck_source: str | None,
) -> tuple[tuple[str, ...], str]:
    """Skip layer names and the bottleneck source: pyramid levels by default.

    Returns:
        `(skip layer names, high to low resolution; source layer name)`.
    """
    by_key = {level.key: level.layer for level in levels}
    order = {layer.name: i for i, layer in enumerate(backbone.layers)}

    def layer_of(item: Any, argument: str) -> str:
        name = by_key.get(item, item) if isinstance(item, str) else None
        if name not in order:
            raise ArgumentError(
                f"{argument}: {item!r} is neither a pyramid level ({', '.join(by_key)}) nor a "
                f"layer of keras-hub backbone {backbone.name!r}.{did_you_mean(item, order)}")
        return name

    source = layer_of(bottleneck_source or levels[-1].key, "bottleneck_source")
    if skip_layers is None:
        skips = tuple(level.layer for level in levels if order[level.layer] < order[source])
    elif isinstance(skip_layers, str):
        raise ArgumentError(f"skip_layers must be a list of pyramid levels or layer names, got "
                            f"{skip_layers!r}.")
    else:
        skips = tuple(layer_of(item, "skip_layers") for item in skip_layers)
    in_order = sorted(skips, key=order.__getitem__)
    if list(skips) != in_order or (skips and order[source] < order[skips[-1]]):
        raise ArgumentError(
            f"skip_layers must run from high to low resolution and end at or above the "
            f"bottleneck source {source!r}; got {list(skips)}, in backbone order {in_order}.")
    return skips, source


def _check_input_shape(input_shape: Sequence[int | None], channels: int, min_size: int) -> tuple:
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[-1] not in (1, channels):
        raise ArgumentError(
            f"input_shape must be (height, width, channels) with {channels} channels (the "
            f"keras-hub backbone's) or 1 (repeated), got {shape!r}. For other channel counts "
            f"build the backbone with image_shape=(None, None, C).")
    check_min_side(shape, min_size, f"the backbone's deepest pyramid level has stride "
                                    f"{min_size:g}, so it needs")
    return shape


def _preprocess_layer(preprocessing: Any, converter: Any, channels: int) -> Any:
    """The preprocessing layer: a vggunet mode, or a keras-hub converter's scale and offset."""
    if preprocessing is True:
        preprocessing = converter or ("torch" if channels == 3 else "tf")
    if preprocessing is False or preprocessing is None:
        return None
    if isinstance(preprocessing, str):
        return BackbonePreprocess(preprocessing, name="input_preprocess")
    if not (hasattr(preprocessing, "scale") and hasattr(preprocessing, "offset")):
        raise ArgumentError(
            f"preprocessing must be True, False, one of {PREPROCESSING_MODES} or a keras-hub "
            f"ImageConverter; got {preprocessing!r}.")
    scale, offset = preprocessing.scale, preprocessing.offset
    for label, value in (("scale", scale), ("offset", offset)):
        if isinstance(value, (list, tuple)) and len(value) != channels:
            raise ArgumentError(f"the image converter's {label} {value!r} has {len(value)} "
                                f"entries; the backbone takes {channels} channels.")
    # Rescaling keeps Keras's own class, so files need nothing registered; float32 like
    # BackbonePreprocess, whatever the model's compute dtype.
    return keras.layers.Rescaling(1.0 if scale is None else scale,
                                  0.0 if offset is None else offset,
                                  dtype="float32", name="input_preprocess")


def _input_side(
    inputs: Any, channels: int, preprocessing: Any, converter: Any, pad_to_multiple: int | None,
) -> tuple[Any, list[str]]:
    """Grey to the backbone's channels, preprocessing and padding: the layers before it.

    Returns:
        `(tensor for the backbone, names of the layers made here)`.
    """
    x, made = inputs, []
    if inputs.shape[-1] != channels:
        made.append(keras.layers.Concatenate(axis=-1, name="input_gray_to_rgb", dtype="float32"))
        x = made[-1]([x] * channels)
    layer = _preprocess_layer(preprocessing, converter, channels)
    if layer is not None:
        made.append(layer)
        x = layer(x)
    if pad_to_multiple:
        made.append(PadToMultiple(pad_to_multiple, name="input_pad"))
        x = made[-1](x)
    return x, ["input_image", *(layer.name for layer in made)]


def _with_weights(backbone: Any, weights: Any) -> Any:
    """The backbone itself, or a copy holding the weights of file `weights`."""
    if weights is None or weights == "imagenet":
        return backbone
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise MissingFileError(f"weights file {path!r} not found (keras-hub backbones take "
                               f"None, 'imagenet' = their own weights, or a .weights.h5 file).")
    copy = type(backbone).from_config(backbone.get_config())
    try:
        copy.load_weights(path)
    except (ValueError, OSError, KeyError) as exc:
        raise WeightsError(f"weights file {path!r} does not fit keras-hub backbone "
                           f"{backbone.name!r} ({type(backbone).__name__}): {exc}") from exc
    return copy


def _backbone_precision(backbone: Any) -> str:
    """The backbone's own dtype policy, which its layer copies keep (one of vggunet's)."""
    policy = backbone.dtype_policy.name
    if policy not in PRECISIONS:
        raise ArgumentError(
            f"keras-hub backbone {backbone.name!r} has dtype policy {policy!r}; vggunet runs "
            f"backbones in {', '.join(p for p in PRECISIONS if p != 'auto')} (keras-hub's dtype=).")
    return policy


def _copy_layer(layer: Any) -> Any:
    """A new layer from `layer`'s config (weights are copied once it is built)."""
    try:
        return type(layer).from_config(layer.get_config())
    except (TypeError, ValueError) as exc:
        raise ArgumentError(
            f"layer {layer.name!r} ({type(layer).__name__}) of the keras-hub backbone cannot be "
            f"rebuilt from its config, so it cannot be copied into a U-Net (nor loaded from a "
            f".keras file): {exc}. Backbones known to work: {_SUPPORTED}.") from exc


def graft_backbone(backbone: Any, inputs: Any, x: Any, taps: Sequence[str]) -> list[Any]:
    """Copies of a keras-hub backbone's layers, up to `taps`, called on tensor `x`.

    `keras.models.clone_model` replays the backbone's graph: each layer is rebuilt from its
    config, its call's backbone input is replaced by `x`, and the copy gets the original's
    weights. Call it under the global dtype policy the backbone was built with: some keras-hub
    layers (EfficientNet's `MBConvBlock`) give their sublayers the global policy, as they will
    get it again when a `.keras` file is loaded.

    Args:
        backbone: a keras-hub backbone (one image input).
        inputs: the model's `keras.Input`, from which `x` was computed.
        x: the tensor the backbone should see (preprocessed, padded).
        taps: names of the backbone layers whose outputs are wanted.

    Returns:
        The taps' output tensors, in the graph from `inputs`, in the order of `taps`.
    """
    source = keras.Model(backbone.inputs[0], [backbone.get_layer(name).output for name in taps])
    copies = []

    def copy(operation: Any) -> Any:
        if not isinstance(operation, keras.layers.Layer):
            return operation  # keras.ops operations (ops.split, ops.pad) hold no state
        new = _copy_layer(operation)
        copies.append((new, operation))
        return new

    def call(operation: Any, *args: Any, **kwargs: Any) -> Any:
        args, kwargs = keras.tree.map_structure(lambda t: x if t is inputs else t,
                                                (args, kwargs))
        return operation(*args, **kwargs)

    grafted = keras.models.clone_model(source, input_tensors=inputs, clone_function=copy,
                                       call_function=call)
    for new, old in copies:
        new.set_weights(old.get_weights())
    return list(grafted.outputs)


def build_hub_encoder(
    backbone: Any,
    skip_layers: Sequence[str] | None = None,
    weights: str | os.PathLike | None = None,
    input_shape: Sequence[int | None] = (None, None, 3),
    *,
    bottleneck_source: str | None = None,
    preprocessing: Any = True,
    pad_to_multiple: int | None = None,
    precision: str = "auto",
) -> Encoder:
    """`build_encoder` for a keras-hub backbone: its pyramid levels as skips and bottleneck source.

    Args:
        backbone: a keras-hub backbone with `pyramid_outputs` (from a constructor or
            `keras_hub.models.Backbone.from_preset(name)`), or an image task holding one (then
            its image converter is the default preprocessing).
        skip_layers: pyramid levels (`"P2"`) or backbone layer names, high to low resolution;
            default: every level above the bottleneck source.
        weights: None or `"imagenet"` (both: the weights the backbone holds), or a path to a
            `.weights.h5` file of the same backbone.
        input_shape: `(H, W, C)`; H and W may be None; C is the backbone's channel count, or 1
            (repeated to it).
        bottleneck_source: a pyramid level or layer name; default the deepest level.
        preprocessing: True (the task's image converter, else ImageNet mean/std for 3
            channels and [-1, 1] for others), False, a mode of `BackbonePreprocess`, or a
            keras-hub `ImageConverter` (its scale and offset).
        pad_to_multiple: when set, reflect-pad H and W up to this multiple before the backbone.
        precision: `"auto"`, `"float32"`, `"mixed_bfloat16"` or `"mixed_float16"`.

    Returns:
        An `Encoder` with outputs `[*skips, bottleneck_source]`, highest resolution first, its
        layer roles, stages (one per pyramid level) and backbone numbering recorded.
    """
    # Imported here: encoder.py imports this module to hand keras-hub backbones over.
    from vggunet.models.encoder import stage_numbers

    backbone, converter = split_hub_model(backbone)
    levels = pyramid_levels(backbone)
    skips, source = _resolve_taps(backbone, levels, skip_layers, bottleneck_source)
    channels = int(backbone.inputs[0].shape[-1])
    shape = _check_input_shape(input_shape, channels, levels[-1].stride)
    backbone = _with_weights(backbone, weights)
    names = [layer.name for layer in backbone.layers[1:]]
    with dtype_policy(precision):
        inputs = keras.Input(shape=shape, name="input_image")
        x, input_names = _input_side(inputs, channels, preprocessing, converter, pad_to_multiple)
        clash = sorted(set(input_names) & set(names))
        if clash:
            raise ArgumentError(f"keras-hub backbone {backbone.name!r} has layer(s) named {clash}, "
                                f"which vggunet's input layers use; rename them.")
    with dtype_policy(_backbone_precision(backbone)):
        outputs = graft_backbone(backbone, inputs, x, (*skips, source))
    roles = {name: "skip" if name in skips else "encoder" for name in names}
    return Encoder(inputs, outputs, name=f"{backbone_name(backbone)}_encoder",
                   roles={**roles, **dict.fromkeys(input_names, "input")},
                   backbone_layers=["input_image", *names],
                   stages=stage_numbers(names, [level.layer for level in levels]),
                   min_input_size=levels[-1].stride)


def hub_unet_encoder(
    backbone: Any, input_shape: Sequence[int | None], skip_layers: Sequence[str] | None,
    bottleneck_source: str | None, n_stages: int, precision: str, weights: Any = None,
) -> tuple[Encoder, str | None]:
    """`build_vgg_unet`'s encoder step for a keras-hub backbone.

    Args:
        backbone: a keras-hub backbone or image task.
        input_shape: `(H, W, C)`.
        skip_layers: pyramid levels or layer names, or None (every level above the source).
        bottleneck_source: a pyramid level or layer name, or None (the deepest level).
        n_stages: the number of decoder stages (the total stride is `2**n_stages`).
        precision: the builder's precision.
        weights: None/`"imagenet"` (the backbone's own) or a backbone `.weights.h5` file.

    Returns:
        `(encoder, "crop" when it reflect-pads H and W else None)`, as the registry
        backbones' encoder step returns them.
    """
    multiple = 2 ** n_stages
    needs_pad = any(d is None or int(d) % multiple for d in tuple(input_shape)[:2])
    encoder = build_hub_encoder(backbone, skip_layers, weights, input_shape,
                                bottleneck_source=bottleneck_source,
                                pad_to_multiple=multiple if needs_pad else None,
                                precision=precision)
    return encoder, "crop" if needs_pad else None
