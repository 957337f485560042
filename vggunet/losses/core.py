"""Segmentation losses for dense (per-pixel or per-voxel) class predictions.

Conventions shared by every loss here:

* ``y_true`` holds sparse integer class indices of shape ``(B, *spatial)`` or
  ``(B, *spatial, 1)``; the trailing 1 is squeezed. ``spatial`` may be 2D or
  3D, so the losses also serve the volumetric U-Nets.
* ``y_pred`` has shape ``(B, *spatial, K)`` and holds softmax probabilities,
  or logits when ``from_logits=True``. ``K == 1`` means a single sigmoid
  channel (the probability, or logit, of class 1); it is expanded to the
  two-class case ``[1 - p, p]``, so a binary model behaves exactly like a
  two-channel softmax model and ``class_weights`` then take two values
  (background, foreground).
* ``ignore_index``: pixels labelled with it contribute nothing; they are
  removed from both the numerator and the pixel count, so a batch with ignored
  pixels gives the same loss as the batch with those pixels cut out.
* All arithmetic is float32, whatever the dtype of ``y_pred`` (bfloat16 and
  float16 logits lose too much precision in ``log``/``softmax``).
* Only ``keras.ops`` is used, so the losses run on the TensorFlow, JAX and
  PyTorch backends.

All classes are registered for Keras serialization under the ``vggunet``
package: a model compiled with them reloads with ``keras.models.load_model``
without ``custom_objects`` once this module has been imported.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import keras
from keras import ops

from vggunet.errors import ArgumentError

try:  # Keeps gradients right under tf.distribute; absent on other layouts.
    from keras.src.losses.loss import scale_loss_for_distribution
except ImportError:  # pragma: no cover - depends on the Keras internals

    def scale_loss_for_distribution(value):  # type: ignore[no-redef]
        return value


__all__ = [
    "SparseCategoricalCrossentropy",
    "DiceLoss",
    "JaccardLoss",
    "FocalLoss",
    "CombinedLoss",
    "get_loss",
    "LOSS_NAMES",
]

# Probabilities are clipped to [EPSILON, 1] before the log; the same constant
# Keras uses, so -log(p) is bounded by ~16.1 instead of overflowing.
EPSILON = 1e-7


# --------------------------------------------------------------------------
# Argument validation (shared with vggunet.metrics)
# --------------------------------------------------------------------------


def effective_num_classes(num_classes: int) -> int:
    """Number of classes actually scored for a declared ``num_classes``.

    Args:
        num_classes: Declared class count; ``1`` denotes a binary problem with
            a single sigmoid channel.

    Returns:
        ``2`` for ``num_classes == 1`` (background and foreground are both
        scored), otherwise ``num_classes`` unchanged.
    """
    return 2 if num_classes == 1 else num_classes


def validate_num_classes(num_classes: Any, allow_none: bool = False) -> int | None:
    """Check that ``num_classes`` is a positive int (or ``None`` if allowed).

    Args:
        num_classes: Value to check.
        allow_none: Whether ``None`` (infer from ``y_pred``) is accepted.

    Returns:
        The value as a Python int, or ``None``.

    Raises:
        ValueError: If the value is not a positive integer.
    """
    if num_classes is None and allow_none:
        return None
    # __index__ admits numpy integers but not floats such as 3.0.
    if isinstance(num_classes, bool) or not hasattr(num_classes, "__index__"):
        raise ArgumentError(
            f"num_classes must be a positive integer; got {num_classes!r}."
        )
    value = int(num_classes)
    if value <= 0:
        raise ArgumentError(
            f"num_classes must be a positive integer; got {num_classes!r}."
        )
    return value


def validate_ignore_index(ignore_index: Any) -> int | None:
    """Check that ``ignore_index`` is an int or ``None``.

    Args:
        ignore_index: Value to check.

    Returns:
        The value as a Python int, or ``None``.

    Raises:
        ValueError: If the value is neither ``None`` nor an integer.
    """
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not hasattr(ignore_index, "__index__"):
        raise ArgumentError(
            f"ignore_index must be an integer or None; got {ignore_index!r}."
        )
    return int(ignore_index)


def validate_class_weights(
    class_weights: Any, num_classes: int | None = None
) -> tuple[float, ...] | None:
    """Check per-class weights: finite, non-negative, not all zero.

    Args:
        class_weights: ``None`` or a sequence of numbers, one per class.
        num_classes: Declared class count, if known; the sequence must have
            ``effective_num_classes(num_classes)`` entries.

    Returns:
        The weights as a tuple of floats, or ``None``.

    Raises:
        ValueError: If the weights are malformed, negative, not finite, all
            zero or of the wrong length.
    """
    if class_weights is None:
        return None
    if isinstance(class_weights, (str, bytes, Mapping)) or not isinstance(
        class_weights, Sequence
    ):
        try:  # numpy arrays and tensors are fine; sets and scalars are not.
            class_weights = list(class_weights.tolist())  # type: ignore[union-attr]
        except AttributeError:
            raise ArgumentError(
                "class_weights must be a sequence of floats, one per class; "
                f"got {class_weights!r}."
            ) from None
    try:
        weights = tuple(float(w) for w in class_weights)
    except (TypeError, ValueError):
        raise ArgumentError(
            f"class_weights must contain numbers; got {class_weights!r}."
        ) from None
    if not weights:
        raise ArgumentError(f"class_weights must not be empty; got {class_weights!r}.")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ArgumentError(
            "class_weights must be finite and non-negative; "
            f"got {list(weights)!r}."
        )
    if not any(weights):
        raise ArgumentError(f"class_weights must not all be zero; got {list(weights)!r}.")
    if num_classes is not None:
        expected = effective_num_classes(num_classes)
        if len(weights) != expected:
            hint = (
                " (a binary model, num_classes=1, takes two weights: "
                "background, foreground)"
                if num_classes == 1
                else ""
            )
            raise ArgumentError(
                f"class_weights has {len(weights)} entries {list(weights)!r} "
                f"but num_classes={num_classes} needs {expected}{hint}."
            )
    return weights


def _validate_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ArgumentError(f"{name} must be True or False; got {value!r}.")
    return value


def _validate_non_negative(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ArgumentError(f"{name} must be a non-negative number; got {value!r}.") from None
    if isinstance(value, bool) or not math.isfinite(number) or number < 0:
        raise ArgumentError(f"{name} must be a non-negative number; got {value!r}.")
    return number


# --------------------------------------------------------------------------
# Tensor helpers
# --------------------------------------------------------------------------


def prepare_labels(y_true: Any, pred_rank: int, ignore_index: int | None):
    """Squeeze, cast and mask sparse labels.

    Args:
        y_true: Integer labels, ``(B, *spatial)`` or ``(B, *spatial, 1)``.
        pred_rank: Rank of ``y_pred`` (``len(spatial) + 2``).
        ignore_index: Label whose pixels are masked out, or ``None``.

    Returns:
        ``(labels, valid)``: int32 labels of shape ``(B, *spatial)`` where
        ignored pixels are replaced by 0 (so that one-hot encoding never sees
        an out-of-range value), and a float32 mask that is 0 on ignored pixels
        and 1 elsewhere.

    Raises:
        ValueError: If the rank of ``y_true`` does not fit ``y_pred``.
    """
    y_true = ops.convert_to_tensor(y_true)
    rank = len(y_true.shape)
    if rank == pred_rank:
        if y_true.shape[-1] != 1:
            raise ArgumentError(
                "y_true must hold sparse class indices of shape (B, ..., 1) or "
                f"(B, ...); got shape {tuple(y_true.shape)} (one-hot labels are "
                "not supported, take their argmax)."
            )
        y_true = ops.squeeze(y_true, axis=-1)
    elif rank != pred_rank - 1:
        raise ArgumentError(
            f"y_true of shape {tuple(y_true.shape)} does not match y_pred of "
            f"rank {pred_rank}; expected rank {pred_rank - 1} or {pred_rank}."
        )
    labels = ops.cast(y_true, "int32")
    if ignore_index is None:
        return labels, ops.ones_like(labels, dtype="float32")
    keep = ops.not_equal(labels, ignore_index)
    labels = ops.where(keep, labels, ops.zeros_like(labels))
    return labels, ops.cast(keep, "float32")


def class_probabilities(y_pred: Any, from_logits: bool):
    """Float32 class probabilities and log-probabilities.

    Args:
        y_pred: ``(B, *spatial, K)`` probabilities or logits; ``K == 1`` is a
            sigmoid output.
        from_logits: Whether ``y_pred`` holds logits.

    Returns:
        ``(probs, log_probs)``, both ``(B, *spatial, C)`` float32 with
        ``C = max(K, 2)``.

    Raises:
        ValueError: If the channel axis is not statically known.
    """
    y_pred = ops.cast(ops.convert_to_tensor(y_pred), "float32")
    channels = y_pred.shape[-1]
    if channels is None:
        raise ArgumentError(
            "The last (class) axis of y_pred must have a static size; "
            f"got shape {tuple(y_pred.shape)}."
        )
    if channels == 1:
        if from_logits:
            # log(sigmoid(x)) = -softplus(-x): exact for large |x|.
            log_p1 = -ops.softplus(-y_pred)
            log_p0 = -ops.softplus(y_pred)
            p1 = ops.sigmoid(y_pred)
        else:
            p1 = ops.clip(y_pred, 0.0, 1.0)
            log_p1 = ops.log(ops.maximum(p1, EPSILON))
            log_p0 = ops.log(ops.maximum(1.0 - p1, EPSILON))
        probs = ops.concatenate([1.0 - p1, p1], axis=-1)
        log_probs = ops.concatenate([log_p0, log_p1], axis=-1)
        return probs, log_probs
    if from_logits:
        log_probs = ops.log_softmax(y_pred, axis=-1)
        return ops.exp(log_probs), log_probs
    return y_pred, ops.log(ops.clip(y_pred, EPSILON, 1.0))


def pixel_weights(valid: Any, sample_weight: Any | None):
    """Combine the ignore mask with an optional ``sample_weight``.

    Args:
        valid: float32 mask ``(B, *spatial)``.
        sample_weight: ``None``, per-sample ``(B,)``, or per-pixel
            ``(B, *spatial)`` / ``(B, *spatial, 1)`` weights.

    Returns:
        float32 weights ``(B, *spatial)``.
    """
    if sample_weight is None:
        return valid
    weights = ops.cast(ops.convert_to_tensor(sample_weight), "float32")
    rank = len(valid.shape)
    if len(weights.shape) == rank + 1 and weights.shape[-1] == 1:
        weights = ops.squeeze(weights, axis=-1)
    while len(weights.shape) < rank:
        weights = ops.expand_dims(weights, axis=-1)
    return valid * weights


def _check_channels(
    channels: int, num_classes: int | None, class_weights: tuple[float, ...] | None
) -> None:
    """Raise if ``y_pred``'s class axis disagrees with the configuration."""
    scored = max(channels, 2)
    if num_classes is not None and effective_num_classes(num_classes) != scored:
        raise ArgumentError(
            f"y_pred has {channels} channel(s) but num_classes={num_classes}."
        )
    if class_weights is not None and len(class_weights) != scored:
        raise ArgumentError(
            f"class_weights has {len(class_weights)} entries but y_pred scores "
            f"{scored} classes ({channels} channel(s))."
        )


# --------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------


class _PixelwiseLoss(keras.losses.Loss):
    """Base for losses that are a mean of independent per-pixel terms.

    Reduction (``self.reduction``), with ``w = sample_weight * not_ignored``:

    * ``"sum_over_batch_size"`` / ``"mean"`` (default): ``sum(w * l)`` divided
      by the number of non-ignored pixels. Like Keras, ``sample_weight`` only
      scales the numerator; unlike Keras, ignored pixels leave the denominator.
    * ``"mean_with_sample_weight"``: ``sum(w * l) / sum(w)``.
    * ``"sum"``: ``sum(w * l)``.
    * ``"none"`` / ``None``: the per-pixel map ``w * l``.
    """

    def __init__(
        self,
        from_logits: bool = False,
        ignore_index: int | None = None,
        class_weights: Sequence[float] | None = None,
        name: str | None = None,
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = _validate_bool("from_logits", from_logits)
        self.ignore_index = validate_ignore_index(ignore_index)
        self.class_weights = validate_class_weights(class_weights)

    def _pixel_losses(self, labels, probs, log_probs):
        """Unweighted per-pixel loss ``(B, *spatial)`` from one-hot inputs (subclasses define it)."""
        raise TypeError(f"{type(self).__name__} must define _pixel_losses")

    def _weighted_map(self, y_true, y_pred, sample_weight):
        y_pred = ops.convert_to_tensor(y_pred)
        labels, valid = prepare_labels(y_true, len(y_pred.shape), self.ignore_index)
        probs, log_probs = class_probabilities(y_pred, self.from_logits)
        _check_channels(y_pred.shape[-1], None, self.class_weights)
        onehot = ops.one_hot(labels, probs.shape[-1], dtype="float32")
        losses = self._pixel_losses(onehot, probs, log_probs)
        if self.class_weights is not None:
            # Weighting via the one-hot row (not a gather) keeps stray
            # out-of-range labels from crashing the TensorFlow CPU kernel.
            cw = ops.convert_to_tensor(self.class_weights, dtype="float32")
            losses = losses * ops.sum(onehot * cw, axis=-1)
        return losses, valid, pixel_weights(valid, sample_weight)

    def call(self, y_true: Any, y_pred: Any):
        """Per-pixel losses, zero on ignored pixels.

        Args:
            y_true: Sparse labels ``(B, *spatial)`` or ``(B, *spatial, 1)``.
            y_pred: Probabilities or logits ``(B, *spatial, K)``.

        Returns:
            float32 tensor ``(B, *spatial)``.
        """
        losses, _, weights = self._weighted_map(y_true, y_pred, None)
        return losses * weights

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any | None = None):
        """Reduced loss; see the class docstring for the reduction rules.

        Args:
            y_true: Sparse labels ``(B, *spatial)`` or ``(B, *spatial, 1)``.
            y_pred: Probabilities or logits ``(B, *spatial, K)``.
            sample_weight: Optional ``(B,)`` or ``(B, *spatial)`` weights.

        Returns:
            Scalar float32 loss (or the per-pixel map for reduction "none").
        """
        with keras.name_scope(self.name):
            losses, valid, weights = self._weighted_map(y_true, y_pred, sample_weight)
            weighted = losses * weights
            if self.reduction in (None, "none"):
                return weighted
            total = ops.sum(weighted)
            if self.reduction == "sum":
                return total
            if self.reduction == "mean_with_sample_weight":
                count = ops.sum(weights)
            else:
                count = ops.sum(valid)
            # divide_no_nan: an all-ignored batch yields 0 and zero gradients.
            return scale_loss_for_distribution(ops.divide_no_nan(total, count))

    def get_config(self) -> dict[str, Any]:
        """Return all constructor arguments.

        Returns:
            A JSON-serializable dict accepted by ``from_config``.
        """
        config = super().get_config()
        config["dtype"] = self.dtype
        config.update(
            from_logits=self.from_logits,
            ignore_index=self.ignore_index,
            class_weights=None if self.class_weights is None else list(self.class_weights),
        )
        return config


@keras.saving.register_keras_serializable(package="vggunet")
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
        name: Loss name.
        reduction: Keras reduction name.
        dtype: Keras dtype policy (computation is float32 regardless).
    """

    def __init__(
        self,
        from_logits: bool = False,
        ignore_index: int | None = None,
        class_weights: Sequence[float] | None = None,
        name: str = "sparse_categorical_crossentropy",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(
            from_logits=from_logits,
            ignore_index=ignore_index,
            class_weights=class_weights,
            name=name,
            reduction=reduction,
            dtype=dtype,
        )

    def _pixel_losses(self, onehot, probs, log_probs):
        return -ops.sum(onehot * log_probs, axis=-1)


@keras.saving.register_keras_serializable(package="vggunet")
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
        from_logits: ``y_pred`` holds logits instead of probabilities.
        ignore_index: Label value excluded from the loss, or ``None``.
        class_weights: Optional per-class weights (length ``max(K, 2)``).
        name: Loss name.
        reduction: Keras reduction name.
        dtype: Keras dtype policy (computation is float32 regardless).
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | None = None,
        from_logits: bool = False,
        ignore_index: int | None = None,
        class_weights: Sequence[float] | None = None,
        name: str = "focal_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(
            from_logits=from_logits,
            ignore_index=ignore_index,
            class_weights=class_weights,
            name=name,
            reduction=reduction,
            dtype=dtype,
        )
        self.gamma = _validate_non_negative("gamma", gamma)
        if alpha is not None:
            alpha_value = _validate_non_negative("alpha", alpha)
            if alpha_value > 1.0:
                raise ArgumentError(f"alpha must lie in [0, 1]; got {alpha!r}.")
            alpha = alpha_value
        self.alpha = alpha

    def _pixel_losses(self, onehot, probs, log_probs):
        p_t = ops.sum(onehot * probs, axis=-1)
        log_p_t = ops.sum(onehot * log_probs, axis=-1)
        modulator = ops.power(ops.maximum(1.0 - p_t, 0.0), self.gamma)
        losses = -modulator * log_p_t
        if self.alpha is not None:
            if onehot.shape[-1] == 2:
                is_foreground = onehot[..., 1]
                alpha_t = self.alpha * is_foreground + (1.0 - self.alpha) * (
                    1.0 - is_foreground
                )
                losses = losses * alpha_t
            else:
                losses = losses * self.alpha
        return losses

    def get_config(self) -> dict[str, Any]:
        """Return all constructor arguments.

        Returns:
            A JSON-serializable dict accepted by ``from_config``.
        """
        config = super().get_config()
        config.update(gamma=self.gamma, alpha=self.alpha)
        return config


class _OverlapLoss(keras.losses.Loss):
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

    default_name: str | None = None

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
        super().__init__(name=name or self.default_name, reduction=reduction, dtype=dtype)
        self.num_classes = validate_num_classes(num_classes, allow_none=True)
        self.from_logits = _validate_bool("from_logits", from_logits)
        self.ignore_index = validate_ignore_index(ignore_index)
        self.smooth = _validate_non_negative("smooth", smooth)
        self.class_weights = validate_class_weights(class_weights, self.num_classes)

    def _scores(self, intersection, pred_sum, true_sum):
        """Per-class overlap scores from the weighted sums (subclasses define it)."""
        raise TypeError(f"{type(self).__name__} must define _scores")

    def _compute(self, y_true, y_pred, sample_weight):
        y_pred = ops.convert_to_tensor(y_pred)
        labels, valid = prepare_labels(y_true, len(y_pred.shape), self.ignore_index)
        probs, _ = class_probabilities(y_pred, self.from_logits)
        _check_channels(y_pred.shape[-1], self.num_classes, self.class_weights)
        onehot = ops.one_hot(labels, probs.shape[-1], dtype="float32")
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
    def _safe_ratio(numerator, denominator):
        # Empty classes (denominator 0, only possible with smooth=0) count as
        # perfectly predicted instead of producing NaN.
        positive = denominator > 0
        safe = ops.where(positive, denominator, ops.ones_like(denominator))
        return ops.where(positive, numerator / safe, ops.ones_like(numerator))

    def call(self, y_true: Any, y_pred: Any):
        """Batch loss without sample weights.

        Args:
            y_true: Sparse labels ``(B, *spatial)`` or ``(B, *spatial, 1)``.
            y_pred: Probabilities or logits ``(B, *spatial, K)``.

        Returns:
            Scalar float32 loss.
        """
        return self._compute(y_true, y_pred, None)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any | None = None):
        """Batch loss with optional pixel weights.

        Args:
            y_true: Sparse labels ``(B, *spatial)`` or ``(B, *spatial, 1)``.
            y_pred: Probabilities or logits ``(B, *spatial, K)``.
            sample_weight: Optional ``(B,)`` or ``(B, *spatial)`` weights,
                applied inside the overlap sums.

        Returns:
            Scalar float32 loss.
        """
        with keras.name_scope(self.name):
            return scale_loss_for_distribution(
                self._compute(y_true, y_pred, sample_weight)
            )

    def get_config(self) -> dict[str, Any]:
        """Return all constructor arguments.

        Returns:
            A JSON-serializable dict accepted by ``from_config``.
        """
        config = super().get_config()
        config["dtype"] = self.dtype
        config.update(
            num_classes=self.num_classes,
            from_logits=self.from_logits,
            ignore_index=self.ignore_index,
            smooth=self.smooth,
            class_weights=None if self.class_weights is None else list(self.class_weights),
        )
        return config


@keras.saving.register_keras_serializable(package="vggunet")
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
        name: Loss name.
        reduction: Accepted for Keras compatibility; the loss is a scalar.
        dtype: Keras dtype policy (computation is float32 regardless).
    """

    default_name = "dice_loss"

    def _scores(self, intersection, pred_sum, true_sum):
        return self._safe_ratio(
            2.0 * intersection + self.smooth, pred_sum + true_sum + self.smooth
        )


@keras.saving.register_keras_serializable(package="vggunet")
class JaccardLoss(_OverlapLoss):
    """Soft Jaccard (IoU) loss, ``1 - mean_c (I_c + s) / (P_c + T_c - I_c + s)``.

    See ``_OverlapLoss`` for the sums, the role of ``sample_weight`` and the
    class averaging.

    Args:
        num_classes: Expected number of classes (``1`` = single sigmoid
            channel), checked against ``y_pred``; ``None`` infers it.
        from_logits: ``y_pred`` holds logits instead of probabilities.
        ignore_index: Label value excluded from the sums, or ``None``.
        smooth: Additive smoothing ``s``, ``>= 0``.
        class_weights: Optional per-class weights for the class average.
        name: Loss name.
        reduction: Accepted for Keras compatibility; the loss is a scalar.
        dtype: Keras dtype policy (computation is float32 regardless).
    """

    default_name = "jaccard_loss"

    def _scores(self, intersection, pred_sum, true_sum):
        return self._safe_ratio(
            intersection + self.smooth, pred_sum + true_sum - intersection + self.smooth
        )


def _as_loss(value: Any, role: str) -> keras.losses.Loss:
    """Accept a Loss, its serialized dict, or a ``get_loss`` name."""
    if isinstance(value, keras.losses.Loss):
        return value
    if isinstance(value, Mapping):
        loss = keras.saving.deserialize_keras_object(dict(value))
    elif isinstance(value, str):
        loss = get_loss(value)
    else:
        loss = None
    if not isinstance(loss, keras.losses.Loss):
        raise ArgumentError(
            f"{role} must be a keras.losses.Loss, its serialized config or a "
            f"loss name; got {value!r}."
        )
    return loss


@keras.saving.register_keras_serializable(package="vggunet")
class CombinedLoss(keras.losses.Loss):
    """Weighted sum ``w0 * first + w1 * second`` of two losses.

    Each child applies its own reduction and receives the same
    ``sample_weight``; this object's ``reduction`` is stored for Keras
    compatibility only.

    Args:
        first: A ``keras.losses.Loss``, its serialized dict, or a name known
            to ``get_loss``.
        second: Same as ``first``.
        weights: Two finite, non-negative weights, not both zero.
        name: Loss name.
        reduction: Accepted for Keras compatibility; unused.
        dtype: Keras dtype policy.
    """

    def __init__(
        self,
        first: Any,
        second: Any,
        weights: Sequence[float] = (1.0, 1.0),
        name: str = "combined_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.first = _as_loss(first, "first")
        self.second = _as_loss(second, "second")
        try:
            pair = tuple(float(w) for w in weights)
        except (TypeError, ValueError):
            raise ArgumentError(
                f"weights must be two non-negative numbers; got {weights!r}."
            ) from None
        if len(pair) != 2 or any(not math.isfinite(w) or w < 0 for w in pair) or not any(pair):
            raise ArgumentError(
                "weights must be two finite, non-negative numbers, not both "
                f"zero; got {weights!r}."
            )
        self.weights = pair

    def call(self, y_true: Any, y_pred: Any):
        """Weighted sum of the children's reduced losses, without sample weights.

        Args:
            y_true: Sparse labels.
            y_pred: Probabilities or logits.

        Returns:
            Scalar float32 loss.
        """
        return self(y_true, y_pred)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any | None = None):
        """Weighted sum of the children's losses.

        Args:
            y_true: Sparse labels.
            y_pred: Probabilities or logits.
            sample_weight: Passed unchanged to both children.

        Returns:
            ``weights[0] * first + weights[1] * second``.
        """
        with keras.name_scope(self.name):
            a = ops.cast(self.first(y_true, y_pred, sample_weight=sample_weight), "float32")
            b = ops.cast(self.second(y_true, y_pred, sample_weight=sample_weight), "float32")
            return self.weights[0] * a + self.weights[1] * b

    def get_config(self) -> dict[str, Any]:
        """Return all constructor arguments, children serialized.

        Returns:
            A JSON-serializable dict accepted by ``from_config``.
        """
        config = super().get_config()
        config["dtype"] = self.dtype
        config.update(
            first=keras.saving.serialize_keras_object(self.first),
            second=keras.saving.serialize_keras_object(self.second),
            weights=list(self.weights),
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CombinedLoss:
        """Rebuild from ``get_config`` output, deserializing both children.

        Args:
            config: Dict produced by ``get_config``.

        Returns:
            A new ``CombinedLoss``.
        """
        config = dict(config)
        for key in ("first", "second"):
            if isinstance(config.get(key), Mapping):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


# --------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------

_LOSS_CLASSES: dict[str, type[keras.losses.Loss]] = {
    "ce": SparseCategoricalCrossentropy,
    "crossentropy": SparseCategoricalCrossentropy,
    "dice": DiceLoss,
    "jaccard": JaccardLoss,
    "focal": FocalLoss,
}

#: Names accepted by :func:`get_loss`.
LOSS_NAMES: tuple[str, ...] = (*_LOSS_CLASSES, "ce+dice")


# Accepted for every name so a CLI can pass them unconditionally; dropped by
# the losses that have no use for them (e.g. num_classes for "ce").
_COMMON_KWARGS = frozenset({"num_classes", "from_logits", "ignore_index", "class_weights"})


def _init_params(cls: type) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self", "name"}


def _build(cls: type[keras.losses.Loss], kwargs: Mapping[str, Any]) -> keras.losses.Loss:
    accepted = _init_params(cls)
    return cls(**{k: v for k, v in kwargs.items() if k in accepted})


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
        ValueError: If the name is unknown (the message lists valid names).
        TypeError: If a keyword is accepted by none of the involved losses.

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
    """
    if isinstance(name, keras.losses.Loss):
        if kwargs:
            raise TypeError(f"Keyword arguments {sorted(kwargs)} given with a Loss instance.")
        return name
    if not isinstance(name, str):
        raise ArgumentError(
            f"Unknown loss {name!r}; valid names are: {', '.join(LOSS_NAMES)}."
        )
    key = name.strip().lower()
    if key == "ce+dice":
        classes: tuple[type, ...] = (SparseCategoricalCrossentropy, DiceLoss, CombinedLoss)
    elif key in _LOSS_CLASSES:
        classes = (_LOSS_CLASSES[key],)
    else:
        raise ArgumentError(
            f"Unknown loss {name!r}; valid names are: {', '.join(LOSS_NAMES)}."
        )
    accepted = set().union(_COMMON_KWARGS, *(_init_params(c) for c in classes)) - {
        "first",
        "second",
    }
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise TypeError(
            f"Loss {key!r} does not accept argument(s) {unknown}; accepted: "
            f"{sorted(accepted)}."
        )
    if key != "ce+dice":
        return _build(classes[0], kwargs)
    child_kwargs = {k: v for k, v in kwargs.items() if k not in ("weights", "reduction", "dtype")}
    combined_kwargs = {k: v for k, v in kwargs.items() if k in ("weights", "reduction", "dtype")}
    return CombinedLoss(
        _build(SparseCategoricalCrossentropy, child_kwargs),
        _build(DiceLoss, child_kwargs),
        name="ce_dice_loss",
        **combined_kwargs,
    )
