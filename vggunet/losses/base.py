"""What every vggunet loss and metric shares: argument checks, tensor helpers, the loss base.

Conventions shared by every loss and metric:

* ``y_true`` holds sparse integer class indices of shape ``(B, *spatial)`` or
  ``(B, *spatial, 1)``; the trailing 1 is squeezed. ``spatial`` may be 2D or
  3D, so the objectives also serve the volumetric U-Nets.
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
* Only ``keras.ops`` is used, so the objectives run on the TensorFlow, JAX and
  PyTorch backends.

``vggunet.metrics`` imports these helpers from this module, never from the
``vggunet.losses`` package, which may still be initialising when Keras's
registration hook imports the metrics (see ``vggunet._serializables``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import keras
from keras import ops

from vggunet.checks import check_bool, check_int
from vggunet.errors import ArgumentError

__all__ = [
    "EPSILON",
    "AttributeConfig",
    "SegmentationLoss",
    "check_channels",
    "class_probabilities",
    "effective_num_classes",
    "pixel_weights",
    "prepare_labels",
    "scale_for_replicas",
    "validate_class_weights",
    "validate_ignore_index",
    "validate_num_classes",
]

# Probabilities are clipped to [EPSILON, 1] before the log; the same constant
# Keras uses, so -log(p) is bounded by ~16.1 instead of overflowing.
EPSILON = 1e-7


# --------------------------------------------------------------------------
# Argument validation
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
        num_classes: Value to check; numpy integers are accepted, floats such
            as ``3.0`` are not.
        allow_none: Whether ``None`` (infer from ``y_pred``) is accepted.

    Returns:
        The value as a Python int, or ``None``.

    Raises:
        ArgumentError: If the value is not a positive integer.
    """
    return check_int(num_classes, "num_classes", minimum=1, allow_none=allow_none)


def validate_ignore_index(ignore_index: Any) -> int | None:
    """Check that ``ignore_index`` is an int or ``None``.

    Args:
        ignore_index: Value to check.

    Returns:
        The value as a Python int, or ``None``.

    Raises:
        ArgumentError: If the value is neither ``None`` nor an integer.
    """
    return check_int(ignore_index, "ignore_index", minimum=None, allow_none=True)


def _weights_tuple(class_weights: Any) -> tuple[float, ...]:
    """The weights as floats, from a sequence, a numpy array or a tensor."""
    if isinstance(class_weights, (str, bytes, Mapping)) or not isinstance(
        class_weights, Sequence
    ):
        try:  # numpy arrays and tensors are fine; sets and scalars are not.
            class_weights = list(class_weights.tolist())
        except AttributeError:
            raise ArgumentError(
                "class_weights must be a sequence of floats, one per class; "
                f"got {class_weights!r}."
            ) from None
    try:
        return tuple(float(w) for w in class_weights)
    except (TypeError, ValueError):
        raise ArgumentError(
            f"class_weights must contain numbers; got {class_weights!r}."
        ) from None


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
        ArgumentError: If the weights are malformed, negative, not finite, all
            zero or of the wrong length.
    """
    if class_weights is None:
        return None
    weights = _weights_tuple(class_weights)
    if not weights:
        raise ArgumentError(f"class_weights must not be empty; got {class_weights!r}.")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ArgumentError(
            f"class_weights must be finite and non-negative; got {list(weights)!r}."
        )
    if not any(weights):
        raise ArgumentError(f"class_weights must not all be zero; got {list(weights)!r}.")
    if num_classes is not None and len(weights) != effective_num_classes(num_classes):
        hint = (" (a binary model, num_classes=1, takes two weights: background, foreground)"
                if num_classes == 1 else "")
        raise ArgumentError(
            f"class_weights has {len(weights)} entries {list(weights)!r} but "
            f"num_classes={num_classes} needs {effective_num_classes(num_classes)}{hint}."
        )
    return weights


# --------------------------------------------------------------------------
# Tensor helpers
# --------------------------------------------------------------------------


def prepare_labels(y_true: Any, pred_rank: int, ignore_index: int | None) -> tuple[Any, Any]:
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
        ArgumentError: If the rank of ``y_true`` does not fit ``y_pred``.
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


def class_probabilities(y_pred: Any, from_logits: bool) -> tuple[Any, Any]:
    """Float32 class probabilities and log-probabilities.

    Args:
        y_pred: ``(B, *spatial, K)`` probabilities or logits; ``K == 1`` is a
            sigmoid output.
        from_logits: Whether ``y_pred`` holds logits.

    Returns:
        ``(probs, log_probs)``, both ``(B, *spatial, C)`` float32 with
        ``C = max(K, 2)``.

    Raises:
        ArgumentError: If the channel axis is not statically known.
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


def pixel_weights(valid: Any, sample_weight: Any | None) -> Any:
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


def check_channels(
    channels: int, num_classes: int | None, class_weights: Sequence[float] | None
) -> None:
    """Raise if ``y_pred``'s class axis disagrees with the configuration.

    Args:
        channels: Size of ``y_pred``'s last axis (``1`` = sigmoid output).
        num_classes: Declared class count, or ``None`` (not checked).
        class_weights: Per-class weights, or ``None`` (not checked).

    Raises:
        ArgumentError: If ``num_classes`` or the number of weights does not
            match the ``max(channels, 2)`` classes scored.
    """
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


def scale_for_replicas(value: Any) -> Any:
    """Divide a replica's mean loss by the number of replicas in sync.

    Under ``tf.distribute`` each replica's gradients are summed across
    replicas, so a loss averaged over one replica's batch must be divided by
    the replica count to give the gradient of the global mean (what Keras's
    own losses do). On other backends, or outside a strategy, the value is
    returned unchanged.

    Args:
        value: A float loss tensor.

    Returns:
        ``value / num_replicas_in_sync`` under a multi-replica TensorFlow
        strategy, otherwise ``value``.
    """
    if keras.backend.backend() != "tensorflow":
        return value
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        value = ops.multiply(value, ops.cast(1.0 / replicas, value.dtype))
    return value


# --------------------------------------------------------------------------
# Base classes
# --------------------------------------------------------------------------


class AttributeConfig:
    """Mixin: ``get_config`` adds the attributes named in ``config_keys``.

    Every vggunet loss and metric stores its constructor arguments as
    attributes of the same name, so one ``get_config`` serves them all; a
    tuple is stored as a list and a nested Keras object (a child loss) as its
    serialized dict, which ``from_config`` accepts back.
    """

    config_keys: tuple[str, ...] = ()

    def get_config(self) -> dict[str, Any]:
        """Return all constructor arguments.

        Returns:
            A JSON-serializable dict accepted by ``from_config``.
        """
        config = super().get_config()  # type: ignore[misc]
        for key in self.config_keys:
            value = getattr(self, key)
            if isinstance(value, tuple):
                value = list(value)
            elif hasattr(value, "get_config"):
                value = keras.saving.serialize_keras_object(value)
            config[key] = value
        return config


class SegmentationLoss(AttributeConfig, keras.losses.Loss):
    """Base of vggunet's losses: default name, shared arguments, reduction hook.

    Subclasses set ``default_name`` (the name when ``name`` is ``None``) and
    ``config_keys`` and define ``_reduced(y_true, y_pred, sample_weight)``,
    the loss with its reduction applied; ``__call__`` runs it inside the
    loss's name scope. The result is float32 whatever the dtype policy.
    The arguments are those of :class:`vggunet.losses.SparseCategoricalCrossentropy`.
    """

    default_name: str | None = None
    config_keys = ("dtype", "from_logits", "ignore_index", "class_weights")

    def __init__(self, from_logits: bool = False, ignore_index: int | None = None,
                 class_weights: Sequence[float] | None = None, name: str | None = None,
                 reduction: str | None = "sum_over_batch_size", dtype: Any = None) -> None:
        super().__init__(name=name or self.default_name, reduction=reduction, dtype=dtype)
        self.from_logits = check_bool(from_logits, "from_logits")
        self.ignore_index = validate_ignore_index(ignore_index)
        self.class_weights = validate_class_weights(class_weights)

    def _prepared(self, y_true: Any, y_pred: Any, num_classes: int | None = None):
        """One-hot labels, probabilities, log-probabilities (all ``(B, *spatial, C)``) and the
        ``(B, *spatial)`` mask of pixels not ignored; checks ``y_pred``'s class axis."""
        y_pred = ops.convert_to_tensor(y_pred)
        labels, valid = prepare_labels(y_true, len(y_pred.shape), self.ignore_index)
        probs, log_probs = class_probabilities(y_pred, self.from_logits)
        check_channels(y_pred.shape[-1], num_classes, self.class_weights)
        onehot = ops.one_hot(labels, probs.shape[-1], dtype="float32")
        return onehot, probs, log_probs, valid

    def _reduced(self, y_true: Any, y_pred: Any, sample_weight: Any | None) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define _reduced")

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any | None = None) -> Any:
        """Reduced loss; see the class docstring for the reduction rules.

        Args:
            y_true: Sparse labels ``(B, *spatial)`` or ``(B, *spatial, 1)``.
            y_pred: Probabilities or logits ``(B, *spatial, K)``.
            sample_weight: Optional ``(B,)`` or ``(B, *spatial)`` weights.

        Returns:
            Scalar float32 loss (or the per-pixel map for reduction "none").
        """
        with keras.name_scope(self.name):
            return self._reduced(y_true, y_pred, sample_weight)
