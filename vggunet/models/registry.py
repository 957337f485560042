"""The encoder registry: which keras.applications backbones vggunet knows, and how to tap them.

Every constructor that `keras.applications` exports (40 in Keras 3) is an entry, keyed by its
name lower-cased (`"efficientnetb0"`, `"convnexttiny"`, `"mobilenetv3large"`). Lookup ignores
case, `_`, `-` and spaces, so `"ConvNeXtTiny"`, `"convnext_tiny"` and `"mobilenet_v3_large"`
find them too.

Each entry names the layers whose outputs become skip connections (high to low resolution: the
last layer at stride 2, 4, 8, 16, and 1 where the backbone has full-resolution convolutions, as
VGG does), the layer the bottleneck grows from (the last one at stride 32), its preprocessing,
the URL of its ImageNet no-top weights and the last layer of each stage. Where Keras names a
layer automatically (`re_lu_3`, `activation_13`, `layer_normalization`), it numbers the name per
session, so the entry gives the layer's index in the backbone's own `layers` list instead; the
encoder resolves it at build time (and records the index→name map, `backbone_layers`).

Adding a backbone is one more entry in `ENCODERS`. This module imports no Keras: constructors
and preprocessing functions are named as strings and resolved on use, so the CLI can list the
backbones without loading TensorFlow.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from typing import Any, Callable, Sequence, Union

from vggunet.checks import did_you_mean
from vggunet.errors import ArgumentError

_KERAS_APPLICATIONS = "https://storage.googleapis.com/tensorflow/keras-applications/"
# keras.applications' IMAGENET_STDDEV_RGB (EfficientNet's extra ImageNet rescaling).
_IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet B0-B7 are the one family Keras downloads from outside tensorflow/.
_EFFICIENTNET_WEIGHTS = "https://storage.googleapis.com/keras-applications/"

LayerRef = Union[str, int]
"""A backbone layer: its name, or its index in `<Backbone>(include_top=False).layers` (-1: the
last layer)."""


@dataclasses.dataclass(frozen=True)
class KerasFunction:
    """A function of a Keras module, imported when first called (keeps the registry keras-free).

    Args:
        module: the module's import path, e.g. `"keras.applications"`.
        name: the function's name there, e.g. `"VGG16"`.

    Example:
        >>> KerasFunction("keras.applications.vgg16", "preprocess_input")
        keras.applications.vgg16.preprocess_input
    """

    module: str
    name: str

    def resolve(self) -> Callable[..., Any]:
        """Imports the module and returns the function.

        Returns:
            The function.
        """
        return getattr(importlib.import_module(self.module), self.name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"{self.module}.{self.name}"


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """What vggunet needs to know about one backbone.

    Layers are named by a `str`, or by an `int`: the layer's index in
    `keras.applications.<Backbone>(include_top=False, weights=None).layers` (0 is the input),
    for layers that Keras names automatically and differently in every session.

    Attributes:
        constructor: the `keras.applications` model function (called with `include_top=False`);
            the built-in entries hold a `KerasFunction`, which imports Keras only when called.
        skip_layers: default skip layers, from high to low resolution.
        bottleneck_source: the layer the bottleneck grows from (the deepest encoder feature).
        preprocessing: `BackbonePreprocess` mode matching the backbone's `preprocess_input`
            (`"none"` for families whose models hold their own preprocessing layers).
        preprocess_input: the `keras.applications` preprocessing function.
        weights_url: where Keras downloads the ImageNet no-top weights from.
        name: the registry key (`"vgg16"`); `get_encoder_spec` fills it in for entries added
            without one. Builders name models after it and messages name the backbone by it.
        stage_ends: the last backbone layer of each stage (block), in order: stage k holds the
            layers after the end of stage k-1, up to and including its own end. `freeze`'s
            `up_to=`, `top_blocks` and `encoder_blocks` count these stages; builders record
            each layer's stage in the model. Empty: stages are read from layer names
            (`block4_*`, `conv4_*`), as for models of earlier releases.
        min_input_size: the smallest height and width the backbone and its U-Net take.
        valid_padding: the backbone's convolutions use `"valid"` padding, so its feature maps
            are not exact halvings of the input: the U-Net then matches each upsampled map to
            its skip's size and the output to the input's (`CropOrPadToReference`) instead of
            padding the input to a multiple of the total stride.
        fixed_size: the backbone needs a static input size (NASNet: its cells choose their
            padding from the static shape), so `input_shape` must give H and W.
        rgb_only_preprocessing: the `BackbonePreprocess` mode for inputs of other than 3
            channels, where the backbone's in-model preprocessing serves RGB only and Keras
            drops or replaces it otherwise (ConvNeXt, EfficientNetV2 B0-B3: `"torch"`, the same
            ImageNet mean/std, cycled; the backbone is then built with
            `include_preprocessing=False`); empty where the family preprocesses any channel
            count alike.
        pretrained_std_rescale: per-RGB-channel standard deviations by which Keras's ImageNet
            graph divides the in-model `Normalization`'s output once more (EfficientNet B0-B7:
            a `Rescaling` layer that `keras.applications` adds only for `weights="imagenet"`,
            see tensorflow/tensorflow#49930). vggunet builds with `weights=None`, so loading
            pretrained weights multiplies that `Normalization`'s variance by these values
            instead: the same function.
    """

    constructor: Callable[..., Any]
    skip_layers: tuple[LayerRef, ...]
    bottleneck_source: LayerRef
    preprocessing: str
    preprocess_input: Callable[..., Any]
    weights_url: str
    name: str = ""
    stage_ends: tuple[LayerRef, ...] = ()
    min_input_size: int = 32
    valid_padding: bool = False
    fixed_size: bool = False
    rgb_only_preprocessing: str = ""
    pretrained_std_rescale: tuple[float, ...] = ()

    @property
    def weights_file(self) -> str:
        """File name of the ImageNet no-top weights in the Keras cache (`~/.keras/models/`)."""
        return self.weights_url.rsplit("/", 1)[-1]


def _entry(application: str, module: str, skips: Sequence[LayerRef], bottleneck: LayerRef,
           preprocessing: str, weights_url: str, stage_ends: Sequence[LayerRef] = (),
           **options: Any) -> EncoderSpec:
    """One registry entry, keyed by the `keras.applications` name lower-cased."""
    return EncoderSpec(
        KerasFunction("keras.applications", application), tuple(skips), bottleneck,
        preprocessing, KerasFunction(f"keras.applications.{module}", "preprocess_input"),
        weights_url, application.lower(), tuple(stage_ends or (*skips, bottleneck)), **options)


def _tf_kernels(folder: str, name: str) -> str:
    return f"{_KERAS_APPLICATIONS}{folder}/{name}_weights_tf_dim_ordering_tf_kernels_notop.h5"


# ---- VGG and ResNet: skip layers and stages as in earlier releases.


def _vgg(application: str, last_conv: int) -> EncoderSpec:
    """VGG: the second conv of each block (block1_conv2 ... block5_conv2, stride 1 to 16)."""
    name = application.lower()
    return _entry(application, name, [f"block{i}_conv2" for i in range(1, 6)],
                  f"block5_conv{last_conv}", "caffe", _tf_kernels(name, name),
                  [f"block{i}_pool" for i in range(1, 6)])


def _resnet(application: str, conv3: int, conv4: int) -> EncoderSpec:
    """ResNet v1 with `conv3`/`conv4` blocks in stages 3/4; stage 1 is conv1 + pool1."""
    skips = ("conv1_relu", "conv2_block3_out", f"conv3_block{conv3}_out",
             f"conv4_block{conv4}_out")
    return _entry(application, "resnet", skips, "conv5_block3_out", "caffe",
                  _tf_kernels("resnet", application.lower()),
                  ("pool1_pool", *skips[1:], "conv5_block3_out"))


def _resnet_v2(application: str, conv3: int, conv4: int) -> EncoderSpec:
    """ResNet v2 downsamples in the LAST block of stages 2-4; each skip is the pre-activation
    (BatchNorm + ReLU) of that block, i.e. the stage's features before the downsampling,
    rather than its 64-channel `_1_relu` bottleneck, the literal last layer at the stride."""
    skips = ("conv1_conv", "conv2_block3_preact_relu", f"conv3_block{conv3}_preact_relu",
             f"conv4_block{conv4}_preact_relu")
    return _entry(application, "resnet_v2", skips, "post_relu", "tf",
                  _tf_kernels("resnet", application.lower()),
                  ("pool1_pool", "conv2_block3_out", f"conv3_block{conv3}_out",
                   f"conv4_block{conv4}_out", "post_relu"))


def _densenet(application: str) -> EncoderSpec:
    """DenseNet: each transition's 1×1 conv before its pooling; stages conv1+pool1, conv2-5."""
    return _entry(application, "densenet", ("conv1_relu", "pool2_conv", "pool3_conv",
                                            "pool4_conv"), "relu", "torch",
                  _tf_kernels("densenet", application.lower()),
                  ("pool1", "pool2_pool", "pool3_pool", "pool4_pool", "relu"))


# ---- Families whose models preprocess inside (mode "none"); stages as the family names them.


def _stage_ends(blocks: Sequence[int], single: str) -> list[str]:
    """The last layer of each EfficientNet(V2) stage but the last, from blocks per stage: the
    residual add of its last block (`block2b_add`), or `single` for a one-block stage."""
    return [f"block{stage}{chr(96 + n)}_add" if n > 1 else single
            for stage, n in enumerate(blocks[:-1], 1)]


def _efficientnet(variant: str, blocks: tuple[int, ...]) -> EncoderSpec:
    """EfficientNet B0-B7 (segmentation_models' skips); stage k = `block{k}*`, with the stem in
    stage 1 and the top conv in stage 7. `blocks`: blocks per stage."""
    return _entry(f"EfficientNet{variant}", "efficientnet",
                  ("block2a_expand_activation", "block3a_expand_activation",
                   "block4a_expand_activation", "block6a_expand_activation"), "top_activation",
                  "none", f"{_EFFICIENTNET_WEIGHTS}efficientnet{variant.lower()}_notop.h5",
                  (*_stage_ends(blocks, "block1a_project_bn"), "top_activation"),
                  pretrained_std_rescale=_IMAGENET_STD)


def _efficientnet_v2(variant: str, blocks: tuple[int, ...]) -> EncoderSpec:
    """EfficientNetV2: stages 1-2 (Fused-MBConv) end at stride 2 and 4; stage 3 downsamples in
    its first, fused conv, so the stride-8 and -16 skips are block4a's and block6a's
    expansions. Stage k = `block{k}*`, the stem in stage 1, the top conv in the last."""
    ends = _stage_ends(blocks, "block1a_project_activation")
    return _entry(f"EfficientNetV2{variant}", "efficientnet_v2",
                  (*ends[:2], "block4a_expand_activation", "block6a_expand_activation"),
                  "top_activation", "none",
                  f"{_KERAS_APPLICATIONS}efficientnet_v2/efficientnetv2-{variant.lower()}"
                  f"_notop.h5", (*ends, "top_activation"),
                  # B0-B3 were trained on ImageNet mean/std, which Keras applies to RGB only
                  # (x / 128 - 1 otherwise); S, M, L use x / 128 - 1 for any channel count.
                  rgb_only_preprocessing="torch" if variant.startswith("B") else "")


def _convnext(variant: str, stage2_blocks: int) -> EncoderSpec:
    """ConvNeXt: the stem is stride 4 (no stride-2 skip); stages = stem, stage_0 ... stage_3
    (vggunet's stage k+2 is ConvNeXt's stage_k). The bottleneck source is the final
    LayerNormalization of the no-top model, which Keras names automatically: the last layer,
    -1 (its index from the front depends on the channel count, which decides whether Keras
    adds its RGB normalisation)."""
    prefix = f"convnext_{variant.lower()}"
    skips = (f"{prefix}_stage_0_block_2_identity", f"{prefix}_stage_1_block_2_identity",
             f"{prefix}_stage_2_block_{stage2_blocks - 1}_identity")
    return _entry(f"ConvNeXt{variant}", "convnext", skips, -1, "none",
                  f"{_KERAS_APPLICATIONS}convnext/{prefix}_notop.h5",
                  (f"{prefix}_stem", *skips, -1), rgb_only_preprocessing="torch")


# ---- Families whose stages are their resolution levels: each stage ends at its skip layer.


def _mobilenet_v3(size: str, skips: tuple[int, ...]) -> EncoderSpec:
    """MobileNetV3: each block's expansion activation before its stride-2 depthwise conv (the
    stem's activation for Small at stride 2), and the last activation (-1); Keras names them
    automatically (`re_lu_3`, `activation_13`), so they are indices."""
    return _entry(f"MobileNetV3{size}", "mobilenet_v3", skips, -1, "none",
                  f"{_KERAS_APPLICATIONS}mobilenet_v3/weights_mobilenet_v3_{size.lower()}"
                  f"_224_1.0_float_no_top_v2.h5")


def _nasnet(size: str, cells: int) -> EncoderSpec:
    """NASNet-A with `cells` normal cells per resolution: the stem's BatchNorm, the first
    reduction cell, the last normal cell at stride 8 and 16, and the final (automatically
    named) ReLU, the last layer (-1). Valid padding, and a static input size (its cells pad
    by the static shape)."""
    return _entry(f"NASNet{size}", "nasnet",
                  ("stem_bn1", "reduction_concat_stem_1", f"normal_concat_{cells - 1}",
                   f"normal_concat_{2 * cells}"), -1, "tf",
                  f"{_KERAS_APPLICATIONS}nasnet/NASNet-{size.lower()}-no-top.h5",
                  valid_padding=True, fixed_size=True)


ENCODERS: dict[str, EncoderSpec] = {spec.name: spec for spec in (
    _vgg("VGG16", 3),
    _vgg("VGG19", 4),
    _resnet("ResNet50", 4, 6),
    _resnet("ResNet101", 4, 23),
    _resnet("ResNet152", 8, 36),
    _resnet_v2("ResNet50V2", 4, 6),
    _resnet_v2("ResNet101V2", 4, 23),
    _resnet_v2("ResNet152V2", 8, 36),
    _densenet("DenseNet121"),
    _densenet("DenseNet169"),
    _densenet("DenseNet201"),
    _entry("MobileNet", "mobilenet", ("conv_pw_1_relu", "conv_pw_3_relu", "conv_pw_5_relu",
                                      "conv_pw_11_relu"), "conv_pw_13_relu", "tf",
           f"{_KERAS_APPLICATIONS}mobilenet/mobilenet_1_0_224_tf_no_top.h5"),
    _entry("MobileNetV2", "mobilenet_v2", ("block_1_expand_relu", "block_3_expand_relu",
                                           "block_6_expand_relu", "block_13_expand_relu"),
           "out_relu", "tf", f"{_KERAS_APPLICATIONS}mobilenet_v2/mobilenet_v2_weights_tf_dim_"
                             f"ordering_tf_kernels_1.0_224_no_top.h5"),
    _mobilenet_v3("Small", (4, 19, 37, 111)),
    _mobilenet_v3("Large", (13, 31, 76, 141)),
    _efficientnet("B0", (1, 2, 2, 3, 3, 4, 1)),
    _efficientnet("B1", (2, 3, 3, 4, 4, 5, 2)),
    _efficientnet("B2", (2, 3, 3, 4, 4, 5, 2)),
    _efficientnet("B3", (2, 3, 3, 5, 5, 6, 2)),
    _efficientnet("B4", (2, 4, 4, 6, 6, 8, 2)),
    _efficientnet("B5", (3, 5, 5, 7, 7, 9, 3)),
    _efficientnet("B6", (3, 6, 6, 8, 8, 11, 3)),
    _efficientnet("B7", (4, 7, 7, 10, 10, 13, 4)),
    _efficientnet_v2("B0", (1, 2, 2, 3, 5, 8)),
    _efficientnet_v2("B1", (2, 3, 3, 4, 6, 9)),
    _efficientnet_v2("B2", (2, 3, 3, 4, 6, 10)),
    _efficientnet_v2("B3", (2, 3, 3, 5, 7, 12)),
    _efficientnet_v2("S", (2, 4, 4, 6, 9, 15)),
    _efficientnet_v2("M", (3, 5, 5, 7, 14, 18, 5)),
    _efficientnet_v2("L", (4, 7, 7, 10, 19, 25, 7)),
    _convnext("Tiny", 9),
    _convnext("Small", 27),
    _convnext("Base", 27),
    _convnext("Large", 27),
    _convnext("XLarge", 27),
    # Valid padding: feature maps are not exact halvings (Xception at 224: 109, 55, 28, 14, 7).
    # Minimum sizes: the smallest H = W at which the U-Net builds and runs, probed once, but
    # at least 32, the size five poolings need (Xception and NASNet run from 7 and 20 px).
    _entry("Xception", "xception", ("block2_sepconv2_bn", "block3_sepconv2_bn",
                                    "block4_sepconv2_bn", "block13_sepconv2_bn"),
           "block14_sepconv2_act", "tf", _tf_kernels("xception", "xception"),
           valid_padding=True),
    # Inception: the stem's convs are auto-named (indices 9 and 16: the last activation before
    # each stem pooling); then the last mixed block before each reduction. From 75 px.
    _entry("InceptionV3", "inception_v3", (9, 16, "mixed2", "mixed7"), "mixed10", "tf",
           _tf_kernels("inception_v3", "inception_v3"), min_input_size=75, valid_padding=True),
    _entry("InceptionResNetV2", "inception_resnet_v2", (9, 16, "block35_10_ac", "block17_20_ac"),
           "conv_7b_ac", "tf", _tf_kernels("inception_resnet_v2", "inception_resnet_v2"),
           min_input_size=75, valid_padding=True),
    _nasnet("Mobile", 4),
    _nasnet("Large", 6),
)}


def _folded(name: str) -> str:
    """A backbone name without case, `_`, `-` and spaces: `"convnext_tiny"` → `"convnexttiny"`."""
    return re.sub(r"[\s_\-]+", "", name).lower()


def backbone_key(backbone: str) -> str:
    """The registry key a backbone name refers to, ignoring case, `_`, `-` and spaces.

    Args:
        backbone: e.g. `"ConvNeXtTiny"`, `"convnext_tiny"` or `"mobilenet_v3_large"`.

    Returns:
        The key of `ENCODERS`, e.g. `"convnexttiny"`. Raises `ArgumentError` listing the keys
        (with a "Did you mean" suggestion) for an unknown name.

    Example:
        >>> backbone_key("ConvNeXtTiny"), backbone_key("mobilenet_v3_large")
        ('convnexttiny', 'mobilenetv3large')
    """
    if isinstance(backbone, str):
        if backbone.lower() in ENCODERS:
            return backbone.lower()
        matches = [key for key in ENCODERS if _folded(key) == _folded(backbone)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ArgumentError(f"Backbone {backbone!r} is ambiguous: it could be "
                                f"{' or '.join(map(repr, matches))}; give the exact key.")
    raise ArgumentError(f"Unknown backbone {backbone!r}; available backbones: "
                        f"{', '.join(ENCODERS)}.{did_you_mean(backbone, ENCODERS)}")


def get_encoder_spec(backbone: str | EncoderSpec) -> EncoderSpec:
    """Looks a backbone up in the registry: the one place a backbone name is resolved.

    Builders call this once, at their public entry, and hand the spec on to every later step
    (encoder, weights), which accept a spec as well as a name.

    Args:
        backbone: a key of `ENCODERS`, in any case and with or without `_`, `-` or spaces
            (`"vgg16"`, `"EfficientNetB0"`, `"convnext_tiny"`), or an `EncoderSpec` (returned
            as it is, so a step may take either).

    Returns:
        Its `EncoderSpec`, whose `name` is the registry key.

    Example:
        >>> spec = get_encoder_spec("VGG16")
        >>> spec.name, spec.bottleneck_source, get_encoder_spec(spec) is spec
        ('vgg16', 'block5_conv3', True)
        >>> get_encoder_spec("convnext_tiny").name
        'convnexttiny'
    """
    if isinstance(backbone, EncoderSpec):
        return backbone
    key = backbone_key(backbone)
    spec = ENCODERS[key]
    # Entries added by users may leave `name` empty; the key is the name they look it up by.
    return spec if spec.name == key else dataclasses.replace(spec, name=key)
