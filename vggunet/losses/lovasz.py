"""The Lovász-softmax loss (Berman, Triki & Blaschko, CVPR 2018): a smooth surrogate of 1 - IoU.

For each class ``c`` the pixel errors ``e_i = |fg_i - p_i(c)|`` are sorted in decreasing order
and dotted with the gradient of the Lovász extension of the Jaccard loss, computed from the
ground truth in that order (``lovasz_grad`` of the reference implementation, also used by
segmentation_models_pytorch)::

    g = [J_1, J_2 - J_1, ..., J_P - J_{P-1}],  J_k = 1 - (G - cumsum(fg)_k) / (G + cumsum(1 - fg)_k)

with ``G`` the number of pixels of class ``c``. The loss averages this over the classes present
in the ground truth (the reference's ``classes="present"``). Conventions for labels,
predictions and ``ignore_index``: :mod:`vggunet.losses.base`.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import ops

from vggunet._serializables import PACKAGE
from vggunet.checks import check_bool
from vggunet.losses.base import SegmentationLoss, pixel_weights
from vggunet.losses.overlap import _OverlapLoss

__all__ = ["LovaszSoftmaxLoss"]


def _lovasz_terms(errors: Any, fg: Any) -> Any:
    """Per-group, per-class Lovász extension: ``(G, C)`` from ``(G, C, P)`` errors and truth."""
    order = ops.argsort(-errors, axis=-1)  # decreasing errors; no gradient through the order
    errors_sorted = ops.take_along_axis(errors, order, axis=-1)
    fg_sorted = ops.take_along_axis(fg, order, axis=-1)
    total = ops.sum(fg_sorted, axis=-1, keepdims=True)
    intersection = total - ops.cumsum(fg_sorted, axis=-1)
    union = total + ops.cumsum(1.0 - fg_sorted, axis=-1)  # >= 1 at every position
    jaccard = 1.0 - intersection / union
    grad = jaccard - ops.pad(jaccard[..., :-1], [(0, 0), (0, 0), (1, 0)])
    return ops.sum(errors_sorted * grad, axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class LovaszSoftmaxLoss(SegmentationLoss):
    """Lovász-softmax loss: a convex surrogate of the mean over classes of ``1 - IoU``.

    Computed per image and averaged over the batch (``per_image=True``), or once over all
    pixels of the batch (``per_image=False``, the default of the reference implementation).
    Only classes present in the (non-ignored) ground truth of an image, or of the batch, are
    averaged; with none present the term is 0. Ignored pixels take no part: they have error 0
    and no foreground, and sort after every pixel that has an error. ``class_weights`` weight
    the class average (``sum(cw_c L_c) / sum(cw_c)`` over present classes). ``sample_weight``
    scales each pixel's error (a weight of 0 removes the pixel's error but, unlike
    ``ignore_index``, not its label from the IoU). The result is a scalar; ``reduction`` has
    no effect.

    Args:
        per_image: Compute the loss per image and average (``True``) or over the whole batch.
        from_logits: ``y_pred`` holds logits (softmax, or sigmoid for one channel).
        ignore_index: Label value excluded from the loss, or ``None``.
        class_weights: Optional per-class weights for the class average.
        name: Loss name (default ``"lovasz_softmax_loss"``).
        reduction: Accepted for Keras compatibility; the loss is a scalar.
        dtype: Keras dtype policy (computation is float32 regardless).

    Example:
        >>> import numpy as np
        >>> y_true = np.array([[[0, 1]]])
        >>> y_pred = np.array([[[[0.75, 0.25], [0.25, 0.75]]]], "float32")
        >>> float(LovaszSoftmaxLoss()(y_true, y_pred))  # each class: error .25 on 1 of 2 pixels
        0.25
    """

    default_name = "lovasz_softmax_loss"
    config_keys = (*SegmentationLoss.config_keys, "per_image")

    # The arguments are spelt out (not **kwargs): get_loss routes keywords by signature.
    def __init__(self, per_image: bool = False, from_logits: bool = False,
                 ignore_index: int | None = None, class_weights: Sequence[float] | None = None,
                 name: str | None = None, reduction: str | None = "sum_over_batch_size",
                 dtype: Any = None) -> None:
        super().__init__(from_logits, ignore_index, class_weights, name, reduction, dtype)
        self.per_image = check_bool(per_image, "per_image")

    def _compute(self, y_true: Any, y_pred: Any, sample_weight: Any | None) -> Any:
        onehot, probs, _, valid = self._prepared(y_true, y_pred)
        classes = probs.shape[-1]
        weights = ops.expand_dims(pixel_weights(valid, sample_weight), axis=-1)
        errors = ops.abs(onehot - probs) * weights
        fg = onehot * ops.expand_dims(valid, axis=-1)
        groups = ops.shape(probs)[0] if self.per_image else 1
        # (G, C, P): one row of pixels per group (image or batch) and class.
        errors = ops.transpose(ops.reshape(errors, (groups, -1, classes)), (0, 2, 1))
        fg = ops.transpose(ops.reshape(fg, (groups, -1, classes)), (0, 2, 1))
        terms = _lovasz_terms(errors, fg)
        present = ops.cast(ops.sum(fg, axis=-1) > 0, "float32")
        if self.class_weights is not None:
            present = present * ops.convert_to_tensor(self.class_weights, dtype="float32")
        per_group = ops.divide_no_nan(ops.sum(terms * present, axis=-1),
                                      ops.sum(present, axis=-1))
        return ops.mean(per_group)

    # A batch-level scalar like Dice/Jaccard: the same call (no sample weights) and reduction
    # (divided per replica) around `_compute`.
    call = _OverlapLoss.call
    _reduced = _OverlapLoss._reduced
