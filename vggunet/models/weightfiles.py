"""Reading Keras weights files into a backbone's own order, checked layer by layer.

Two layouts: Keras 3 `.weights.h5` files key each layer's group by its class and position
(`layers/conv2d_7/vars/0`, nested models under their own `layers/`), so they are read by
position; legacy Keras 2 files (keras.applications' `*_notop.h5`) name their layers and list a
layer's trainable weights before the others. `vggunet.models.weights` holds the public API.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import h5py
import keras
import numpy as np

from vggunet.errors import WeightsError

Arrays = list[np.ndarray]
Found = list[tuple[str, Arrays]]
"""`[(where, arrays)]`, one per reference layer with weights; `where` says how the file's
entry was found ("" when by the layer's own name)."""


def snake_case(name: str) -> str:
    """The snake-casing Keras names layers and file groups with (`naming.to_snake_case`).

    Args:
        name: a class name.

    Returns:
        The snake-cased name.

    Example:
        >>> snake_case("BatchNormalization"), snake_case("Conv2D"), snake_case("ReLU")
        ('batch_normalization', 'conv2d', 're_lu')
    """
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def weighted_layers(layers: Sequence[keras.layers.Layer]) -> list[keras.layers.Layer]:
    """The layers that have weights, in order.

    Args:
        layers: layers, e.g. `model.layers`.

    Returns:
        Those with at least one weight.
    """
    return [layer for layer in layers if layer.weights]


def shapes(arrays: Sequence[Any]) -> list[tuple]:
    """The shapes of arrays or variables, for messages.

    Args:
        arrays: numpy arrays or Keras variables.

    Returns:
        Their shapes as tuples.
    """
    return [tuple(a.shape) for a in arrays]


def _container_keys(layers: Sequence[keras.layers.Layer]) -> list[str]:
    """The group names Keras 3 gives a list of layers in a `.weights.h5` file: class, numbered."""
    used: dict[str, int] = {}
    keys = []
    for layer in layers:
        key = snake_case(layer.__class__.__name__)
        used[key] = used.get(key, -1) + 1
        keys.append(f"{key}_{used[key]}" if used[key] else key)
    return keys


def _group_arrays(group: h5py.Group, layer: keras.layers.Layer) -> Arrays:
    """A layer's arrays in a Keras 3 file, in `layer.weights` order, nested models included."""
    arrays = []
    if "vars" in group:
        arrays = [np.asarray(group["vars"][str(i)]) for i in range(len(group["vars"]))]
    if isinstance(layer, keras.Model) and "layers" in group:
        children = group["layers"]
        for child, key in zip(layer.layers, _container_keys(layer.layers)):
            if child.weights and key in children:
                arrays += _group_arrays(children[key], child)
    return arrays


def _holds_arrays(group: h5py.Group) -> bool:
    return group.visititems(lambda _, item: isinstance(item, h5py.Dataset) or None) is not None


def _read_keras3(handle: h5py.File, reference: keras.Model) -> tuple[Found, list[str]]:
    """`Found` for the reference's layers with weights, and unused groups that hold data."""
    group = handle["layers"]
    found, used = [], set()
    for layer, key in zip(reference.layers, _container_keys(reference.layers)):
        if layer.weights:
            used.add(key)
            found.append((f"its group 'layers/{key}'",
                          _group_arrays(group[key], layer) if key in group else []))
    extra = sorted(key for key in group if key not in used and _holds_arrays(group[key]))
    return found, extra


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_legacy(handle: h5py.File) -> list[tuple[str, Arrays]]:
    """`[(layer name, arrays)]` of a Keras 2 layout file, for its layers with weights, in order."""
    root = handle["model_weights"] if "model_weights" in handle else handle
    entries = []
    for name in map(_text, root.attrs["layer_names"]):
        weight_names = [_text(w) for w in root[name].attrs.get("weight_names", [])]
        if weight_names:
            entries.append((name, [np.asarray(root[name][w]) for w in weight_names]))
    return entries


def _legacy_to_weights_order(layer: keras.layers.Layer, arrays: Arrays) -> Arrays:
    # Legacy files list a layer's trainable weights, then the others (Keras 2's `weights`);
    # `set_weights` wants `layer.weights` order, which differs for nested models.
    legacy = [*layer.trainable_weights, *layer.non_trainable_weights]
    if len(legacy) != len(arrays) or len(legacy) != len(layer.weights):
        return arrays  # the fit check reports the count
    position = {id(variable): i for i, variable in enumerate(legacy)}
    return [arrays[position[id(variable)]] for variable in layer.weights]


def match_entries(
    weighted: list[keras.layers.Layer], entries: list[tuple[str, Arrays]]
) -> tuple[Found, list[str]]:
    """Pairs named entries with the reference's layers: by name when every layer finds its name,
    else by order (Keras's legacy rule; names Keras made up differ between sessions).

    Args:
        weighted: the reference's layers with weights, in order.
        entries: `[(name, arrays)]` from a file or another build of the backbone.

    Returns:
        `(found, names of entries left over)`; a layer without a partner gets `("", [])`.
    """
    by_name = dict(entries)
    if all(layer.name in by_name for layer in weighted):
        wanted = {layer.name for layer in weighted}
        return ([("", by_name[layer.name]) for layer in weighted],
                [name for name, _ in entries if name not in wanted])
    paired = [(f"its layer {name!r}, matched by order", arrays)
              for name, arrays in entries[:len(weighted)]]
    paired += [("", [])] * (len(weighted) - len(paired))
    return paired, [name for name, _ in entries[len(weighted):]]


def check_fits(source: str, backbone: str, weighted: list, found: Found, extra: list) -> None:
    """Raises `WeightsError` at the first reference layer without arrays of its shapes, or when
    entries are left over.

    Args:
        source: the file (or "ImageNet"), for messages.
        backbone: the backbone's name, for messages.
        weighted: the reference's layers with weights.
        found: what was found for each (`read_file`, `match_entries`).
        extra: names of entries no layer took.

    Returns:
        None.
    """
    for layer, (where, arrays) in zip(weighted, found):
        expected = shapes(layer.weights)
        where = f" ({where})" if where else ""
        if not arrays:
            raise WeightsError(
                f"Weights file '{source}' does not fit backbone {backbone!r}: it has no weights "
                f"for layer {layer.name!r} ({layer.__class__.__name__}, shapes {expected}). Is it "
                f"a file for another architecture?"
            )
        if shapes(arrays) != expected:
            raise WeightsError(
                f"Weights file '{source}' does not fit backbone {backbone!r}: layer {layer.name!r} "
                f"has shapes {shapes(arrays)} in the file{where} but {expected} in the backbone."
            )
    if extra:
        raise WeightsError(
            f"Weights file '{source}' does not fit backbone {backbone!r}: it holds weights for "
            f"layers the backbone does not have, first {extra[0]!r} ({len(extra)} in all). "
            f"Is it a file for another architecture?"
        )


def read_file(path: Path, reference: keras.Model) -> tuple[Found, list[str]]:
    """Reads a weights file for the reference's layers with weights, in `layer.weights` order.

    Args:
        path: a Keras 3 `.weights.h5` or legacy `.h5` file.
        reference: the backbone the file should fit (`include_top=False`, 3 channels).

    Returns:
        `(found, extra)` for `check_fits`.
    """
    weighted = weighted_layers(reference.layers)
    try:
        with h5py.File(path, "r") as handle:
            if "layer_names" in handle.attrs or "model_weights" in handle:
                found, extra = match_entries(weighted, _read_legacy(handle))
                return [(where, _legacy_to_weights_order(layer, arrays))
                        for layer, (where, arrays) in zip(weighted, found)], extra
            if "layers" in handle:
                return _read_keras3(handle, reference)
    except (OSError, KeyError, ValueError) as exc:
        raise WeightsError(
            f"Cannot read weights file '{path}': it is corrupt or not an HDF5 Keras weights "
            f"file ({exc.__class__.__name__}: {exc})."
        ) from None
    raise WeightsError(
        f"'{path}' is an HDF5 file but not a Keras weights file (no 'layers' group "
        f"and no 'layer_names' attribute)."
    )
