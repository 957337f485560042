"""Layer inspection: a readable table of index, name, class, trainable, shape, params and role."""

from __future__ import annotations

import dataclasses
import sys
from typing import IO

import keras

from vggunet.checks import check_choice
from vggunet.models.roles import ROLES, recorded_roles  # noqa: F401  ROLES: public here too


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One row of `layer_table`.

    `backbone_index` is the layer's index in the backbone's own numbering
    (`keras.applications.<Backbone>(include_top=False).layers[i]`, the model's input at 0; the
    `"encoder[:N]"` freeze specs count in it), None for layers that are not the backbone's.
    """

    index: int
    name: str
    class_name: str
    trainable: bool
    output_shape: str
    params: int
    role: str
    backbone_index: int | None = None


def all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer of `model`, nested models' layers included (each after its model), in order.

    Args:
        model: a Keras model.

    Returns:
        The layers, depth first.

    Example:
        >>> inner = keras.Sequential([keras.layers.Dense(2, name="d")], name="inner")
        >>> outer = keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(1, name="o")])
        >>> [layer.name for layer in all_layers(outer)]
        ['inner', 'd', 'o']
    """
    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found.extend(all_layers(layer))
    return found


def skip_layer_names(model: keras.Model) -> list[str]:
    """Names of the encoder layers whose outputs are skip connections.

    Args:
        model: a model built by vggunet (recorded roles), or one whose decoder concatenations
            are named `decoder_*` (roles read from the graph).

    Returns:
        Layer names in model order.
    """
    return [name for name, role in layer_roles(model).items() if role == "skip"]


def layer_roles(model: keras.Model) -> dict[str, str]:
    """The role of every layer: input / encoder / skip / bottleneck / decoder / head.

    vggunet's builders record the roles when they build a model (`model.roles`, kept in the
    model's config through save/load). For models without that record (plain Functional
    models, e.g. files saved by earlier vggunet releases) roles come from vggunet's layer names
    (`input_*`, `bottleneck*`, `decoder_*`, `head_*`; everything else belongs to the encoder)
    and from the graph (an encoder layer feeding a decoder concatenation is a skip).

    Args:
        model: a Keras model, ideally built by vggunet.

    Returns:
        `{layer_name: role}` in `model.layers` order.

    Example:
        >>> from vggunet import build_unet
        >>> roles = layer_roles(build_unet(input_size=(32, 32, 3), n_filters=2))
        >>> roles["input_image"], roles["encoder_block1_conv1"], roles["encoder_block1_conv2"]
        ('input', 'encoder', 'skip')
        >>> roles["bottleneck_conv1"], roles["decoder_block1_up"], roles["head_conv"]
        ('bottleneck', 'decoder', 'head')
    """
    return recorded_roles(model)


def _shape_text(layer: keras.layers.Layer) -> str:
    try:
        output = layer.output
    except (AttributeError, ValueError):
        return "?"
    if isinstance(output, (list, tuple)):
        return ", ".join(str(tuple(t.shape)) for t in output)
    return str(tuple(output.shape))


def layer_table(model: keras.Model) -> list[LayerRow]:
    """One row per layer, in `model.layers` order (the index that `model.layers[i]` takes).

    Args:
        model: a built Keras model.

    Returns:
        A list of `LayerRow(index, name, class_name, trainable, output_shape, params, role,
        backbone_index)`; `backbone_index` is the index in the backbone's own numbering (what
        `"encoder[:N]"` counts), None for layers that are not the backbone's.

    Example:
        >>> from vggunet import build_vgg_unet
        >>> m = build_vgg_unet(input_shape=(64, 64, 3), weights=None,
        ...                    decoder_filters=(8, 8, 8, 8, 8), bottleneck_filters=8)
        >>> rows = layer_table(m)
        >>> rows[1]
        LayerRow(index=1, name='input_preprocess', class_name='BackbonePreprocess',
                 trainable=True, output_shape='(None, 64, 64, 3)', params=0, role='input',
                 backbone_index=None)
        >>> [(row.index, row.backbone_index) for row in rows if row.name == "block3_conv3"]
        [(10, 9)]
        >>> [row.name for row in rows if row.role == "skip"]
        ['block1_conv2', 'block2_conv2', 'block3_conv2', 'block4_conv2', 'block5_conv2']
        >>> sum(row.params for row in rows) == m.count_params()
        True
    """
    roles = layer_roles(model)
    numbering = {name: i for i, name in enumerate(getattr(model, "backbone_layers", None) or [])}
    return [
        LayerRow(
            index=i,
            name=layer.name,
            class_name=layer.__class__.__name__,
            trainable=bool(layer.trainable),
            output_shape=_shape_text(layer),
            params=int(layer.count_params()) if layer.built else 0,
            role=roles[layer.name],
            backbone_index=numbering.get(layer.name),
        )
        for i, layer in enumerate(model.layers)
    ]


def param_totals(model: keras.Model) -> dict[str, int]:
    """Trainable, frozen (non-trainable, incl. BatchNorm statistics) and total parameters.

    Args:
        model: a built Keras model.

    Returns:
        `{"trainable": int, "frozen": int, "total": int}`.
    """
    def count(variables: list) -> int:
        return int(sum(int(keras.ops.size(v)) for v in variables))

    trainable = count(model.trainable_weights)
    frozen = count(model.non_trainable_weights)
    return {"trainable": trainable, "frozen": frozen, "total": trainable + frozen}


def format_layers(model: keras.Model, roles: tuple[str, ...] | None = None) -> str:
    """Renders `layer_table` as an aligned text table with totals.

    The `backbone #` column beside the name is the layer's index in the backbone's own numbering
    (what `freeze(model, "encoder[:N]")` counts), blank for layers that are not the backbone's.

    Args:
        model: a built Keras model.
        roles: only show rows with these roles (totals still cover the whole model).

    Returns:
        The table as a string.

    Raises:
        ArgumentError: an unknown role (the valid ones and the closest named).
    """
    if roles is not None:
        roles = tuple(check_choice(role.strip(), ROLES, "role") for role in roles)
    rows = [r for r in layer_table(model) if roles is None or r.role in roles]
    header = ("#", "name", "backbone #", "class", "trainable", "output shape", "params", "role")
    cells = [
        (str(r.index), r.name, "" if r.backbone_index is None else str(r.backbone_index),
         r.class_name, "yes" if r.trainable else "no", r.output_shape, f"{r.params:,}", r.role)
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(header)]
    right = {0, 2, 6}

    def line(values: tuple) -> str:
        return "  ".join(
            v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths))
        ).rstrip()

    totals = param_totals(model)
    out = [f"Model: {model.name}", line(header), line(tuple("-" * w for w in widths))]
    out += [line(c) for c in cells]
    out.append(
        f"Layers: {len(model.layers)}  Params: {totals['total']:,} total, "
        f"{totals['trainable']:,} trainable, {totals['frozen']:,} frozen"
    )
    return "\n".join(out)


def print_layers(
    model: keras.Model, roles: tuple[str, ...] | None = None, file: IO[str] | None = None
) -> None:
    """Prints `format_layers(model)`: the readable version of
    `for i, layer in enumerate(model.layers): print(i, layer.name, layer.trainable, layer.output)`.

    Args:
        model: a built Keras model.
        roles: only show rows with these roles.
        file: where to print (default stdout).

    Returns:
        None.
    """
    print(format_layers(model, roles), file=file or sys.stdout)
