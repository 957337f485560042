"""The backbone's own layer numbering: `"encoder[M:N]"` specs and the layers they select.

vggunet's builders record which layer of a model each layer of
`keras.applications.<Backbone>(include_top=False).layers` is (`model.backbone_layers`; entry 0 is
the model's input). Seed code freezes in that numbering (`VGG16(...).layers[:10]`, i.e. the
input and block1_conv1 ... block3_conv3); these helpers map such a slice onto the model, for
every backbone. This module imports no Keras, so the CLI checks `--freeze encoder[:10]` before
it loads TensorFlow.
"""

from __future__ import annotations

import re
from typing import Any

from vggunet.errors import ArgumentError

ENCODER_SLICE_FORMS = "'encoder[:N]', 'encoder[M:N]' or 'encoder[M:]'"
"""The spellings of a slice of the backbone's numbering, for messages and help texts."""

_ENCODER_SLICE = re.compile(r"encoder\[\s*([-+]?\d*)\s*:\s*([-+]?\d*)\s*\]")


def parse_encoder_slice(text: str) -> slice | None:
    """The slice that an `"encoder[M:N]"` spec names; None for any other spec.

    Args:
        text: a freeze spec string.

    Returns:
        `slice(M, N)` (None for an omitted bound), or None when `text` is not of that form.
        A string that starts like one but is malformed raises `ArgumentError`.

    Example:
        >>> parse_encoder_slice("encoder[:10]"), parse_encoder_slice("encoder[3:10]")
        (slice(None, 10, None), slice(3, 10, None))
        >>> parse_encoder_slice("encoder[10:]"), parse_encoder_slice("encoder")
        (slice(10, None, None), None)
    """
    if not text.replace(" ", "").startswith("encoder["):
        return None
    match = _ENCODER_SLICE.fullmatch(text.strip())
    if not match:
        raise ArgumentError(f"freeze spec {text!r} is not a slice of the backbone's layers; "
                            f"write {ENCODER_SLICE_FORMS} with whole numbers N, M.")
    start, stop = (int(value) if value else None for value in match.groups())
    return slice(start, stop)


def as_slice(encoder_layers: Any) -> slice:
    """`encoder_layers=` of `freeze`/`unfreeze` as a slice.

    Args:
        encoder_layers: an int N (the backbone's layers `[:N]`) or a slice.

    Returns:
        The slice.

    Example:
        >>> as_slice(10), as_slice(slice(3, 10))
        (slice(None, 10, None), slice(3, 10, None))
    """
    if isinstance(encoder_layers, slice):
        return encoder_layers
    if isinstance(encoder_layers, bool) or not isinstance(encoder_layers, int):
        raise ArgumentError(f"encoder_layers must be an int N (layers [:N] of the backbone) or "
                            f"a slice, got {encoder_layers!r} ({type(encoder_layers).__name__}).")
    return slice(None, encoder_layers)


def backbone_range(model: Any, layers_slice: slice, text: str) -> list:
    """The model's layers that `keras.applications.<Backbone>(...).layers[layers_slice]` are.

    Args:
        model: a model built by vggunet (it records `backbone_layers`).
        layers_slice: bounds >= 0, no step.
        text: how the user wrote it, for messages (e.g. `"freeze spec 'encoder[:10]'"`).

    Returns:
        The selected layers in model order; backbone layers the model cut off (after the
        bottleneck source) are skipped, as slicing past the end of a list skips nothing more.
    """
    record = list(getattr(model, "backbone_layers", None) or [])
    if not record:
        raise ArgumentError(
            f"{text}: model {model.name!r} has no record of its backbone's layer numbering (the "
            f"builders of this release record it; a model built by an earlier release or by "
            f"hand has none). Use a layer count, 'encoder', up_to= or layer names instead."
        )
    bounds = (layers_slice.start, layers_slice.stop)
    if layers_slice.step not in (None, 1) or any(b is not None and b < 0 for b in bounds):
        raise ArgumentError(
            f"{text}: give whole numbers >= 0 and no step ({ENCODER_SLICE_FORMS}); the model "
            f"keeps {len(record)} of the backbone's layers (those after the bottleneck source "
            f"are cut off), so counting from the end would not match the plain backbone."
        )
    chosen = set(record[layers_slice])
    if not chosen:
        raise ArgumentError(
            f"{text} selects no layer of model {model.name!r}: it keeps backbone layers 0.."
            f"{len(record) - 1} (the 'backbone #' column of vggunet.print_layers)."
        )
    return [layer for layer in model.layers if layer.name in chosen]
