"""The brain-tumour lab's soft Dice loss for volumes with sigmoid multi-label outputs.

Conventions (unlike the sparse labels of :mod:`vggunet.losses.base`, because the lab's classes,
e.g. edema / non-enhancing / enhancing tumour, are independent labels, one sigmoid each):

* ``y_true``: multi-label 0/1 masks of the same shape as ``y_pred``.
* ``y_pred``: per-class sigmoid probabilities, or logits with ``from_logits=True``.
* Layout: 5D volumes ``(B, H, W, D, C)`` (``data_format="channels_last"``) or
  ``(B, C, H, W, D)`` (``"channels_first"``, the lab's); 4D images ``(B, H, W, C)`` /
  ``(B, C, H, W)`` work the same way. ``data_format=None`` takes Keras's
  ``image_data_format()`` when the object is built, and the resolved value is what
  ``get_config`` stores, so a saved model does not depend on the loading machine's setting.
* Sums run over the batch and every spatial axis (one score per class and batch); the
  result is the mean over classes.
* No ``ignore_index``: with one-hot multi-label targets there is no class index to ignore;
  a ``sample_weight`` of 0 removes voxels from every sum instead.
* float32 arithmetic and ``keras.ops`` only (TensorFlow, JAX, PyTorch).

:mod:`vggunet.metrics.volumetric` imports the helpers from this module.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from vggunet._serializables import PACKAGE
from vggunet.checks import check_choice, check_number
from vggunet.choices import DATA_FORMATS
from vggunet.errors import ArgumentError
from vggunet.losses.base import SegmentationLoss, pixel_weights
from vggunet.losses.overlap import _OverlapLoss

__all__ = ["LAB_EPSILON", "SoftDiceLoss", "resolve_data_format", "volume_tensors"]

LAB_EPSILON = 1.0
"""The smoothing ε of the lab's soft Dice loss and Dice coefficient (one default for both)."""


def resolve_data_format(data_format: str | None) -> str:
    """The data format to store: the argument, or Keras's ``image_data_format()`` for ``None``.

    Args:
        data_format: ``"channels_last"``, ``"channels_first"`` or ``None``.

    Returns:
        ``"channels_last"`` or ``"channels_first"``.

    Raises:
        ArgumentError: For any other value.

    Example:
        >>> resolve_data_format("channels_first")
        'channels_first'
    """
    if data_format is None:
        data_format = keras.config.image_data_format()
    return check_choice(data_format, DATA_FORMATS, "data_format")


def _channels_last(x: Any, data_format: str) -> Any:
    x = ops.cast(ops.convert_to_tensor(x), "float32")
    return ops.moveaxis(x, 1, -1) if data_format == "channels_first" else x


def _check_shapes(y_true: Any, y_pred: Any) -> None:
    true_shape, pred_shape = tuple(y_true.shape), tuple(y_pred.shape)
    if len(pred_shape) not in (4, 5):
        raise ArgumentError(
            "y_pred must be 5D (B, H, W, D, C) / (B, C, H, W, D), or 4D for images; "
            f"got shape {pred_shape}."
        )
    compatible = len(true_shape) == len(pred_shape) and all(
        a is None or b is None or a == b for a, b in zip(true_shape, pred_shape)
    )
    if not compatible:
        raise ArgumentError(
            f"y_true of shape {true_shape} must have the shape of y_pred {pred_shape} "
            "(multi-label one-hot masks, one channel per class)."
        )
    if pred_shape[-1] is None:
        raise ArgumentError(f"The class axis of y_pred must have a static size; got {pred_shape}.")


def volume_tensors(
    y_true: Any,
    y_pred: Any,
    data_format: str,
    from_logits: bool = False,
    sample_weight: Any | None = None,
) -> tuple[Any, Any, Any]:
    """Targets, probabilities and voxel weights, channels last, float32.

    Args:
        y_true: Multi-label 0/1 masks, the shape of ``y_pred``.
        y_pred: Sigmoid probabilities (or logits), 4D or 5D, laid out as ``data_format`` says.
        data_format: ``"channels_last"`` or ``"channels_first"`` (already resolved).
        from_logits: Apply a sigmoid to ``y_pred``.
        sample_weight: ``None``, per-sample ``(B,)``, or per-voxel weights of the spatial
            shape, with or without a class axis of size 1 (where ``data_format`` puts it).

    Returns:
        ``(targets, probs, weights)``: the first two ``(B, *spatial, C)``, the weights
        ``(B, *spatial, 1)``.

    Raises:
        ArgumentError: If the ranks or shapes do not fit.
    """
    y_true, y_pred = ops.convert_to_tensor(y_true), ops.convert_to_tensor(y_pred)
    _check_shapes(y_true, y_pred)
    targets = _channels_last(y_true, data_format)
    probs = _channels_last(y_pred, data_format)
    if from_logits:
        probs = ops.sigmoid(probs)
    if sample_weight is not None:
        sample_weight = ops.convert_to_tensor(sample_weight)
        if len(sample_weight.shape) == len(y_pred.shape):
            sample_weight = _channels_last(sample_weight, data_format)
    weights = pixel_weights(ops.ones_like(probs[..., 0]), sample_weight)
    return targets, probs, ops.expand_dims(weights, axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SoftDiceLoss(_OverlapLoss):
    """The lab's ``soft_dice_loss``: ``1 - mean_c (2 Σ p g + ε) / (Σ p² + Σ g² + ε)``.

    ``p`` are the sigmoid probabilities and ``g`` the 0/1 targets of class ``c``; the sums
    run over the batch and all spatial positions, weighted by ``sample_weight`` when given
    (see the module docstring for shapes and layouts). A class absent from targets and
    predictions scores 1 (also with ``epsilon=0``, where the lab's formula would give NaN).
    The result is a scalar whatever ``reduction`` says.

    Args:
        epsilon: The smoothing ε, ``>= 0`` (the lab's 1 by default).
        data_format: ``"channels_last"``, ``"channels_first"`` or ``None`` (Keras's
            ``image_data_format()``).
        from_logits: ``y_pred`` holds logits; a sigmoid is applied first.
        name: Loss name (default ``"soft_dice_loss"``).
        reduction: Accepted for Keras compatibility; the loss is a scalar.
        dtype: Keras dtype policy (computation is float32 regardless).

    Example:
        >>> import numpy as np
        >>> g = np.zeros((1, 2, 2, 2, 1), "float32"); g[0, 0, 0, 0, 0] = 1
        >>> loss = SoftDiceLoss(data_format="channels_last")
        >>> round(float(loss(g, g)), 6)  # perfect prediction
        0.0
        >>> round(float(loss(g, np.zeros_like(g))), 6)  # 1 - (0 + 1) / (0 + 1 + 1)
        0.5
    """

    default_name = "soft_dice_loss"
    config_keys = ("dtype", "from_logits", "epsilon", "data_format")

    def __init__(
        self,
        epsilon: float = LAB_EPSILON,
        data_format: str | None = None,
        from_logits: bool = False,
        name: str | None = None,
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        # The overlap base lends `call`, the reduction and the empty-class rule; its own
        # __init__ is skipped because its sparse-label arguments do not apply here.
        SegmentationLoss.__init__(self, from_logits, None, None, name, reduction, dtype)
        self.epsilon = check_number(epsilon, "epsilon", low=0)
        self.data_format = resolve_data_format(data_format)

    def _compute(self, y_true: Any, y_pred: Any, sample_weight: Any | None) -> Any:
        targets, probs, weights = volume_tensors(
            y_true, y_pred, self.data_format, self.from_logits, sample_weight
        )
        axes = tuple(range(len(probs.shape) - 1))
        intersection = ops.sum(weights * probs * targets, axis=axes)
        squares = ops.sum(weights * (probs * probs + targets * targets), axis=axes)
        scores = self._safe_ratio(
            2.0 * intersection + self.epsilon, squares + self.epsilon
        )
        return 1.0 - ops.mean(scores)
