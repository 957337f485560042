"""Layer roles: which part of a segmentation network each layer belongs to.

Roles are `input`, `encoder`, `skip` (an encoder layer whose output is skip-connected to the
decoder), `bottleneck`, `decoder` and `head`. vggunet's builders record them when they build a
model (`vggunet.models.model.SegmentationModel` keeps them in its config, so they survive
`.keras` save/load); inspection and freezing read that record.

Models without a record (plain Functional models, such as files saved by vggunet before roles
were recorded, or models users assemble themselves) get roles inferred the way the builders
name layers: `input_*`, `bottleneck*`, `decoder_*` and `head_*`, the rest encoder, and as skips
the encoder layers that feed a decoder concatenation (directly or through a `*_skip_bn`
BatchNorm). The graph is read with public Keras API only: a layer's `input` and `output`
tensors, matched by identity.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import keras

ROLES = ("input", "encoder", "skip", "bottleneck", "decoder", "head")

# The name prefixes vggunet's builders give the layers they create, and the role each means.
# Everything else a builder adds belongs to a backbone, i.e. to the encoder.
PREFIX_ROLES = (("input_", "input"), ("bottleneck", "bottleneck"), ("decoder_", "decoder"),
                ("head_", "head"))
ENCODER_ROLES = ("encoder", "skip")


def role_of_name(layer: keras.layers.Layer) -> str:
    """The role a layer's class and name give it (`skip` is never given: that needs the graph).

    Args:
        layer: a Keras layer.

    Returns:
        `"input"` for an `InputLayer` or an `input_*` name, the role of the name's prefix
        (`bottleneck*`, `decoder_*`, `head_*`), else `"encoder"`.

    Example:
        >>> role_of_name(keras.layers.Conv2D(1, 1, name="decoder_stage1_conv1"))
        'decoder'
        >>> role_of_name(keras.layers.Conv2D(1, 1, name="block1_conv1"))
        'encoder'
    """
    if isinstance(layer, keras.layers.InputLayer):
        return "input"
    for prefix, role in PREFIX_ROLES:
        if layer.name.startswith(prefix):
            return role
    return "encoder"


def _flat(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _single_call(layer: keras.layers.Layer, attribute: str) -> list:
    """The layer's input or output tensors, or [] when it was called more than once."""
    try:
        return _flat(getattr(layer, attribute))
    except (AttributeError, ValueError):  # never called, or called several times
        return []


def tensor_producers(model: keras.Model) -> dict[int, keras.layers.Layer]:
    """Maps each layer output tensor of `model` (by `id`) to the layer that produced it.

    Args:
        model: a Functional model.

    Returns:
        `{id(tensor): layer}` for the outputs of every layer called once.
    """
    return {id(tensor): layer for layer in model.layers
            for tensor in _single_call(layer, "output")}


def layer_names_of(model: keras.Model, tensors: Iterable[Any]) -> list[str]:
    """The names of the layers of `model` that produced `tensors`, in the order given.

    Args:
        model: the Functional model the tensors belong to.
        tensors: output tensors of its layers.

    Returns:
        The producing layers' names.
    """
    producers = tensor_producers(model)
    return [producers[id(tensor)].name for tensor in tensors]


def graph_skip_names(model: keras.Model) -> list[str]:
    """Encoder layers whose outputs reach a decoder concatenation, read from the graph.

    Args:
        model: a U-Net whose decoder concatenations are named `decoder_*`.

    Returns:
        Layer names in model order.
    """
    producers = tensor_producers(model)
    feeding = set()
    for layer in model.layers:
        if not (isinstance(layer, keras.layers.Concatenate) and layer.name.startswith("decoder_")):
            continue
        for tensor in _single_call(layer, "input"):
            source = producers.get(id(tensor))
            if source is not None and source.name.endswith("_skip_bn"):
                # skip_batchnorm=True puts a decoder BatchNorm between a skip and its concat.
                inputs = _single_call(source, "input")
                source = producers.get(id(inputs[0])) if inputs else None
            if source is not None and role_of_name(source) == "encoder":
                feeding.add(source.name)
    return [layer.name for layer in model.layers if layer.name in feeding]


def assign_roles(
    model: keras.Model, skips: Iterable[str] = (), known: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Roles for every layer: `known` ones as given, the others from their names and `skips`.

    Args:
        model: a Keras model.
        skips: names of encoder layers that are skip connections.
        known: roles already decided (e.g. an encoder's record), which take precedence.

    Returns:
        `{layer_name: role}` in `model.layers` order.
    """
    known = known or {}
    skips = set(skips)
    roles = {}
    for layer in model.layers:
        role = known.get(layer.name) or role_of_name(layer)
        if role == "encoder" and layer.name in skips:
            role = "skip"
        roles[layer.name] = role
    return roles


def infer_roles(model: keras.Model) -> dict[str, str]:
    """Roles of a model that carries no record, from layer names and the graph.

    Args:
        model: a Keras model, ideally built by vggunet (its layers named by the builder).

    Returns:
        `{layer_name: role}` in `model.layers` order.
    """
    return assign_roles(model, graph_skip_names(model))


def recorded_roles(model: keras.Model) -> dict[str, str]:
    """The roles recorded when `model` was built, completed by inference where there are none.

    Args:
        model: any Keras model; vggunet's builders return one that carries a record.

    Returns:
        `{layer_name: role}` in `model.layers` order.
    """
    record = getattr(model, "roles", None)
    record = dict(record) if isinstance(record, Mapping) else {}
    names = [layer.name for layer in model.layers]
    if record and all(name in record for name in names):
        return {name: record[name] for name in names}
    inferred = infer_roles(model)
    return {name: record.get(name, inferred[name]) for name in names}
