"""Soft-overlap losses over a whole batch: Dice and Jaccard (IoU).

``vggunet.losses.base`` states the conventions for labels, predictions and
``ignore_index``.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import ops

from vggunet._serializables import PACKAGE
from vggunet.checks import check_number
from vggunet.losses.base import (
    SegmentationLoss,
    pixel_weights,
    scale_for_replicas,
    validate_class_weights,
    validate_num_classes,
)

__all__ = ["DiceLoss", "JaccardLoss"]


class _OverlapLoss(SegmentationLoss):
    """Base for soft-overlap losses (Dice, Jaccard) over a whole batch.

    Per class ``c`` with pixel weights ``w = sample_weight * not_ignored``::

        I_c = sum(w * p_c * t_c),  P_c = sum(w * p_c),  T_c = sum(w * t_c)

    summed over the batch and all spatial positions (one score per batch, not
    per image, so a class missing from one image does not produce a
    degenerate per-image score). ``sample_weight`` therefore acts as pixel
    weights inside the sums; a per-sample ``(B,)`` weight weights whole
    images. The loss is ``1 - sum(cw_c * s_c) / sum(cw_c)`` (plain mean over
    classes without ``class_weights``). A class with ``P_c + T_c == 0``
    (absent from truth and prediction) scores 1 even when ``smooth == 0``.
    Being a batch-level quantity, the result is always a scalar and
    ``reduction`` has no effect.
    """

    config_keys = ("dtype", "num_classes", "from_logits", "ignore_index", "smooth",
                   "class_weights")

    def __init__(
        self,
        num_classes: int | None = None,
        from_logits: bool = False,
        ignore_index: int | None = None,
        smooth: float = 1.0,
        class_weights: Sequence[float] | None = None,
        name: str | None = None,
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        # Subclasses differ only in their score and default name, so no subclass __init__.
        self.num_classes = validate_num_classes(num_classes, allow_none=True)
        super().__init__(from_logits, ignore_index, class_weights, name, reduction, dtype)
        self.smooth = check_number(smooth, "smooth", low=0)
        # Now that num_classes is known, the number of weights can be checked.
        validate_class_weights(self.class_weights, self.num_classes)

    def _scores(self, intersection: Any, pred_sum: Any, true_sum: Any) -> Any:
        """Per-class overlap scores from the weighted sums (subclasses define it)."""
        raise NotImplementedError(f"{type(self).__name__} must define _scores")

    def _compute(self, y_true: Any, y_pred: Any, sample_weight: Any | None) -> Any:
        onehot, probs, _, valid = self._prepared(y_true, y_pred, self.num_classes)
        weights = ops.expand_dims(pixel_weights(valid, sample_weight), axis=-1)
        axes = tuple(range(len(probs.shape) - 1))
        intersection = ops.sum(weights * probs * onehot, axis=axes)
        pred_sum = ops.sum(weights * probs, axis=axes)
        true_sum = ops.sum(weights * onehot, axis=axes)
        scores = self._scores(intersection, pred_sum, true_sum)
        if self.class_weights is None:
            mean_score = ops.mean(scores)
        else:
            cw = ops.convert_to_tensor(self.class_weights, dtype="float32")
            mean_score = ops.sum(cw * scores) / ops.sum(cw)
        return 1.0 - mean_score

    @staticmethod
    def _safe_ratio(numerator: Any, denominator: Any) -> Any:
        # Empty classes (denominator 0, only possible with smooth=0) count as
        # perfectly predicted instead of producing NaN.
        positive = denominator > 0
        safe = ops.where(positive, denominator, ops.ones_like(denominator))
        return ops.where(positive, numerator / safe, ops.ones_like(numerator))

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """Batch loss without sample weights.

        Args:
            y_true: Sparse labels ``(B, *spatial)`` or ``(B, *spatial, 1)``.
            y_pred: Probabilities or logits ``(B, *spatial, K)``.

        Returns:
            Scalar float32 loss.
        """
        return self._compute(y_true, y_pred, None)

    def _reduced(self, y_true: Any, y_pred: Any, sample_weight: Any | None) -> Any:
        return scale_for_replicas(self._compute(y_true, y_pred, sample_weight))


@keras.saving.register_keras_serializable(package=PACKAGE)
class DiceLoss(_OverlapLoss):
    """Soft Dice loss, ``1 - mean_c (2 I_c + smooth) / (P_c + T_c + smooth)``.

    See ``_OverlapLoss`` for the sums, the role of ``sample_weight`` and the
    class averaging.

    Args:
        num_classes: Expected number of classes (``1`` = single sigmoid
            channel), checked against ``y_pred``; ``None`` infers it.
        from_logits: ``y_pred`` holds logits instead of probabilities.
        ignore_index: Label value excluded from the sums, or ``None``.
        smooth: Additive smoothing, ``>= 0``.
        class_weights: Optional per-class weights for the class average.
        name: Loss name (default ``"dice_loss"``).
        reduction: Accepted for Keras compatibility; the loss is a scalar.
        dtype: Keras dtype policy (computation is float32 regardless).
    """

    default_name = "dice_loss"

    def _scores(self, intersection: Any, pred_sum: Any, true_sum: Any) -> Any:
        return self._safe_ratio(
            2.0 * intersection + self.smooth, pred_sum + true_sum + self.smooth
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class JaccardLoss(_OverlapLoss):
    """Soft Jaccard (IoU) loss, ``1 - mean_c (I_c + s) / (P_c + T_c - I_c + s)``.

    See ``_OverlapLoss`` for the sums, the role of ``sample_weight`` and the
    class averaging. Takes the same arguments as :class:`DiceLoss` (``smooth``
    is ``s`` here); the default name is ``"jaccard_loss"``.
    """

    default_name = "jaccard_loss"

    def _scores(self, intersection: Any, pred_sum: Any, true_sum: Any) -> Any:
        return self._safe_ratio(
            intersection + self.smooth, pred_sum + true_sum - intersection + self.smooth
        )
