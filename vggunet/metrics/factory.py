"""Metrics by name: ``METRIC_NAMES`` and ``get_metrics`` (what ``--metrics`` and
``compile_model`` use).

To add a metric, define its class in :mod:`vggunet.metrics.confusion` (or a new module of this
package; register it with ``@keras.saving.register_keras_serializable(package=PACKAGE)``), add
its name to ``_METRIC_CLASSES`` below and export it from ``vggunet/metrics/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from vggunet import choices
from vggunet.checks import did_you_mean
from vggunet.errors import ArgumentError

# From the submodule, not the `vggunet.losses` package: see vggunet.losses.base.
from vggunet.losses.base import validate_num_classes
from vggunet.metrics.confusion import DiceScore, MeanIoU, PerClassIoU, PixelAccuracy
from vggunet.metrics.volumetric import (
    DiceCoefficient, PerClassDice, PerClassSensitivity, PerClassSpecificity,
)

__all__ = ["METRIC_NAMES", "get_metrics"]

_METRIC_CLASSES: dict[str, type[keras.metrics.Metric]] = {
    "miou": MeanIoU,
    "iou": PerClassIoU,
    "dice": DiceScore,
    "accuracy": PixelAccuracy,
}
# The lab's volume metrics: one-hot multi-label targets on the model's channel axis, so they
# take the data format instead of an ignore_index.
_VOLUME_METRIC_CLASSES: dict[str, type[keras.metrics.Metric]] = {
    "dice_coefficient": DiceCoefficient,
    "class_dice": PerClassDice,
    "sensitivity": PerClassSensitivity,
    "specificity": PerClassSpecificity,
}

#: Names accepted by :func:`get_metrics` (listed in `vggunet.choices`, which the CLI reads).
METRIC_NAMES: tuple[str, ...] = choices.METRIC_NAMES


def get_metrics(
    names: str | Sequence[str],
    num_classes: int,
    ignore_index: int | None = None,
    from_logits: bool = False,
    data_format: str | None = None,
) -> list[keras.metrics.Metric]:
    """Build metrics from CLI names.

    Args:
        names: A name, a comma-separated string of names, or a sequence of
            names, from ``METRIC_NAMES`` (case-insensitive): ``"miou"``
            (:class:`MeanIoU`), ``"iou"`` (:class:`PerClassIoU`), ``"dice"``
            (:class:`DiceScore`), ``"accuracy"`` (:class:`PixelAccuracy`); for sigmoid
            multi-label volumes (the brain-tumour lab's): ``"dice_coefficient"``
            (:class:`DiceCoefficient`), ``"class_dice"``, ``"sensitivity"``,
            ``"specificity"`` (per-class vectors).
        num_classes: Number of classes (``1`` = binary sigmoid output); for the volume
            metrics, the number of sigmoid channels.
        ignore_index: Label value not counted, or ``None``.
        from_logits: Whether a single-channel output holds logits (the volume metrics:
            whether every channel does).
        data_format: Where the volume metrics find the channel axis (``None``: Keras's
            ``image_data_format()``); unused by the others.

    Returns:
        New metric instances, in the order given.

    Raises:
        ArgumentError: On an unknown name (the message lists valid ones and
            suggests the closest) or invalid ``num_classes`` / ``ignore_index``.

    Example:
        >>> [m.name for m in get_metrics("miou,dice,accuracy", num_classes=2)]
        ['mean_iou', 'dice_score', 'pixel_accuracy']
        >>> [m.name for m in get_metrics("dice_coefficient,sensitivity", num_classes=3,
        ...                              data_format="channels_first")]
        ['dice_coefficient', 'per_class_sensitivity']
        >>> get_metrics("mean_iou", num_classes=2)
        Traceback (most recent call last):
        ...
        vggunet.errors.ArgumentError: Unknown metric 'mean_iou'; valid names are: miou, iou,
        dice, accuracy, dice_coefficient, class_dice, sensitivity, specificity. Did you mean
        'miou'?
    """
    if isinstance(names, str):
        names = [part for part in names.split(",") if part.strip()]
    # Checked here too so a bad num_classes fails whatever the names (PixelAccuracy takes none).
    validate_num_classes(num_classes)
    metrics: list[keras.metrics.Metric] = []
    for raw in names:
        key = raw.strip().lower() if isinstance(raw, str) else raw
        cls = _METRIC_CLASSES.get(key) if isinstance(key, str) else None
        if key in _VOLUME_METRIC_CLASSES:
            metrics.append(_VOLUME_METRIC_CLASSES[key](num_classes, data_format=data_format,
                                                       from_logits=from_logits))
            continue
        if cls is None:
            raise ArgumentError(
                f"Unknown metric {raw!r}; valid names are: {', '.join(METRIC_NAMES)}."
                f"{did_you_mean(key, METRIC_NAMES)}"
            )
        if cls is PixelAccuracy:
            metrics.append(PixelAccuracy(ignore_index, from_logits=from_logits))
        else:
            metrics.append(cls(num_classes, ignore_index, from_logits=from_logits))
    return metrics
