"""Losses by name: ``LOSS_NAMES`` and ``get_loss`` (what ``--loss`` and ``compile_model`` use).

To add a loss, define its class in a module of this package (register it with
``@keras.saving.register_keras_serializable(package=PACKAGE)``), add its name to
``_LOSS_CLASSES`` below and export it from ``vggunet/losses/__init__.py``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import keras

from vggunet import choices
from vggunet.checks import did_you_mean
from vggunet.errors import ArgumentError, UnexpectedArgumentError
from vggunet.losses.combined import CombinedLoss
from vggunet.losses.crossentropy import (
    FocalLoss,
    OhemCrossEntropyLoss,
    SparseCategoricalCrossentropy,
)
from vggunet.losses.lovasz import LovaszSoftmaxLoss
from vggunet.losses.overlap import DiceLoss, JaccardLoss
from vggunet.losses.volumetric import SoftDiceLoss

__all__ = ["LOSS_NAMES", "UnexpectedArgumentError", "get_loss"]


_LOSS_CLASSES: dict[str, type[keras.losses.Loss]] = {
    "ce": SparseCategoricalCrossentropy,
    "crossentropy": SparseCategoricalCrossentropy,
    "dice": DiceLoss,
    "jaccard": JaccardLoss,
    "focal": FocalLoss,
    "lovasz": LovaszSoftmaxLoss,
    "ohem": OhemCrossEntropyLoss,
    "soft_dice": SoftDiceLoss,
}
# A combination: its children, built from the same keyword arguments, and its name.
_COMBINATIONS: dict[str, tuple[tuple[type[keras.losses.Loss], ...], str]] = {
    "ce+dice": ((SparseCategoricalCrossentropy, DiceLoss), "ce_dice_loss"),
}

#: Names accepted by :func:`get_loss` (listed in `vggunet.choices`, which the CLI reads).
LOSS_NAMES: tuple[str, ...] = choices.LOSS_NAMES

# Accepted for every name so a CLI can pass them unconditionally; dropped by
# the losses that have no use for them (e.g. num_classes for "ce", data_format for all but
# the volume loss "soft_dice", whose one-hot targets sit on the model's channel axis).
_COMMON_KWARGS = frozenset({"num_classes", "from_logits", "ignore_index", "class_weights",
                            "data_format"})
# Keyword arguments of a combination that go to CombinedLoss, not to its children.
_COMBINED_KWARGS = frozenset({"weights", "reduction", "dtype"})


def _init_params(cls: type) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self", "name"}


def _build(cls: type[keras.losses.Loss], kwargs: Mapping[str, Any]) -> keras.losses.Loss:
    accepted = _init_params(cls)
    return cls(**{k: v for k, v in kwargs.items() if k in accepted})


def _check_kwargs(key: str, classes: tuple[type, ...], kwargs: Mapping[str, Any]) -> None:
    """Raise if a keyword is accepted by none of the losses that ``key`` builds."""
    accepted = set().union(_COMMON_KWARGS, *(_init_params(c) for c in classes))
    accepted -= {"first", "second"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise UnexpectedArgumentError(
            f"Loss {key!r} does not accept argument(s) {unknown}; accepted: "
            f"{sorted(accepted)}."
        )


def get_loss(name: str | keras.losses.Loss, **kwargs: Any) -> keras.losses.Loss:
    """Build a loss from its CLI name.

    Keyword arguments are routed to every constructor that accepts them, so a
    caller may always pass the common ones (``num_classes``, ``from_logits``,
    ``ignore_index``, ``class_weights``) whatever the name; e.g.
    ``num_classes`` is dropped for ``"ce"``. For ``"ce+dice"``, ``weights``
    goes to :class:`CombinedLoss` and the rest to both children.

    Args:
        name: One of ``LOSS_NAMES`` (case-insensitive), or a Loss instance,
            which is returned unchanged.
        **kwargs: Constructor arguments.

    Returns:
        The loss instance.

    Raises:
        ArgumentError: If the name is unknown (the message lists valid names
            and suggests the closest).
        UnexpectedArgumentError: A ``TypeError``: a keyword is accepted by
            none of the involved losses, or keywords came with a Loss instance.

    Example:
        >>> import numpy as np
        >>> y_true = np.array([[[0, 1], [1, 1]]])                    # (B, H, W) labels
        >>> y_pred = np.array([[[[0.9, 0.1], [0.2, 0.8]],
        ...                     [[0.3, 0.7], [0.4, 0.6]]]], "float32")  # (B, H, W, K) probs
        >>> type(get_loss("ce+dice", num_classes=2)).__name__
        'CombinedLoss'
        >>> round(float(get_loss("ce")(y_true, y_pred)), 4)
        0.299
        >>> round(float(get_loss("dice", num_classes=2)(y_true, y_pred)), 4)
        0.2122
        >>> type(get_loss("lovasz", num_classes=2, per_image=True)).__name__
        'LovaszSoftmaxLoss'
        >>> get_loss("jacard")
        Traceback (most recent call last):
        ...
        vggunet.errors.ArgumentError: Unknown loss 'jacard'; valid names are: ce, crossentropy,
        dice, jaccard, focal, ce+dice, lovasz, ohem, soft_dice. Did you mean 'jaccard'?
    """
    if isinstance(name, keras.losses.Loss):
        if kwargs:
            raise UnexpectedArgumentError(
                f"Keyword arguments {sorted(kwargs)} given with a Loss instance."
            )
        return name
    key = name.strip().lower() if isinstance(name, str) else None
    if key in _LOSS_CLASSES:
        _check_kwargs(key, (_LOSS_CLASSES[key],), kwargs)
        return _build(_LOSS_CLASSES[key], kwargs)
    if key in _COMBINATIONS:
        children, combined_name = _COMBINATIONS[key]
        _check_kwargs(key, (*children, CombinedLoss), kwargs)
        child_kwargs = {k: v for k, v in kwargs.items() if k not in _COMBINED_KWARGS}
        combined_kwargs = {k: v for k, v in kwargs.items() if k in _COMBINED_KWARGS}
        return CombinedLoss(*(_build(child, child_kwargs) for child in children),
                            name=combined_name, **combined_kwargs)
    raise ArgumentError(
        f"Unknown loss {name!r}; valid names are: {', '.join(LOSS_NAMES)}."
        f"{did_you_mean(key, LOSS_NAMES)}"
    )
