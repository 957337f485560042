"""Loading backbone weights: ImageNet through keras.applications, or a file the user supplies.

How weights find their layers, for every family:

1. **Into the backbone's own numbering.** The reference is the backbone as
   `keras.applications.<Backbone>(include_top=False)` builds it; its layers with weights, in
   order, are what a weights file must hold. Keras 3 `.weights.h5` files are keyed by position
   (Keras names each layer's group after its class: `conv2d_7`), nested models included
   (ConvNeXt's stem). Legacy `.h5` files (Keras 2's `*_notop.h5`) name their layers: they are
   matched by name when every layer of the reference finds its name in the file, otherwise by
   the order of the layers with weights, as Keras's own legacy loader does, because Keras
   numbers names it makes up per session (InceptionV3's `conv2d_12`) and the file's session
   numbered them differently. ImageNet weights come from a second build of the backbone
   (`weights="imagenet"`), matched by that order too.
2. **Into the model.** vggunet's models record `backbone_layers`, the model's layer for each
   entry of that numbering; its layers with weights meet the reference's in order. A layer
   whose name Keras did not make up (`block1_conv1`) must carry the same name on both sides,
   and classes and shapes must agree. Layers the encoder cut off (beyond the bottleneck source)
   are not loaded. Models without the record are matched by name.
3. **Other input channel counts.** A model whose input has C channels, C not 3 (C = 1 is
   repeated to RGB inside the model), has a first convolution with C input channels. Its RGB
   kernel is tiled over the channels and scaled by 3 / C (`tile_input_kernel`), and the
   per-channel vectors before it (EfficientNet's in-model `Normalization` mean and variance)
   are cycled (`cycle_channels`), so that channel c is treated like RGB channel c % 3.
4. **EfficientNet B0-B7's extra ImageNet scale.** Keras's ImageNet graph of these models
   divides the in-model `Normalization`'s output once more by sqrt(std) in a layer that only
   `weights="imagenet"` builds have; vggunet builds with `weights=None` and multiplies the
   loaded variance by the std instead (`EncoderSpec.pretrained_std_rescale`): the same function.

Everything is checked before anything is assigned: a file that does not fit raises
`WeightsError` naming the file and the first layer that does not fit, rather than a shape error
deep inside Keras.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import keras
import numpy as np

from vggunet.errors import ImagenetWeightsUnavailable, WeightsError
from vggunet.models.registry import EncoderSpec, get_encoder_spec
from vggunet.models.weightfiles import (
    Arrays, check_fits, match_entries, read_file, shapes, snake_case, weighted_layers,
)

# Without a timeout, urllib waits on a black-holed network for minutes; 30 s is ample for the
# first bytes of a real download.
_DOWNLOAD_TIMEOUT_S = 30.0


def keras_cache_dir() -> Path:
    """The folder where Keras caches downloaded application weights.

    Returns:
        `$KERAS_HOME/models` (default `~/.keras/models`), as `keras.utils.get_file` uses it.
    """
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return Path(home) / "models"


@dataclasses.dataclass(frozen=True)
class BackboneWeights:
    """Weights for a backbone's layers, read and checked, in the backbone's own order.

    Attributes:
        backbone: the backbone's registry name.
        source: the file they come from (for ImageNet, the one in the Keras cache).
        names: the name of each layer with weights, as a fresh build of the backbone names it
            (names Keras makes up, such as `conv2d_12`, are this session's: order is what counts).
        classes: each layer's class name.
        arrays: each layer's arrays, in `layer.weights` order (as `get_weights()` gives them).
    """

    backbone: str
    source: str
    names: tuple[str, ...]
    classes: tuple[str, ...]
    arrays: tuple[tuple[np.ndarray, ...], ...]

    def as_dict(self) -> dict[str, Arrays]:
        """`{layer_name: [arrays]}` in the backbone's order (the form `read_weights_file` gives).

        Returns:
            The dictionary.
        """
        return {name: list(arrays) for name, arrays in zip(self.names, self.arrays)}


def tile_input_kernel(kernel: np.ndarray, channels: int) -> np.ndarray:
    """An RGB first-convolution kernel for `channels` input channels (smp's rule).

    Input channel c gets the kernel of RGB channel `c % 3`, all scaled by `3 / channels`, so an
    image whose channels repeat R, G, B (C a multiple of 3) gives the RGB image's response.

    Args:
        kernel: `(kh, kw, 3, filters)`.
        channels: the new number of input channels.

    Returns:
        `(kh, kw, channels, filters)`, in the kernel's dtype.

    Example:
        >>> k = np.arange(3, dtype="float32").reshape(1, 1, 3, 1)
        >>> tile_input_kernel(k, 4)[0, 0, :, 0].tolist()
        [0.0, 0.75, 1.5, 0.0]
    """
    tiled = np.take(kernel, np.arange(channels) % kernel.shape[2], axis=2)
    return (tiled * (kernel.shape[2] / channels)).astype(kernel.dtype)


def cycle_channels(values: np.ndarray, channels: int) -> np.ndarray:
    """A per-RGB-channel vector (a mean, a variance) cycled over `channels` channels.

    Args:
        values: shape `(3,)`.
        channels: the new number of channels.

    Returns:
        Shape `(channels,)`: entry c is `values[c % 3]`.

    Example:
        >>> cycle_channels(np.array([1.0, 2.0, 3.0]), 5).tolist()
        [1.0, 2.0, 3.0, 1.0, 2.0]
    """
    return np.take(values, np.arange(channels) % values.shape[0], axis=0)


def _is_made_up(name: str, class_name: str) -> bool:
    """Whether Keras made `name` up from the class (`conv2d`, `conv2d_12`): numbered per session."""
    stem = snake_case(class_name)
    return name == stem or (name.startswith(stem + "_") and name[len(stem) + 1:].isdigit())


def _reference_backbone(spec: EncoderSpec) -> keras.Model:
    # No input_shape: the backbone exactly as `keras.applications.X(include_top=False)` builds
    # it, the numbering of record. (NASNet's layers depend on it: a free H×W drops 6 of them.)
    return spec.constructor(include_top=False, weights=None)


def _imagenet_entries(spec: EncoderSpec) -> list[tuple[str, Arrays]]:
    cached = keras_cache_dir() / spec.weights_file
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        base = spec.constructor(include_top=False, weights="imagenet")
    except Exception as exc:  # keras.utils.get_file raises a bare Exception on URL errors.
        raise ImagenetWeightsUnavailable(
            f"ImageNet weights for {spec.name!r} are not in the Keras cache and could not be "
            f"downloaded ({exc}). To use them offline, download\n  {spec.weights_url}\non a "
            f"machine with internet and copy it to\n  {cached}\n(the Keras cache; set "
            f"KERAS_HOME to move it), or pass weights='/path/to/{spec.weights_file}'. "
            f"Use weights=None for a randomly initialised encoder."
        ) from None
    finally:
        socket.setdefaulttimeout(previous)
    # That build names the layers it makes up anew and may hold extra layers without weights
    # (EfficientNet's ImageNet rescaling): its layers with weights are matched by order.
    return [(layer.name, layer.get_weights()) for layer in weighted_layers(base.layers)]


def read_backbone_weights(
    weights: str | os.PathLike, backbone: str | EncoderSpec
) -> BackboneWeights:
    """Reads ImageNet weights or a weights file for a backbone, checked layer by layer.

    Args:
        weights: `"imagenet"` (keras.applications' cache, else a download), or a path to a
            Keras 3 `.weights.h5` file of the backbone or a legacy Keras 2 `.h5` file (such as
            keras.applications' `*_notop.h5`).
        backbone: the backbone the weights must fit: registry name or `EncoderSpec`.

    Returns:
        A `BackboneWeights` for every layer of the backbone that has weights, in its order.
    """
    spec = get_encoder_spec(backbone)
    imagenet = isinstance(weights, str) and weights == "imagenet"
    path = keras_cache_dir() / spec.weights_file if imagenet else Path(weights)
    if not imagenet and not path.is_file():
        raise WeightsError(
            f"Backbone weights file not found: '{path}'. Pass an existing .weights.h5/.h5 "
            f"file, weights='imagenet', or weights=None."
        )
    reference = _reference_backbone(spec)
    weighted = weighted_layers(reference.layers)
    if imagenet:
        found, extra = match_entries(weighted, _imagenet_entries(spec))
    else:
        found, extra = read_file(path, reference)
    source = str(path)
    check_fits(source, spec.name, weighted, found, extra)
    return BackboneWeights(
        spec.name, source, tuple(layer.name for layer in weighted),
        tuple(layer.__class__.__name__ for layer in weighted),
        tuple(tuple(arrays) for _, arrays in found))


def read_weights_file(path: str | os.PathLike, backbone: str | EncoderSpec) -> dict[str, Arrays]:
    """Reads a backbone weights file into `{layer_name: [arrays]}` and checks it fits.

    Args:
        path: a Keras 3 `.weights.h5` file of the backbone, or a legacy Keras 2 `.h5` file
            (such as keras.applications' `*_notop.h5`).
        backbone: the backbone the file must fit: registry name or `EncoderSpec`.

    Returns:
        The arrays for every backbone layer that has weights, keyed by layer name in the
        backbone's order (`read_backbone_weights` for names Keras makes up, such as
        InceptionV3's).
    """
    return read_backbone_weights(path, backbone).as_dict()


def imagenet_weights(backbone: str | EncoderSpec) -> dict[str, Arrays]:
    """Gets ImageNet no-top weights through keras.applications (cache first, then download).

    Args:
        backbone: registry name or `EncoderSpec`.

    Returns:
        `{layer_name: [arrays]}` for every backbone layer with weights, in the backbone's order.
    """
    return read_backbone_weights("imagenet", backbone).as_dict()


# ---- assigning to a model --------------------------------------------------------------------

def _model_layers(model: keras.Model, weights: BackboneWeights) -> list:
    """The model's layer for each entry of `weights` (None: cut off by the encoder)."""
    record = list(getattr(model, "backbone_layers", None) or [])
    if not record:
        present = {layer.name for layer in model.layers}
        for name in weights.names:
            if name not in present:
                raise WeightsError(
                    f"Model {model.name!r} has no layer {name!r} to receive backbone weights; "
                    f"was it built with backbone {weights.backbone!r}?"
                )
        return [model.get_layer(name) for name in weights.names]
    ours = weighted_layers([model.get_layer(name) for name in record[1:]])
    if len(ours) > len(weights.names):
        raise WeightsError(
            f"Model {model.name!r} has {len(ours)} backbone layers with weights, backbone "
            f"{weights.backbone!r} ({weights.source}) {len(weights.names)}; was it built with "
            f"another backbone?"
        )
    return ours + [None] * (len(weights.names) - len(ours))


def _input_zone(weights: BackboneWeights) -> int:
    """Index of the first layer with an RGB convolution kernel: the layers up to it see the
    input's channels."""
    for i, arrays in enumerate(weights.arrays):
        if any(a.ndim == 4 and a.shape[2] == 3 for a in arrays):
            return i
    return -1


def _adapted(array: np.ndarray, shape: tuple) -> np.ndarray | None:
    """`array` for another input channel count, if `shape` differs from it only there."""
    if array.ndim == 4 and array.shape[2] == 3 and len(shape) == 4 \
            and shape[:2] == array.shape[:2] and shape[3] == array.shape[3]:
        return tile_input_kernel(array, shape[2])
    if array.shape == (3,) and len(shape) == 1:
        return cycle_channels(array, shape[0])
    return None


def _mismatch(weights: BackboneWeights, i: int, layer: keras.layers.Layer) -> str:
    """Why entry `i` of `weights` cannot go to the model's `layer` ("" when its arrays can)."""
    name, class_name, arrays = weights.names[i], weights.classes[i], weights.arrays[i]
    if layer.__class__.__name__ != class_name:
        return f"it is a {layer.__class__.__name__}, not a {class_name}"
    if layer.name != name and not _is_made_up(name, class_name):
        return "their names differ"
    if len(layer.weights) != len(arrays):
        return f"it has {len(layer.weights)} weights, the backbone's layer {len(arrays)}"
    return ""


def _fit_layer(weights: BackboneWeights, i: int, layer: keras.layers.Layer, model: keras.Model,
               in_zone: bool) -> Arrays:
    """The arrays of entry `i` for the model's `layer`, adapted to its channels; else raises."""
    problem = _mismatch(weights, i, layer)
    fitted = list(weights.arrays[i])
    for k, variable in enumerate(() if problem else layer.weights):
        shape = tuple(variable.shape)
        if fitted[k].shape != shape:
            fitted[k] = _adapted(fitted[k], shape) if in_zone else None
        if fitted[k] is None:
            problem = (f"its shapes are {shapes(layer.weights)}, the weights' "
                       f"{shapes(weights.arrays[i])}")
            break
    if problem:
        raise WeightsError(
            f"Backbone weights of {weights.backbone!r} ({weights.source}) do not fit model "
            f"{model.name!r}: backbone layer {weights.names[i]!r} ({weights.classes[i]}) meets "
            f"the model's layer {layer.name!r}, and {problem}. Was the model built for another "
            f"backbone?"
        )
    return fitted


def load_backbone_weights(
    model: keras.Model, backbone: str | EncoderSpec, weights: str | os.PathLike | BackboneWeights
) -> int:
    """Assigns backbone weights to the encoder layers of `model`, checked before assigning.

    Layers are matched through the model's record of the backbone's numbering
    (`model.backbone_layers`; by name for models without it). A first convolution with other
    than 3 input channels gets the RGB kernel tiled over its channels and scaled by 3 / C
    (`tile_input_kernel`); per-channel vectors before it are cycled (`cycle_channels`).

    Args:
        model: a model built by `build_encoder` or `build_vgg_unet` for `backbone`.
        backbone: registry name or `EncoderSpec` (the builders pass the spec they resolved).
        weights: `"imagenet"`, a path to a weights file (see `read_backbone_weights`), or
            `BackboneWeights` already read.

    Returns:
        The number of layers whose weights were assigned.
    """
    spec = get_encoder_spec(backbone)
    if not isinstance(weights, BackboneWeights):
        weights = read_backbone_weights(weights, spec)
    zone = _input_zone(weights)
    assignments = [
        (layer, _fit_layer(weights, i, layer, model, i <= zone))
        for i, layer in enumerate(_model_layers(model, weights)) if layer is not None
    ]
    if spec.pretrained_std_rescale:
        assignments = [(layer, _rescaled_normalization(layer, arrays, spec))
                       for layer, arrays in assignments]
    for layer, arrays in assignments:
        layer.set_weights(arrays)
        if isinstance(layer, keras.layers.Normalization):
            # Its call reads mean/variance tensors derived from the variables, which only
            # finalize_state() refreshes (Keras's own loader calls it; set_weights does not).
            layer.finalize_state()
    return len(assignments)


def _rescaled_normalization(layer: keras.layers.Layer, arrays: Arrays,
                            spec: EncoderSpec) -> Arrays:
    """A `Normalization` layer's arrays with the variance multiplied by the spec's stds.

    Keras's ImageNet EfficientNet divides the normalised input once more by sqrt(std) in a
    `Rescaling` layer that only `weights="imagenet"` builds get; (x - mean) / sqrt(var * std)
    is that same function without the layer. Other layers' arrays are returned unchanged.
    """
    if not isinstance(layer, keras.layers.Normalization):
        return arrays
    names = [variable.name for variable in layer.weights]
    variance = arrays[names.index("variance")]
    std = cycle_channels(np.asarray(spec.pretrained_std_rescale), variance.shape[-1])
    fitted = list(arrays)
    fitted[names.index("variance")] = (variance * std.reshape(variance.shape)).astype(
        variance.dtype)
    return fitted
