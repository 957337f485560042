"""Loading backbone weights: ImageNet through keras.applications, or a file the user supplies.

Files are read with h5py and checked layer by layer against the backbone before anything is
assigned, so a wrong file fails with the file's name and the first layer that does not fit
rather than with a shape error deep inside Keras.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import h5py
import keras
import numpy as np

from vggunet.errors import ImagenetWeightsUnavailable, WeightsError
from vggunet.models.registry import EncoderSpec, get_encoder_spec

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


def _snake_case(name: str) -> str:
    # Mirrors the snake-casing (naming.to_snake_case) Keras names .weights.h5 entries with.
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _reference_backbone(spec: EncoderSpec) -> keras.Model:
    return spec.constructor(include_top=False, weights=None, input_shape=(None, None, 3))


def _keras3_keys(model: keras.Model) -> dict[str, str]:
    """Maps layer names to the keys Keras 3 uses for them in a `.weights.h5` file."""
    used: dict[str, int] = {}
    keys = {}
    for layer in model.layers:
        key = _snake_case(layer.__class__.__name__)
        if key in used:
            used[key] += 1
            key = f"{key}_{used[key]}"
        else:
            used[key] = 0
        keys[layer.name] = key
    return keys


def _read_keras3(handle: h5py.File, reference: keras.Model) -> dict[str, list[np.ndarray]]:
    keys = _keras3_keys(reference)
    group = handle["layers"]
    arrays: dict[str, list[np.ndarray]] = {}
    used_keys = set()
    for layer in reference.layers:
        if not layer.weights:
            continue
        key = keys[layer.name]
        used_keys.add(key)
        if key not in group or "vars" not in group[key]:
            arrays[layer.name] = []
            continue
        vars_group = group[key]["vars"]
        arrays[layer.name] = [np.asarray(vars_group[str(i)]) for i in range(len(vars_group))]
    extra = sorted(
        k for k in group if k not in used_keys and "vars" in group[k] and len(group[k]["vars"])
    )
    if extra:
        arrays["__extra__"] = extra  # type: ignore[assignment]
    return arrays


def _read_legacy(handle: h5py.File) -> dict[str, list[np.ndarray]]:
    root = handle["model_weights"] if "model_weights" in handle else handle
    arrays: dict[str, list[np.ndarray]] = {}
    for raw in root.attrs["layer_names"]:
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        layer_group = root[name]
        weight_names = [
            w.decode() if isinstance(w, bytes) else str(w)
            for w in layer_group.attrs.get("weight_names", [])
        ]
        if weight_names:
            arrays[name] = [np.asarray(layer_group[w]) for w in weight_names]
    return arrays


def read_weights_file(
    path: str | os.PathLike, backbone: str | EncoderSpec
) -> dict[str, list[np.ndarray]]:
    """Reads a backbone weights file into `{layer_name: [arrays]}` and checks it fits.

    Args:
        path: a Keras 3 `.weights.h5` file of the backbone, or a legacy Keras 2 `.h5` file
            (such as keras.applications' `*_notop.h5`).
        backbone: the backbone the file must fit: registry name or `EncoderSpec`.

    Returns:
        The arrays for every backbone layer that has weights, keyed by layer name.
    """
    spec = get_encoder_spec(backbone)
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"Backbone weights file not found: '{path}'. Pass an existing .weights.h5/.h5 file, "
            f"weights='imagenet', or weights=None."
        )
    reference = _reference_backbone(spec)
    try:
        with h5py.File(path, "r") as handle:
            if "layer_names" in handle.attrs or "model_weights" in handle:
                arrays = _read_legacy(handle)
            elif "layers" in handle:
                arrays = _read_keras3(handle, reference)
            else:
                raise WeightsError(
                    f"'{path}' is an HDF5 file but not a Keras weights file (no 'layers' group "
                    f"and no 'layer_names' attribute)."
                )
    except WeightsError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise WeightsError(
            f"Cannot read weights file '{path}': it is corrupt or not an HDF5 Keras weights "
            f"file ({exc.__class__.__name__}: {exc})."
        ) from None
    _check_fits(path, spec.name, reference, arrays)
    return {name: arrays[name] for name in arrays if name != "__extra__"}


def _check_fits(
    path: Path, backbone: str, reference: keras.Model, arrays: dict[str, list[np.ndarray]]
) -> None:
    expected_names = []
    for layer in reference.layers:
        if not layer.weights:
            continue
        expected_names.append(layer.name)
        expected = [tuple(w.shape) for w in layer.weights]
        found = [tuple(a.shape) for a in arrays.get(layer.name, [])]
        if not found:
            raise WeightsError(
                f"Weights file '{path}' does not fit backbone {backbone!r}: it has no weights for "
                f"layer {layer.name!r} ({layer.__class__.__name__}, shapes {expected}). Is it a "
                f"file for another architecture?"
            )
        if found != expected:
            raise WeightsError(
                f"Weights file '{path}' does not fit backbone {backbone!r}: layer {layer.name!r} "
                f"has shapes {found} in the file but {expected} in the backbone."
            )
    extra = arrays.get("__extra__") or [n for n in arrays if n not in set(expected_names)]
    if extra:
        raise WeightsError(
            f"Weights file '{path}' does not fit backbone {backbone!r}: it holds weights for "
            f"layers the backbone does not have, first {list(extra)[0]!r} ({len(extra)} in all). "
            f"Is it a file for another architecture?"
        )


def imagenet_weights(backbone: str | EncoderSpec) -> dict[str, list[np.ndarray]]:
    """Gets ImageNet no-top weights through keras.applications (cache first, then download).

    Args:
        backbone: registry name or `EncoderSpec`.

    Returns:
        `{layer_name: [arrays]}` for every backbone layer with weights.
    """
    spec = get_encoder_spec(backbone)
    cached = keras_cache_dir() / spec.weights_file
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        base = spec.constructor(include_top=False, weights="imagenet",
                                   input_shape=(None, None, 3))
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
    return {layer.name: layer.get_weights() for layer in base.layers if layer.weights}


def load_backbone_weights(
    model: keras.Model, backbone: str | EncoderSpec, weights: str | os.PathLike
) -> int:
    """Assigns backbone weights to the encoder layers of `model`, matched by layer name.

    Args:
        model: a model built by `build_encoder` or `build_vgg_unet` for `backbone`.
        backbone: registry name or `EncoderSpec` (the builders pass the spec they resolved).
        weights: `"imagenet"` or a path to a weights file (see `read_weights_file`).

    Returns:
        The number of layers whose weights were assigned.
    """
    spec = get_encoder_spec(backbone)
    if isinstance(weights, str) and weights == "imagenet":
        arrays = imagenet_weights(spec)
    else:
        arrays = read_weights_file(weights, spec)
    names = {layer.name for layer in model.layers}
    for name, values in arrays.items():
        if name not in names:
            raise WeightsError(
                f"Model {model.name!r} has no layer {name!r} to receive backbone weights; was it "
                f"built with backbone {spec.name!r}?"
            )
        model.get_layer(name).set_weights(values)
    return len(arrays)
