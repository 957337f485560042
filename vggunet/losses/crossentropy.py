"""Per-pixel losses: sparse categorical cross-entropy, focal loss and OHEM cross-entropy.

Each averages independent per-pixel terms over the pixels that are not ignored (OHEM: over the
hard pixels it keeps); conventions for labels, predictions and ``ignore_index``:
:mod:`vggunet.losses.base`.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import ops

from vggunet._serializables import PACKAGE
from vggunet.checks import check_int, check_number
from vggunet.losses.base import SegmentationLoss, pixel_weights, scale_for_replicas

__all__ = ["FocalLoss", "OhemCrossEntropyLoss", "SparseCategoricalCrossentropy"]


class _PixelwiseLoss(SegmentationLoss):
    """Base for losses that are a mean of independent per-pixel terms.

    Reduction (``self.reduction``), with ``w = sample_weight * not_ignored``:

    * ``"sum_over_batch_size"`` / ``"mean"`` (default): ``sum(w * l)`` divided
      by the number of non-ignored pixels. Like Keras, ``sample_weight`` only
      scales the numerator; unlike Keras, ignored pixels leave the denominator.
    * ``"mean_with_sample_weight"``: ``sum(w * l) / sum(w)``.
    * ``"sum"``: ``sum(w * l)``.
    * ``"none"`` / ``None``: the per-pixel map ``w * l``.
    """

    def _pixel_losses(self, onehot: Any, probs: Any, log_probs: Any) -> Any:
        """Unweighted per-pixel loss ``(B, *spatial)`` from one-hot inputs (subclasses define
        it)."""
        raise NotImplementedError(f"{type(self).__name__} must define _pixel_losses")

    def _selected(self, onehot: Any, probs: Any, valid: Any) -> Any:
        """The ``(B, *spatial)`` mask of pixels that count: all non-ignored ones here."""
        return valid

    def _weighted_map(self, y_true: Any, y_pred: Any, sample_weight: Any | None):
        onehot, probs, log_probs, valid = self._prepared(y_true, y_pred)
        valid = self._selected(onehot, probs, valid)
        losses = self._pixel_losses(onehot, probs, log_probs)
        if self.class_weights is not None:
            # Weighting via the one-hot row (not a gather) keeps stray
            # out-of-range labels from crashing the TensorFlow CPU kernel.
            cw = ops.convert_to_tensor(self.class_weights, dtype="float32")
            losses = losses * ops.sum(onehot * cw, axis=-1)
        return losses, valid, pixel_weights(valid, sample_weight)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """Per-pixel losses, zero on ignored pixels.

        Args:
            y_true: Sparse labels ``(B, *spatial)`` or ``(B, *spatial, 1)``.
            y_pred: Probabilities or logits ``(B, *spatial, K)``.

        Returns:
            float32 tensor ``(B, *spatial)``.
        """
        losses, _, weights = self._weighted_map(y_true, y_pred, None)
        return losses * weights

    def _reduced(self, y_true: Any, y_pred: Any, sample_weight: Any | None) -> Any:
        losses, valid, weights = self._weighted_map(y_true, y_pred, sample_weight)
        weighted = losses * weights
        if self.reduction in (None, "none"):
            return weighted
        total = ops.sum(weighted)
        if self.reduction == "sum":
            return total
        count = ops.sum(weights if self.reduction == "mean_with_sample_weight" else valid)
        # divide_no_nan: an all-ignored batch yields 0 and zero gradients. Like Keras, only
        # the means are scaled per replica.
        return scale_for_replicas(ops.divide_no_nan(total, count))


@keras.saving.register_keras_serializable(package=PACKAGE)
class SparseCategoricalCrossentropy(_PixelwiseLoss):
    """Cross-entropy between sparse labels and per-pixel class predictions.

    Per pixel ``l = -cw[y] * log(p[y])``; the default reduction averages over
    non-ignored pixels (see ``_PixelwiseLoss`` for the other reductions), so
    class weights scale the loss like Keras ``sample_weight`` does: with
    weights ``cw`` the result is ``sum(cw[y_i] * l_i) / n_valid``, not a
    weight-normalised mean.

    Args:
        from_logits: ``y_pred`` holds logits instead of probabilities.
        ignore_index: Label value excluded from the loss, or ``None``.
        class_weights: Optional per-class weights (length ``max(K, 2)``).
        name: Loss name (default ``"sparse_categorical_crossentropy"``).
        reduction: Keras reduction name.
        dtype: Keras dtype policy (computation is float32 regardless).
    """

    default_name = "sparse_categorical_crossentropy"

    def _pixel_losses(self, onehot: Any, probs: Any, log_probs: Any) -> Any:
        return -ops.sum(onehot * log_probs, axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class FocalLoss(_PixelwiseLoss):
    """Focal loss (Lin et al., 2017) for sparse labels.

    Per pixel ``l = -a_t * cw[y] * (1 - p_t)**gamma * log(p_t)`` with ``p_t``
    the predicted probability of the true class. ``gamma=0`` and no
    ``alpha``/``class_weights`` reduce it to cross-entropy. Reduction as for
    ``SparseCategoricalCrossentropy``.

    Args:
        gamma: Focusing parameter, ``>= 0``.
        alpha: ``None`` (``a_t = 1``) or a float in ``[0, 1]``. With two
            scored classes (sigmoid ``K == 1`` or softmax ``K == 2``) it is
            the foreground weight: ``a_t = alpha`` for class 1 and
            ``1 - alpha`` for class 0. With more classes it is a uniform
            factor, as in ``keras.losses.CategoricalFocalCrossentropy``; use
            ``class_weights`` for per-class balancing.
        from_logits, ignore_index, class_weights, name, reduction, dtype: As
            for :class:`SparseCategoricalCrossentropy`; the default name is
            ``"focal_loss"``.
    """

    default_name = "focal_loss"
    config_keys = (*_PixelwiseLoss.config_keys, "gamma", "alpha")

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | None = None,
        from_logits: bool = False,
        ignore_index: int | None = None,
        class_weights: Sequence[float] | None = None,
        name: str | None = None,
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(from_logits, ignore_index, class_weights, name, reduction, dtype)
        self.gamma = check_number(gamma, "gamma", low=0)
        self.alpha = check_number(alpha, "alpha", low=0, high=1, allow_none=True)

    def _pixel_losses(self, onehot: Any, probs: Any, log_probs: Any) -> Any:
        p_t = ops.sum(onehot * probs, axis=-1)
        log_p_t = ops.sum(onehot * log_probs, axis=-1)
        modulator = ops.power(ops.maximum(1.0 - p_t, 0.0), self.gamma)
        losses = -modulator * log_p_t
        if self.alpha is None:
            return losses
        if onehot.shape[-1] != 2:
            return losses * self.alpha
        is_foreground = onehot[..., 1]
        alpha_t = self.alpha * is_foreground + (1.0 - self.alpha) * (1.0 - is_foreground)
        return losses * alpha_t


@keras.saving.register_keras_serializable(package=PACKAGE)
class OhemCrossEntropyLoss(SparseCategoricalCrossentropy):
    """Cross-entropy over the hard pixels only: online hard-example mining (OHEM).

    As in PSPNet/OCNet-style semantic segmentation: over the whole batch, a non-ignored pixel is
    kept when the predicted probability of its true class is below ``threshold``, and the
    ``min_kept`` pixels with the lowest such probability (ties included) are always kept, so
    that a well-fitted batch still yields a gradient. The loss is the cross-entropy (with
    ``class_weights``, ``sample_weight``) of the kept pixels, averaged over the kept pixels;
    the others count as ignored. ``threshold=1`` with a large ``min_kept`` keeps every pixel
    whose true-class probability is below 1, i.e. gives cross-entropy wherever it is not 0.

    Args:
        threshold: Probability in ``(0, 1]``; pixels predicted at least this well are easy.
        min_kept: Hardest pixels kept per batch whatever their probability, ``>= 0``.
        from_logits, ignore_index, class_weights, name, reduction, dtype: As for
            :class:`SparseCategoricalCrossentropy`; the default name is ``"ohem_loss"``.

    Example:
        >>> import numpy as np
        >>> y_true = np.array([[[0, 1], [1, 1]]])                    # p_true: .8 .6 .9 .3
        >>> y_pred = np.array([[[[0.8, 0.2], [0.4, 0.6]],
        ...                     [[0.1, 0.9], [0.7, 0.3]]]], "float32")
        >>> loss = OhemCrossEntropyLoss(threshold=0.7, min_kept=1)   # keeps .6 and .3
        >>> round(float(loss(y_true, y_pred)), 4)                   # -(ln .6 + ln .3) / 2
        0.8574
    """

    default_name = "ohem_loss"
    config_keys = (*SparseCategoricalCrossentropy.config_keys, "threshold", "min_kept")

    # The arguments are spelt out (not **kwargs): get_loss routes keywords by signature.
    def __init__(self, threshold: float = 0.7, min_kept: int = 100_000, from_logits: bool = False,
                 ignore_index: int | None = None, class_weights: Sequence[float] | None = None,
                 name: str | None = None, reduction: str | None = "sum_over_batch_size",
                 dtype: Any = None) -> None:
        super().__init__(from_logits, ignore_index, class_weights, name, reduction, dtype)
        self.threshold = check_number(threshold, "threshold", low=0, high=1, low_open=True)
        self.min_kept = check_int(min_kept, "min_kept", minimum=0)

    def _selected(self, onehot: Any, probs: Any, valid: Any) -> Any:
        # The mask is a selection, not a function to differentiate.
        p_true = ops.stop_gradient(ops.sum(onehot * probs, axis=-1))
        keep = ops.less(p_true, self.threshold)
        if self.min_kept > 0:
            # Ignored pixels sort last (2 > any probability); when fewer than min_kept pixels
            # are valid, the cut-off is 2 and every valid pixel is kept.
            flat = ops.reshape(ops.where(valid > 0, p_true, 2.0), (-1,))
            last = ops.minimum(ops.shape(flat)[0], self.min_kept) - 1
            cutoff = ops.take(ops.sort(flat), last)
            keep = ops.logical_or(keep, ops.less_equal(p_true, cutoff))
        return valid * ops.cast(keep, "float32")
