"""Class scores to class labels: the one rule every prediction path of vggunet uses.

K >= 2 channels (softmax probabilities or logits) give the argmax; a single channel is a
sigmoid output, thresholded at `threshold` on probabilities and at 0 on logits (the argmax of
one channel would always be 0). `predict_mask`, `predict_folder`, the CLI's `predict`,
`evaluate`, the lab's `create_mask`, the demo and the plots all reduce scores through
`scores_to_labels`. Numpy only: importing it loads no Keras.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vggunet.checks import check_bool, check_number
from vggunet.errors import PredictionError

__all__ = ["create_mask", "scores_to_labels"]


def scores_to_labels(scores: Any, *, from_logits: bool = False, threshold: float = 0.5,
                     dtype: Any = np.int32) -> np.ndarray:
    """Class labels from per-pixel class scores: argmax, or a threshold for one channel.

    Args:
        scores: (..., K) scores with the class axis last, e.g. (H, W, K) or (B, H, W, K)
            probabilities or logits (a numpy array or anything `np.asarray` reads).
        from_logits: the scores are logits; only matters for K == 1, where the cut is 0
            (sigmoid(0) = 0.5) instead of `threshold`.
        threshold: probability cut for a single sigmoid channel, in [0, 1].
        dtype: integer dtype of the labels.

    Returns:
        The labels, shape `scores.shape[:-1]`.

    Example:
        >>> import numpy as np
        >>> scores_to_labels(np.array([[[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]]]))
        array([[1, 0]], dtype=int32)
        >>> scores_to_labels(np.array([[0.2], [0.9]]))                   # one sigmoid channel
        array([0, 1], dtype=int32)
        >>> scores_to_labels(np.array([[-0.5], [0.1]]), from_logits=True)  # logits: cut at 0
        array([0, 1], dtype=int32)
    """
    check_bool(from_logits, "from_logits", error=PredictionError)
    check_number(threshold, "threshold", low=0, high=1, error=PredictionError)
    array = np.asarray(scores)
    if array.ndim < 1 or array.shape[-1] == 0:
        raise PredictionError(
            f"scores must have a class axis last (..., K) with K >= 1, got shape {array.shape}."
        )
    if array.shape[-1] == 1:
        cut = 0.0 if from_logits else threshold
        return (array[..., 0] > cut).astype(dtype)
    return np.argmax(array, axis=-1).astype(dtype)


def create_mask(pred_mask: Any) -> np.ndarray:
    """The lab's `create_mask` in numpy: the first image's class indices, with a channel axis.

    The lab code is `tf.argmax(pred_mask, axis=-1)[..., tf.newaxis][0]`. For a batch
    (B, H, W, K) this returns the (H, W, 1) mask of the *first* image, exactly as the lab does.
    A single (H, W, K) prediction is treated as a batch of one, so it also gives (H, W, 1) (the
    lab code would index the first row instead). With K = 1 (a sigmoid output) the mask is
    `probability > 0.5` rather than the argmax (which would always be 0).

    Args:
        pred_mask: (B, H, W, K) or (H, W, K) scores, e.g. `model.predict(images)`.

    Returns:
        An int64 array of shape (H, W, 1) (tf.argmax's dtype).

    Example:
        >>> import numpy as np
        >>> scores = np.array([[[[0.9, 0.1], [0.2, 0.8]],
        ...                     [[0.3, 0.7], [0.6, 0.4]]]])     # (1, 2, 2, K=2)
        >>> create_mask(scores)[..., 0]
        array([[0, 1],
               [1, 0]])
    """
    pred = np.asarray(pred_mask)
    if pred.ndim == 3:
        pred = pred[np.newaxis]
    if pred.ndim != 4 or pred.shape[0] == 0 or pred.shape[-1] == 0:
        raise PredictionError(
            f"create_mask expects (B, H, W, K) or (H, W, K) scores, got shape {pred.shape}."
        )
    return scores_to_labels(pred[0], dtype=np.int64)[..., np.newaxis]
