"""Segmentation metrics (registered under the `vggunet` package for `.keras` files).

One module per concern: `confusion` (the Keras metric classes), `offline` (NumPy confusion matrix
and scores for whole data sets), `factory` (`get_metrics` by name). Importing this package
registers every metric class.
"""

from vggunet.metrics.confusion import DiceScore, MeanIoU, PerClassIoU, PixelAccuracy
from vggunet.metrics.factory import METRIC_NAMES, get_metrics
from vggunet.metrics.offline import confusion_matrix, scores_from_confusion
from vggunet.metrics.volumetric import (
    DiceCoefficient,
    PerClassDice,
    PerClassSensitivity,
    PerClassSpecificity,
    volume_scores,
)

__all__ = [
    "MeanIoU",
    "PerClassIoU",
    "DiceScore",
    "PixelAccuracy",
    "DiceCoefficient",
    "PerClassDice",
    "PerClassSensitivity",
    "PerClassSpecificity",
    "volume_scores",
    "confusion_matrix",
    "scores_from_confusion",
    "get_metrics",
    "METRIC_NAMES",
]
