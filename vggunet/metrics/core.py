"""Segmentation metrics built on an accumulated confusion matrix.

Conventions (shared with :mod:`vggunet.losses`):

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

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from vggunet.errors import ArgumentError
from vggunet.losses.base import (
    effective_num_classes,
    pixel_weights,
    prepare_labels,
    validate_ignore_index,
    validate_num_classes,
)

__all__ = [
    "MeanIoU",
    "PerClassIoU",
    "DiceScore",
    "PixelAccuracy",
    "confusion_matrix",
    "scores_from_confusion",
    "get_metrics",
    "METRIC_NAMES",
]


def _validate_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ArgumentError(f"{name} must be True or False; got {value!r}.")
    return value


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


class _ConfusionMatrixMetric(keras.metrics.Metric):
    """Base class accumulating a ``(C, C)`` float32 confusion matrix.

    ``C = effective_num_classes(num_classes)``. The matrix is exposed as the
    ``total_cm`` variable so that callers can feed it to
    :func:`scores_from_confusion`.
    """

    default_name: str | None = None

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = None,
        name: str | None = None,
        from_logits: bool = False,
        dtype: Any = None,
    ) -> None:
        # Subclasses differ only in result() and default name, so no subclass __init__.
        super().__init__(name=name or self.default_name, dtype=dtype)
        self.num_classes = validate_num_classes(num_classes)
        self.ignore_index = validate_ignore_index(ignore_index)
        self.from_logits = _validate_bool("from_logits", from_logits)
        size = effective_num_classes(self.num_classes)
        self._size = size
        self.total_cm = self.add_variable(
            shape=(size, size),
            initializer="zeros",
            dtype="float32",
            name="total_confusion_matrix",
        )

    def update_state(
        self, y_true: Any, y_pred: Any, sample_weight: Any | None = None
    ) -> None:
        """Add one batch to the confusion matrix.

        Args:
            y_true: Sparse labels ``(B, *spatial)`` or ``(B, *spatial, 1)``.
            y_pred: Probabilities/logits ``(B, *spatial, K)`` or integer
                predicted labels.
            sample_weight: Optional ``(B,)`` or ``(B, *spatial)`` weights.
        """
        size = self._size
        labels, pred_labels, weights = _labels_and_weights(
            y_true, y_pred, sample_weight, self.ignore_index, self.from_logits, size
        )
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

    def _components(self):
        cm = ops.convert_to_tensor(self.total_cm)
        true_positive = ops.diagonal(cm)
        true_count = ops.sum(cm, axis=1)
        pred_count = ops.sum(cm, axis=0)
        return true_positive, true_count, pred_count

    def get_config(self) -> dict[str, Any]:
        """Return all constructor arguments.

        Returns:
            A JSON-serializable dict accepted by ``from_config``.
        """
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            ignore_index=self.ignore_index,
            from_logits=self.from_logits,
        )
        return config


def _mean_over_present(values, present):
    present = ops.cast(present, "float32")
    return ops.divide_no_nan(ops.sum(values * present), ops.sum(present))


@keras.saving.register_keras_serializable(package="vggunet")
class MeanIoU(_ConfusionMatrixMetric):
    """Mean intersection-over-union over the classes that occur.

    ``IoU_c = cm[c, c] / (row_c + col_c - cm[c, c])``, averaged over classes
    whose union is non-zero (present in the truth or in the prediction over
    all accumulated batches); classes absent from both are excluded rather
    than counted as 0 or 1. 0 when nothing has been counted.

    Args:
        num_classes: Number of classes (``1`` = binary sigmoid output).
        ignore_index: Label value not counted, or ``None``.
        name: Metric name.
        from_logits: Only matters for a ``K == 1`` output: threshold the
            logit at 0 instead of the probability at 0.5.
        dtype: Keras dtype policy of the result.
    """

    default_name = "mean_iou"

    def result(self):
        """Return the mean IoU over present classes.

        Returns:
            Scalar float32 tensor.
        """
        tp, true_count, pred_count = self._components()
        union = true_count + pred_count - tp
        return _mean_over_present(ops.divide_no_nan(tp, union), union > 0)


@keras.saving.register_keras_serializable(package="vggunet")
class PerClassIoU(_ConfusionMatrixMetric):
    """Intersection-over-union of every class, as a vector.

    ``result()`` has ``effective_num_classes(num_classes)`` entries; a class
    with zero union (absent from truth and prediction) reports 0, so the
    vector is NaN-free but an absent class cannot be told from a missed one
    here; use :func:`scores_from_confusion` on ``total_cm`` for the
    ``present`` flags.

    Args:
        num_classes: Number of classes (``1`` = binary sigmoid output).
        ignore_index: Label value not counted, or ``None``.
        name: Metric name.
        from_logits: Only matters for a ``K == 1`` output (threshold 0).
        dtype: Keras dtype policy of the result.
    """

    default_name = "per_class_iou"

    def result(self):
        """Return the per-class IoU vector.

        Returns:
            float32 tensor of shape ``(C,)``.
        """
        tp, true_count, pred_count = self._components()
        return ops.divide_no_nan(tp, true_count + pred_count - tp)


@keras.saving.register_keras_serializable(package="vggunet")
class DiceScore(_ConfusionMatrixMetric):
    """Mean Dice (F1) score over the classes that occur.

    ``Dice_c = 2 cm[c, c] / (row_c + col_c)``, averaged over classes with
    ``row_c + col_c > 0`` (same exclusion rule as :class:`MeanIoU`).

    Args:
        num_classes: Number of classes (``1`` = binary sigmoid output).
        ignore_index: Label value not counted, or ``None``.
        name: Metric name.
        from_logits: Only matters for a ``K == 1`` output (threshold 0).
        dtype: Keras dtype policy of the result.
    """

    default_name = "dice_score"

    def result(self):
        """Return the mean Dice over present classes.

        Returns:
            Scalar float32 tensor.
        """
        tp, true_count, pred_count = self._components()
        total = true_count + pred_count
        return _mean_over_present(ops.divide_no_nan(2.0 * tp, total), total > 0)


@keras.saving.register_keras_serializable(package="vggunet")
class PixelAccuracy(keras.metrics.Metric):
    """Fraction of counted pixels whose predicted class equals the label.

    Needs no class count, so it accumulates two scalars (weighted correct and
    total counts) instead of a confusion matrix. 0 when nothing was counted.

    Args:
        ignore_index: Label value not counted, or ``None``.
        name: Metric name.
        from_logits: Only matters for a ``K == 1`` output (threshold 0).
        dtype: Keras dtype policy of the result.
    """

    def __init__(
        self,
        ignore_index: int | None = None,
        name: str = "pixel_accuracy",
        from_logits: bool = False,
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, dtype=dtype)
        self.ignore_index = validate_ignore_index(ignore_index)
        self.from_logits = _validate_bool("from_logits", from_logits)
        self.correct = self.add_variable(
            shape=(), initializer="zeros", dtype="float32", name="correct"
        )
        self.total = self.add_variable(
            shape=(), initializer="zeros", dtype="float32", name="total"
        )

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
            y_true, y_pred, sample_weight, self.ignore_index, self.from_logits, None
        )
        hits = ops.cast(ops.equal(labels, pred_labels), "float32")
        self.correct.assign_add(ops.sum(hits * weights))
        self.total.assign_add(ops.sum(weights))

    def result(self):
        """Return the pixel accuracy.

        Returns:
            Scalar float32 tensor.
        """
        return ops.divide_no_nan(
            ops.convert_to_tensor(self.correct), ops.convert_to_tensor(self.total)
        )

    def get_config(self) -> dict[str, Any]:
        """Return all constructor arguments.

        Returns:
            A JSON-serializable dict accepted by ``from_config``.
        """
        config = super().get_config()
        config.update(ignore_index=self.ignore_index, from_logits=self.from_logits)
        return config


# --------------------------------------------------------------------------
# NumPy helpers for offline evaluation
# --------------------------------------------------------------------------


def _as_label_array(name: str, values: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype == bool:
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.floating) and np.all(np.mod(array, 1) == 0):
        return array.astype(np.int64)
    raise ArgumentError(
        f"{name} must hold integer class labels; got dtype {array.dtype} "
        "(take the argmax of probabilities first)."
    )


def confusion_matrix(
    y_true: Any,
    y_pred_labels: Any,
    num_classes: int,
    ignore_index: int | None = None,
) -> np.ndarray:
    """Confusion matrix of integer label maps, ``cm[t, p]``.

    Args:
        y_true: True labels, any shape; a trailing axis of 1 is squeezed.
        y_pred_labels: Predicted labels, same shape as ``y_true``.
        num_classes: Number of classes (``1`` = binary, scored as 2).
        ignore_index: Label value whose pixels are skipped, or ``None``.

    Returns:
        int64 array ``(C, C)`` with ``C = 2 if num_classes == 1 else
        num_classes``; rows are true classes, columns predictions.

    Raises:
        ValueError: On bad arguments, mismatched shapes, or labels outside
            ``[0, C)`` (other than ``ignore_index``).

    Example:
        >>> import numpy as np
        >>> confusion_matrix(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), num_classes=2)
        array([[1, 1],
               [0, 2]])
    """
    num_classes = validate_num_classes(num_classes)
    ignore_index = validate_ignore_index(ignore_index)
    size = effective_num_classes(num_classes)
    truth = _as_label_array("y_true", y_true)
    pred = _as_label_array("y_pred_labels", y_pred_labels)
    if truth.ndim and truth.shape[-1] == 1 and truth.ndim == pred.ndim + 1:
        truth = truth[..., 0]
    if pred.ndim and pred.shape[-1] == 1 and pred.ndim == truth.ndim + 1:
        pred = pred[..., 0]
    if truth.shape != pred.shape:
        raise ArgumentError(
            f"y_true shape {truth.shape} and y_pred_labels shape {pred.shape} differ."
        )
    truth = truth.ravel()
    pred = pred.ravel()
    if ignore_index is not None:
        keep = truth != ignore_index
        truth = truth[keep]
        pred = pred[keep]
    for name, values in (("y_true", truth), ("y_pred_labels", pred)):
        bad = values[(values < 0) | (values >= size)]
        if bad.size:
            raise ArgumentError(
                f"{name} contains label(s) {sorted(set(bad.tolist()))[:10]} outside "
                f"[0, {size}) (ignore_index={ignore_index!r})."
            )
    counts = np.bincount(truth * size + pred, minlength=size * size)
    return counts.reshape(size, size).astype(np.int64)


def scores_from_confusion(cm: Any) -> dict[str, Any]:
    """Summary scores of a confusion matrix ``cm[t, p]``.

    Classes with zero union (absent from truth and prediction) get 0 in the
    per-class lists and are excluded from the means, as in :class:`MeanIoU`.

    Args:
        cm: Square non-negative matrix (numpy array, tensor or the
            ``total_cm`` variable of a metric).

    Returns:
        Dict with ``per_class_iou`` (list of float), ``mean_iou``,
        ``per_class_dice`` (list), ``mean_dice``, ``pixel_accuracy``,
        ``pixel_error`` (``1 - pixel_accuracy``; both 0.0 for an empty
        matrix), ``present`` (list of bool, class has non-zero union) and
        ``num_pixels`` (total count), all plain Python types.

    Raises:
        ValueError: If ``cm`` is not a square, finite, non-negative matrix.

    Example:
        >>> scores = scores_from_confusion([[1, 1], [0, 2]])
        >>> scores["per_class_iou"], scores["mean_iou"], scores["pixel_accuracy"]
        ([0.5, 0.6666666666666666], 0.5833333333333333, 0.75)
    """
    matrix = np.asarray(ops.convert_to_numpy(cm) if not isinstance(cm, np.ndarray) else cm)
    matrix = matrix.astype(np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ArgumentError(f"cm must be a non-empty square matrix; got shape {matrix.shape}.")
    if not np.all(np.isfinite(matrix)) or np.any(matrix < 0):
        raise ArgumentError("cm must be finite and non-negative.")
    tp = np.diag(matrix)
    true_count = matrix.sum(axis=1)
    pred_count = matrix.sum(axis=0)
    union = true_count + pred_count - tp
    present = union > 0
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=present)
    dice = np.divide(2 * tp, true_count + pred_count, out=np.zeros_like(tp), where=present)
    total = matrix.sum()
    accuracy = float(tp.sum() / total) if total > 0 else 0.0
    return {
        "per_class_iou": [float(v) for v in iou],
        "mean_iou": float(iou[present].mean()) if present.any() else 0.0,
        "per_class_dice": [float(v) for v in dice],
        "mean_dice": float(dice[present].mean()) if present.any() else 0.0,
        "pixel_accuracy": accuracy,
        "pixel_error": 1.0 - accuracy if total > 0 else 0.0,
        "present": [bool(v) for v in present],
        "num_pixels": float(total),
    }


# --------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------

#: Names accepted by :func:`get_metrics`.
METRIC_NAMES: tuple[str, ...] = ("miou", "iou", "dice", "accuracy")


def get_metrics(
    names: str | Sequence[str],
    num_classes: int,
    ignore_index: int | None = None,
    from_logits: bool = False,
) -> list[keras.metrics.Metric]:
    """Build metrics from CLI names.

    Args:
        names: A name, a comma-separated string of names, or a sequence of
            names, from ``METRIC_NAMES`` (case-insensitive): ``"miou"``
            (:class:`MeanIoU`), ``"iou"`` (:class:`PerClassIoU`), ``"dice"``
            (:class:`DiceScore`), ``"accuracy"`` (:class:`PixelAccuracy`).
        num_classes: Number of classes (``1`` = binary sigmoid output).
        ignore_index: Label value not counted, or ``None``.
        from_logits: Whether a single-channel output holds logits.

    Returns:
        New metric instances, in the order given.

    Raises:
        ValueError: On an unknown name (the message lists valid ones) or
            invalid ``num_classes`` / ``ignore_index``.

    Example:
        >>> [m.name for m in get_metrics("miou,dice,accuracy", num_classes=2)]
        ['mean_iou', 'dice_score', 'pixel_accuracy']
    """
    if isinstance(names, str):
        names = [part for part in names.split(",") if part.strip()]
    metrics: list[keras.metrics.Metric] = []
    for raw in names:
        key = raw.strip().lower() if isinstance(raw, str) else raw
        if key == "miou":
            metrics.append(MeanIoU(num_classes, ignore_index, from_logits=from_logits))
        elif key == "iou":
            metrics.append(PerClassIoU(num_classes, ignore_index, from_logits=from_logits))
        elif key == "dice":
            metrics.append(DiceScore(num_classes, ignore_index, from_logits=from_logits))
        elif key == "accuracy":
            # Validated here too so a bad num_classes fails whatever the names.
            validate_num_classes(num_classes)
            metrics.append(PixelAccuracy(ignore_index, from_logits=from_logits))
        else:
            raise ArgumentError(
                f"Unknown metric {raw!r}; valid names are: {', '.join(METRIC_NAMES)}."
            )
    return metrics
