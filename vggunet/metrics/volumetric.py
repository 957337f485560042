"""Per-class metrics for volumes with sigmoid multi-label outputs: the brain-tumour lab's scores.

Labels, predictions, layouts (``data_format``, 5D volumes or 4D images) and ``sample_weight``
follow :mod:`vggunet.losses.volumetric`. Predictions are thresholded (``p > threshold``, the
lab's 0.5, after a sigmoid when ``from_logits=True``); ``threshold=None`` keeps them soft,
which gives the lab's unthresholded ``dice_coefficient``.

The Keras metrics accumulate four per-class sums over batches, ``I = Σ w p g``, ``P = Σ w p``,
``T = Σ w g`` and the voxel count ``N = Σ w``, from which ``TP = I``, ``FP = P - I``,
``FN = T - I`` and ``TN = N - P - T + I``. So a metric over two batches equals the metric of
one batch holding both. Scores:

* Dice ``(2 TP + ε) / (2 TP + FP + FN + ε)`` (the lab's ``dice_coefficient``); a class absent
  from targets and predictions scores 1, also with ``epsilon=0``;
* sensitivity ``TP / (TP + FN)``, specificity ``TN / (TN + FP)``; where the denominator is 0
  the Keras metrics report 0 (their results stay NaN-free, like ``PerClassIoU``) and
  :func:`volume_scores` reports NaN (undefined, as the lab's division gives).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from vggunet._serializables import PACKAGE
from vggunet.checks import check_int, check_number
from vggunet.errors import ArgumentError

# From the submodules, not the packages: see vggunet.losses.base.
from vggunet.losses.overlap import _OverlapLoss
from vggunet.losses.volumetric import LAB_EPSILON, resolve_data_format, volume_tensors
from vggunet.metrics.confusion import _SegmentationMetric

__all__ = [
    "DiceCoefficient",
    "PerClassDice",
    "PerClassSensitivity",
    "PerClassSpecificity",
    "volume_scores",
]

_LAB_THRESHOLD = 0.5


class _VolumeCountsMetric(_SegmentationMetric):
    """Base: accumulates the per-class sums ``I, P, T`` and the voxel count ``N``.

    Args:
        num_classes: Number of output channels (one sigmoid each).
        threshold: Probability above which a voxel counts as predicted; ``None``: soft.
        epsilon: The Dice smoothing ε, ``>= 0``.
        data_format: ``"channels_last"``, ``"channels_first"`` or ``None`` (Keras's
            ``image_data_format()``).
        from_logits: ``y_pred`` holds logits; a sigmoid is applied first.
        name: Metric name (the subclass's default when ``None``).
        dtype: Keras dtype policy of the result.
    """

    config_keys = ("num_classes", "threshold", "epsilon", "data_format", "from_logits")

    def __init__(
        self,
        num_classes: int,
        threshold: float | None = _LAB_THRESHOLD,
        epsilon: float = LAB_EPSILON,
        data_format: str | None = None,
        from_logits: bool = False,
        name: str | None = None,
        dtype: Any = None,
    ) -> None:
        # Subclasses differ only in result() and default name, so no subclass __init__.
        self.num_classes = check_int(num_classes, "num_classes", minimum=1)
        self.threshold = check_number(threshold, "threshold", low=0, high=1, allow_none=True)
        self.epsilon = check_number(epsilon, "epsilon", low=0)
        self.data_format = resolve_data_format(data_format)
        # No ignore_index: multi-label targets have no class index to ignore.
        super().__init__(None, name, from_logits, dtype)

    def _add_state(self) -> None:
        shape = (self.num_classes,)
        self.intersection, self.pred_sum, self.true_sum = (
            self.add_variable(shape=shape, initializer="zeros", dtype="float32", name=name)
            for name in ("intersection", "pred_sum", "true_sum")
        )
        self.voxels = self.add_variable(
            shape=(), initializer="zeros", dtype="float32", name="voxels"
        )

    def update_state(
        self, y_true: Any, y_pred: Any, sample_weight: Any | None = None
    ) -> None:
        """Add one batch.

        Args:
            y_true: Multi-label 0/1 masks, the shape of ``y_pred``.
            y_pred: Sigmoid probabilities or logits, 4D or 5D, ``num_classes`` channels.
            sample_weight: Optional ``(B,)`` or per-voxel weights.

        Raises:
            ArgumentError: If shapes or the channel count do not fit.
        """
        targets, probs, weights = volume_tensors(
            y_true, y_pred, self.data_format, self.from_logits, sample_weight
        )
        if probs.shape[-1] != self.num_classes:
            raise ArgumentError(
                f"y_pred has {probs.shape[-1]} class channels but num_classes="
                f"{self.num_classes} ({self.data_format})."
            )
        if self.threshold is not None:
            probs = ops.cast(probs > self.threshold, "float32")
        axes = tuple(range(len(probs.shape) - 1))
        self.intersection.assign_add(ops.sum(weights * probs * targets, axis=axes))
        self.pred_sum.assign_add(ops.sum(weights * probs, axis=axes))
        self.true_sum.assign_add(ops.sum(weights * targets, axis=axes))
        # Every class sees every voxel, so N is the weight total of one channel.
        self.voxels.assign_add(ops.sum(weights))

    def _sums(self) -> tuple[Any, Any, Any]:
        return tuple(ops.convert_to_tensor(v) for v in (self.intersection, self.pred_sum,
                                                         self.true_sum))

    def _dice(self) -> Any:
        intersection, pred_sum, true_sum = self._sums()
        return _OverlapLoss._safe_ratio(
            2.0 * intersection + self.epsilon, pred_sum + true_sum + self.epsilon
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class DiceCoefficient(_VolumeCountsMetric):
    """The lab's ``dice_coefficient``: the mean over classes of the per-class Dice.

    ``mean_c (2 Σ p g + ε) / (Σ p + Σ g + ε)`` over everything accumulated, ``p`` thresholded
    at ``threshold`` (see the module docstring). Arguments as in ``_VolumeCountsMetric``:
    ``num_classes``, ``threshold=0.5``, ``epsilon=1``, ``data_format``, ``from_logits``,
    ``name`` (default ``"dice_coefficient"``), ``dtype``.

    Example:
        >>> import numpy as np
        >>> g = np.zeros((1, 2, 2, 2, 2), "float32"); g[0, 0, 0, 0] = 1  # one voxel, both classes
        >>> metric = DiceCoefficient(2, data_format="channels_last")
        >>> metric.update_state(g, 0.9 * g)
        >>> float(metric.result())  # (2 + 1) / (1 + 1 + 1) per class
        1.0
    """

    default_name = "dice_coefficient"

    def result(self) -> Any:
        """Return the mean Dice over classes.

        Returns:
            Scalar float32 tensor (1 while nothing has been counted).
        """
        return ops.mean(self._dice())


@keras.saving.register_keras_serializable(package=PACKAGE)
class PerClassDice(_VolumeCountsMetric):
    """Dice of every class, as a ``(num_classes,)`` vector.

    Arguments as in :class:`DiceCoefficient`; the default name is ``"per_class_dice"``.
    """

    default_name = "per_class_dice"

    def result(self) -> Any:
        """Returns the ``(num_classes,)`` float32 scores from the accumulated sums."""
        return self._dice()


@keras.saving.register_keras_serializable(package=PACKAGE)
class PerClassSensitivity(_VolumeCountsMetric):
    """Sensitivity (recall) ``TP / (TP + FN)`` of every class; 0 for a class never present.

    Arguments as in :class:`DiceCoefficient` (``epsilon`` unused); the default name is
    ``"per_class_sensitivity"``.
    """

    default_name = "per_class_sensitivity"

    def result(self) -> Any:
        """Returns the ``(num_classes,)`` float32 scores from the accumulated sums."""
        intersection, _, true_sum = self._sums()
        return ops.divide_no_nan(intersection, true_sum)


@keras.saving.register_keras_serializable(package=PACKAGE)
class PerClassSpecificity(_VolumeCountsMetric):
    """Specificity ``TN / (TN + FP)`` of every class; 0 for a class present everywhere.

    ``TN + FP = N - T`` are the voxels outside the class, and ``TN = N - P - T + I``.
    Arguments as in :class:`DiceCoefficient` (``epsilon`` unused); the default name is
    ``"per_class_specificity"``.
    """

    default_name = "per_class_specificity"

    def result(self) -> Any:
        """Returns the ``(num_classes,)`` float32 scores from the accumulated sums."""
        intersection, pred_sum, true_sum = self._sums()
        negatives = ops.convert_to_tensor(self.voxels) - true_sum
        return ops.divide_no_nan(negatives - pred_sum + intersection, negatives)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else float("nan")


def volume_scores(
    y_true: Any,
    y_pred: Any,
    class_names: Sequence[str] | None = None,
    data_format: str | None = None,
    threshold: float | None = _LAB_THRESHOLD,
    epsilon: float = LAB_EPSILON,
) -> dict[str, dict[str, float]]:
    """The lab's per-class table (Dice, sensitivity, specificity) of NumPy arrays.

    Counts are float64 sums over every axis but the class axis, so the arrays may hold one
    volume with a batch axis (``x[None]``) or many; the layout is that of the Keras metrics.

    Args:
        y_true: Multi-label 0/1 masks, 4D or 5D, the shape of ``y_pred``.
        y_pred: Probabilities (or 0/1 / boolean predictions), laid out as ``data_format``.
        class_names: One name per class (default ``"0"``, ``"1"``, ...), e.g. the lab's
            ``("Edema", "Non-Enhancing Tumor", "Enhancing Tumor")``.
        data_format: ``"channels_last"``, ``"channels_first"`` or ``None`` (Keras's setting).
        threshold: ``p > threshold`` counts as predicted; ``None`` keeps ``y_pred`` soft.
        epsilon: The Dice smoothing ε.

    Returns:
        ``{class_name: {"dice": ..., "sensitivity": ..., "specificity": ...}}`` as Python
        floats (``pandas.DataFrame(table)`` is the lab's table, one column per class);
        NaN where a denominator is 0.

    Raises:
        ArgumentError: On mismatched shapes, a wrong rank or a wrong number of names.

    Example:
        >>> g = np.array([1, 1, 0, 0], "float32").reshape(1, 2, 2, 1)
        >>> p = np.array([0.9, 0.2, 0.7, 0.1], "float32").reshape(1, 2, 2, 1)
        >>> volume_scores(g, p, ["tumour"], "channels_last")
        {'tumour': {'dice': 0.6, 'sensitivity': 0.5, 'specificity': 0.5}}
    """
    data_format = resolve_data_format(data_format)
    epsilon = check_number(epsilon, "epsilon", low=0)
    threshold = check_number(threshold, "threshold", low=0, high=1, allow_none=True)
    true, pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    if true.shape != pred.shape or true.ndim not in (4, 5):
        raise ArgumentError(
            "y_true and y_pred must have one 4D or 5D shape; got "
            f"{true.shape} and {pred.shape}."
        )
    class_axis = 1 if data_format == "channels_first" else -1
    true, pred = np.moveaxis(true, class_axis, 0), np.moveaxis(pred, class_axis, 0)
    if threshold is not None:
        pred = (pred > threshold).astype(np.float64)
    names = [str(c) for c in range(len(true))] if class_names is None else list(class_names)
    if len(names) != len(true):
        raise ArgumentError(f"class_names has {len(names)} names for {len(true)} classes.")
    return _scores_from_counts(_class_counts(true, pred), names, epsilon)


def _class_counts(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-class ``(TP, predicted, true, voxels)`` as a ``(K, 4)`` float64 array.

    ``true`` and ``pred`` hold the class axis first (0/1 floats or booleans); counts of
    several volumes add up, which is how a set is scored over all its voxels.
    """
    counts = np.zeros((len(true), 4), dtype=np.float64)
    for k, (g, p) in enumerate(zip(true, pred)):
        counts[k] = (np.sum(p * g, dtype=np.float64), np.sum(p, dtype=np.float64),
                     np.sum(g, dtype=np.float64), g.size)
    return counts


def _scores_from_counts(counts: np.ndarray, names: Sequence[str],
                        epsilon: float) -> dict[str, dict[str, float]]:
    """The per-class table of :func:`volume_scores` from :func:`_class_counts`."""
    table = {}
    for name, (tp, pred_sum, true_sum, voxels) in zip(names, counts):
        negatives = voxels - true_sum
        dice = 1.0 if pred_sum + true_sum + epsilon == 0 else _ratio(
            2 * tp + epsilon, pred_sum + true_sum + epsilon)
        table[name] = {
            "dice": dice,
            "sensitivity": _ratio(tp, true_sum),
            "specificity": _ratio(negatives - pred_sum + tp, negatives),
        }
    return table
