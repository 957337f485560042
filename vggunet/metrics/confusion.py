"""Keras metrics over an accumulated confusion matrix: mean/per-class IoU, Dice, pixel accuracy.

Conventions (shared with the losses, see :mod:`vggunet.losses.base`):

* ``y_true``: sparse integer labels ``(B, *spatial)`` or ``(B, *spatial, 1)``.
* ``y_pred``: ``(B, *spatial, K)`` probabilities or logits, reduced with
  ``argmax`` (identical for both); ``K == 1`` is a sigmoid channel,
  thresholded at 0.5 (at 0 when ``from_logits=True``). Integer-typed
  ``y_pred`` is taken as predicted labels directly.
* ``num_classes == 1`` denotes that binary single-channel case and is scored
  as two classes (background, foreground), so per-class results have two
  entries.
* Pixels whose label equals ``ignore_index``, and labels or predictions
  outside ``[0, num_classes)``, are not counted.
* ``sample_weight`` (``(B,)`` or ``(B, *spatial)``) weights pixel counts.

The confusion matrix ``cm[t, p]`` (truth ``t``, prediction ``p``) is a float32
variable so that it accumulates on every backend (int64 needs x64 mode on
JAX); float32 adds whole-batch counts, so the relative rounding error stays
around 1e-7 even for billions of pixels.

Absent classes: a class whose union (truth + prediction - intersection) is 0
over everything accumulated has no defined IoU/Dice. ``MeanIoU`` and
``DiceScore`` exclude such classes from the mean; ``PerClassIoU`` reports 0
for them (the vector has a fixed length and must stay NaN-free). Every
result is 0 while nothing has been counted.

All metric classes are registered for Keras serialization under the
``vggunet`` package.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from vggunet._serializables import PACKAGE
from vggunet.checks import check_bool
from vggunet.errors import ArgumentError

# From the submodule, not the `vggunet.losses` package: see vggunet.losses.base.
from vggunet.losses.base import (
    AttributeConfig,
    effective_num_classes,
    pixel_weights,
    prepare_labels,
    validate_ignore_index,
    validate_num_classes,
)

__all__ = ["DiceScore", "MeanIoU", "PerClassIoU", "PixelAccuracy"]


def _labels_and_weights(
    y_true: Any,
    y_pred: Any,
    sample_weight: Any | None,
    ignore_index: int | None,
    from_logits: bool,
    num_classes: int | None,
):
    """Predicted labels, true labels and pixel weights, all ``(B, *spatial)``.

    ``num_classes`` is the scored class count (``>= 2``) or ``None`` when the
    caller cannot check the channel count. Weights are 0 on ignored pixels.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    pred_dtype = keras.backend.standardize_dtype(y_pred.dtype)
    is_label_map = "int" in pred_dtype or pred_dtype == "bool"
    y_true = ops.convert_to_tensor(y_true)
    if is_label_map:
        pred_rank, true_rank = len(y_pred.shape), len(y_true.shape)
        if y_pred.shape[-1] == 1 and (
            pred_rank > true_rank or (pred_rank == true_rank and y_true.shape[-1] == 1)
        ):
            y_pred = ops.squeeze(y_pred, axis=-1)
        pred_labels = ops.cast(y_pred, "int32")
        labels, valid = prepare_labels(y_true, len(pred_labels.shape) + 1, ignore_index)
    else:
        channels = y_pred.shape[-1]
        if channels is None:
            raise ArgumentError(
                "The last (class) axis of y_pred must have a static size; "
                f"got shape {tuple(y_pred.shape)}."
            )
        if num_classes is not None and max(channels, 2) != num_classes:
            raise ArgumentError(
                f"y_pred has {channels} channel(s) but the metric scores "
                f"{num_classes} classes."
            )
        labels, valid = prepare_labels(y_true, len(y_pred.shape), ignore_index)
        if channels == 1:
            threshold = 0.0 if from_logits else 0.5
            scores = ops.cast(ops.squeeze(y_pred, axis=-1), "float32")
            pred_labels = ops.cast(scores > threshold, "int32")
        else:
            pred_labels = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
    weights = pixel_weights(valid, sample_weight)
    return labels, pred_labels, weights


class _SegmentationMetric(AttributeConfig, keras.metrics.Metric):
    """Base of vggunet's metrics: default name, ``ignore_index``, ``from_logits``, get_config."""

    default_name: str | None = None
    config_keys = ("ignore_index", "from_logits")

    def __init__(
        self,
        ignore_index: int | None = None,
        name: str | None = None,
        from_logits: bool = False,
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name or self.default_name, dtype=dtype)
        self.ignore_index = validate_ignore_index(ignore_index)
        self.from_logits = check_bool(from_logits, "from_logits")
        self._add_state()

    def _add_state(self) -> None:
        """Create the variables that accumulate over batches (subclasses define it)."""
        raise NotImplementedError(f"{type(self).__name__} must define _add_state")

    def _scored_classes(self) -> int | None:
        """The class count ``y_pred`` must score, or ``None`` for any."""
        return None

    def _accumulate(self, labels: Any, pred_labels: Any, weights: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define _accumulate")

    def update_state(
        self, y_true: Any, y_pred: Any, sample_weight: Any | None = None
    ) -> None:
        """Add one batch.

        Args:
            y_true: Sparse labels ``(B, *spatial)`` or ``(B, *spatial, 1)``.
            y_pred: Probabilities/logits ``(B, *spatial, K)`` or integer
                predicted labels.
            sample_weight: Optional ``(B,)`` or ``(B, *spatial)`` weights.
        """
        labels, pred_labels, weights = _labels_and_weights(
            y_true, y_pred, sample_weight, self.ignore_index, self.from_logits,
            self._scored_classes(),
        )
        self._accumulate(labels, pred_labels, weights)


class _ConfusionMatrixMetric(_SegmentationMetric):
    """Base class accumulating a ``(C, C)`` float32 confusion matrix.

    ``C = effective_num_classes(num_classes)``. The matrix is exposed as the
    ``total_cm`` variable so that callers can feed it to
    :func:`vggunet.metrics.scores_from_confusion`.
    """

    config_keys = ("num_classes", *_SegmentationMetric.config_keys)

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = None,
        name: str | None = None,
        from_logits: bool = False,
        dtype: Any = None,
    ) -> None:
        # Subclasses differ only in result() and default name, so no subclass __init__.
        self.num_classes = validate_num_classes(num_classes)
        self._size = effective_num_classes(self.num_classes)
        super().__init__(ignore_index, name, from_logits, dtype)

    def _add_state(self) -> None:
        self.total_cm = self.add_variable(
            shape=(self._size, self._size),
            initializer="zeros",
            dtype="float32",
            name="total_confusion_matrix",
        )

    def _scored_classes(self) -> int:
        return self._size

    def _accumulate(self, labels: Any, pred_labels: Any, weights: Any) -> None:
        size = self._size
        in_range = (
            (labels >= 0) & (labels < size) & (pred_labels >= 0) & (pred_labels < size)
        )
        weights = ops.where(in_range, weights, ops.zeros_like(weights))
        index = ops.where(in_range, labels * size + pred_labels, ops.zeros_like(labels))
        # segment_sum (unsorted) is a scatter-add with a static output size:
        # cheaper than a one-hot matmul and XLA-compatible, unlike bincount.
        counts = ops.segment_sum(
            ops.reshape(weights, (-1,)),
            ops.reshape(index, (-1,)),
            num_segments=size * size,
        )
        self.total_cm.assign_add(ops.reshape(ops.cast(counts, "float32"), (size, size)))

    def _components(self) -> tuple[Any, Any, Any]:
        cm = ops.convert_to_tensor(self.total_cm)
        true_positive = ops.diagonal(cm)
        true_count = ops.sum(cm, axis=1)
        pred_count = ops.sum(cm, axis=0)
        return true_positive, true_count, pred_count


def _mean_over_present(values: Any, present: Any) -> Any:
    present = ops.cast(present, "float32")
    return ops.divide_no_nan(ops.sum(values * present), ops.sum(present))


@keras.saving.register_keras_serializable(package=PACKAGE)
class MeanIoU(_ConfusionMatrixMetric):
    """Mean intersection-over-union over the classes that occur.

    ``IoU_c = cm[c, c] / (row_c + col_c - cm[c, c])``, averaged over classes
    whose union is non-zero (present in the truth or in the prediction over
    all accumulated batches); classes absent from both are excluded rather
    than counted as 0 or 1. 0 when nothing has been counted.

    Args:
        num_classes: Number of classes (``1`` = binary sigmoid output).
        ignore_index: Label value not counted, or ``None``.
        name: Metric name (default ``"mean_iou"``).
        from_logits: Only matters for a ``K == 1`` output: threshold the
            logit at 0 instead of the probability at 0.5.
        dtype: Keras dtype policy of the result.
    """

    default_name = "mean_iou"

    def result(self) -> Any:
        """Return the mean IoU over present classes.

        Returns:
            Scalar float32 tensor.
        """
        tp, true_count, pred_count = self._components()
        union = true_count + pred_count - tp
        return _mean_over_present(ops.divide_no_nan(tp, union), union > 0)


@keras.saving.register_keras_serializable(package=PACKAGE)
class PerClassIoU(_ConfusionMatrixMetric):
    """Intersection-over-union of every class, as a vector.

    ``result()`` has ``effective_num_classes(num_classes)`` entries; a class
    with zero union (absent from truth and prediction) reports 0, so the
    vector is NaN-free but an absent class cannot be told from a missed one
    here; use :func:`vggunet.metrics.scores_from_confusion` on ``total_cm``
    for the ``present`` flags. Takes the same arguments as :class:`MeanIoU`;
    the default name is ``"per_class_iou"``.
    """

    default_name = "per_class_iou"

    def result(self) -> Any:
        """Return the per-class IoU vector.

        Returns:
            float32 tensor of shape ``(C,)``.
        """
        tp, true_count, pred_count = self._components()
        return ops.divide_no_nan(tp, true_count + pred_count - tp)


@keras.saving.register_keras_serializable(package=PACKAGE)
class DiceScore(_ConfusionMatrixMetric):
    """Mean Dice (F1) score over the classes that occur.

    ``Dice_c = 2 cm[c, c] / (row_c + col_c)``, averaged over classes with
    ``row_c + col_c > 0`` (same exclusion rule as :class:`MeanIoU`). Takes the
    same arguments as :class:`MeanIoU`; the default name is ``"dice_score"``.
    """

    default_name = "dice_score"

    def result(self) -> Any:
        """Return the mean Dice over present classes.

        Returns:
            Scalar float32 tensor.
        """
        tp, true_count, pred_count = self._components()
        total = true_count + pred_count
        return _mean_over_present(ops.divide_no_nan(2.0 * tp, total), total > 0)


@keras.saving.register_keras_serializable(package=PACKAGE)
class PixelAccuracy(_SegmentationMetric):
    """Fraction of counted pixels whose predicted class equals the label.

    Needs no class count, so it accumulates two scalars (weighted correct and
    total counts) instead of a confusion matrix. 0 when nothing was counted.

    Args:
        ignore_index: Label value not counted, or ``None``.
        name: Metric name (default ``"pixel_accuracy"``).
        from_logits: Only matters for a ``K == 1`` output (threshold 0).
        dtype: Keras dtype policy of the result.
    """

    default_name = "pixel_accuracy"

    def _add_state(self) -> None:
        self.correct = self.add_variable(
            shape=(), initializer="zeros", dtype="float32", name="correct"
        )
        self.total = self.add_variable(
            shape=(), initializer="zeros", dtype="float32", name="total"
        )

    def _accumulate(self, labels: Any, pred_labels: Any, weights: Any) -> None:
        hits = ops.cast(ops.equal(labels, pred_labels), "float32")
        self.correct.assign_add(ops.sum(hits * weights))
        self.total.assign_add(ops.sum(weights))

    def result(self) -> Any:
        """Return the pixel accuracy.

        Returns:
            Scalar float32 tensor.
        """
        return ops.divide_no_nan(
            ops.convert_to_tensor(self.correct), ops.convert_to_tensor(self.total)
        )
