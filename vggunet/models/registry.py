"""The encoder registry: which keras.applications backbones vggunet knows, and how to tap them.

Adding a backbone is one entry in `ENCODERS`: its `keras.applications` constructor, the layers
whose outputs become skip connections (high to low resolution), the layer the bottleneck grows
from, its preprocessing and the URL of its ImageNet no-top weights.

This module imports no Keras: constructors are named as strings and resolved on use, so the CLI
can list the backbones without loading TensorFlow.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

from vggunet.checks import did_you_mean
from vggunet.errors import ArgumentError

_WEIGHTS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"


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


def _application(name: str) -> KerasFunction:
    return KerasFunction("keras.applications", name)


def _preprocess(module: str) -> KerasFunction:
    return KerasFunction(f"keras.applications.{module}", "preprocess_input")


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """What vggunet needs to know about one backbone.

    Attributes:
        constructor: the `keras.applications` model function (called with `include_top=False`);
            the built-in entries hold a `KerasFunction`, which imports Keras only when called.
        skip_layers: default skip layer names, from high to low resolution.
        bottleneck_source: the layer the bottleneck grows from (the deepest encoder feature).
        preprocessing: `BackbonePreprocess` mode matching the backbone's `preprocess_input`.
        preprocess_input: the `keras.applications` preprocessing function.
        weights_url: where Keras downloads the ImageNet no-top weights from.
        name: the registry key (`"vgg16"`); `get_encoder_spec` fills it in for entries added
            without one. Builders name models after it and messages name the backbone by it.
        stage_ends: the last backbone layer of each stage (block), in order: stage k holds the
            layers after the end of stage k-1, up to and including its own end. `freeze`'s
            `up_to=`, `top_blocks` and `encoder_blocks` count these stages; builders record
            each layer's stage in the model. Empty: stages are read from layer names
            (`block4_*`, `conv4_*`), as for models of earlier releases.
    """

    constructor: Callable[..., Any]
    skip_layers: tuple[str, ...]
    bottleneck_source: str
    preprocessing: str
    preprocess_input: Callable[..., Any]
    weights_url: str
    name: str = ""
    stage_ends: tuple[str, ...] = ()

    @property
    def weights_file(self) -> str:
        """File name of the ImageNet no-top weights in the Keras cache (`~/.keras/models/`)."""
        return self.weights_url.rsplit("/", 1)[-1]


def _vgg_skips() -> tuple[str, ...]:
    return tuple(f"block{i}_conv2" for i in range(1, 6))


_VGG_STAGES = tuple(f"block{i}_pool" for i in range(1, 6))


def _resnet_stages(blocks: tuple[int, int, int]) -> tuple[str, ...]:
    """Stage ends of a ResNet with `blocks` residual blocks in stages 3, 4, 5 (stage 2 has 3)."""
    return ("pool1_pool", "conv2_block3_out", *(f"conv{stage}_block{n}_out"
                                                for stage, n in zip((3, 4, 5), blocks)))


ENCODERS: dict[str, EncoderSpec] = {
    "vgg16": EncoderSpec(
        _application("VGG16"),
        _vgg_skips(),
        "block5_conv3",
        "caffe",
        _preprocess("vgg16"),
        _WEIGHTS_BASE + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "vgg16",
        _VGG_STAGES,
    ),
    "vgg19": EncoderSpec(
        _application("VGG19"),
        _vgg_skips(),
        "block5_conv4",
        "caffe",
        _preprocess("vgg19"),
        _WEIGHTS_BASE + "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "vgg19",
        _VGG_STAGES,
    ),
    "resnet50": EncoderSpec(
        _application("ResNet50"),
        ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out"),
        "conv5_block3_out",
        "caffe",
        _preprocess("resnet"),
        _WEIGHTS_BASE + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "resnet50",
        _resnet_stages((4, 6, 3)),
    ),
    "resnet101": EncoderSpec(
        _application("ResNet101"),
        ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block23_out"),
        "conv5_block3_out",
        "caffe",
        _preprocess("resnet"),
        _WEIGHTS_BASE + "resnet/resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "resnet101",
        _resnet_stages((4, 23, 3)),
    ),
    "resnet152": EncoderSpec(
        _application("ResNet152"),
        ("conv1_relu", "conv2_block3_out", "conv3_block8_out", "conv4_block36_out"),
        "conv5_block3_out",
        "caffe",
        _preprocess("resnet"),
        _WEIGHTS_BASE + "resnet/resnet152_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "resnet152",
        _resnet_stages((8, 36, 3)),
    ),
}


def get_encoder_spec(backbone: str | EncoderSpec) -> EncoderSpec:
    """Looks a backbone up in the registry: the one place a backbone name is resolved.

    Builders call this once, at their public entry, and hand the spec on to every later step
    (encoder, weights), which accept a spec as well as a name.

    Args:
        backbone: a key of `ENCODERS` (case-insensitive), e.g. `"vgg16"`, or an `EncoderSpec`
            (returned as it is, so a step may take either).

    Returns:
        Its `EncoderSpec`, whose `name` is the registry key.

    Example:
        >>> spec = get_encoder_spec("VGG16")
        >>> spec.name, spec.bottleneck_source, get_encoder_spec(spec) is spec
        ('vgg16', 'block5_conv3', True)
    """
    if isinstance(backbone, EncoderSpec):
        return backbone
    key = backbone.lower() if isinstance(backbone, str) else None
    if key not in ENCODERS:
        raise ArgumentError(f"Unknown backbone {backbone!r}; available backbones: "
                            f"{', '.join(ENCODERS)}.{did_you_mean(backbone, ENCODERS)}")
    spec = ENCODERS[key]
    # Entries added by users may leave `name` empty; the key is the name they look it up by.
    return spec if spec.name == key else dataclasses.replace(spec, name=key)
