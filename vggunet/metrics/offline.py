"""NumPy scoring for offline evaluation: a confusion matrix of label maps and its scores.

The same rules as the Keras metrics of :mod:`vggunet.metrics.confusion` (``num_classes == 1``
scored as two classes, absent classes excluded from the means), without Keras state, for
whole data sets evaluated image by image (`vggunet.evaluate`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import ops

from vggunet.errors import ArgumentError

# From the submodule, not the `vggunet.losses` package: see vggunet.losses.base.
from vggunet.losses.base import (
    effective_num_classes,
    validate_ignore_index,
    validate_num_classes,
)

__all__ = ["confusion_matrix", "scores_from_confusion"]


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
