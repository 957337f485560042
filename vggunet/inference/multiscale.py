"""Multi-scale and flip test-time augmentation, as segmentation benchmarks report scores.

`predict_multiscale` resizes a batch by each scale, predicts it (and its left-right mirror with
`flip=True`) through `predict_proba`, resizes the probabilities back to the input's size and
averages them. Only the horizontal mirror is used: photos are upright, and the 90° turns of
`predict_proba(tta=True)` show the model views it never saw in training.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vggunet.checks import check_number
from vggunet.errors import ArgumentError
from vggunet.inference.predict import predict_proba

__all__ = ["check_scales", "predict_multiscale"]


def check_scales(scales: Any, argument: str = "scales") -> tuple[float, ...]:
    """Checks a sequence of image scales (positive finite numbers, at least one).

    Args:
        scales: e.g. `(0.75, 1.0, 1.25)`.
        argument: the argument's name, for the message.

    Returns:
        The scales as a tuple of floats.

    Example:
        >>> check_scales([0.75, 1, 1.25])
        (0.75, 1.0, 1.25)
    """
    if isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence) or not scales:
        raise ArgumentError(f"{argument} must be a non-empty sequence of positive numbers, "
                            f"got {scales!r}.")
    return tuple(float(check_number(s, f"{argument}[{i}]", low=0, low_open=True, high=16))
                 for i, s in enumerate(scales))


def _resize(batch: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a (B, H, W, C) float32 batch to `size` (no copy when it has it)."""
    if tuple(batch.shape[1:3]) == tuple(size):
        return batch
    import keras

    resized = keras.ops.image.resize(batch, size, interpolation="bilinear",
                                     data_format="channels_last")
    return np.asarray(keras.ops.convert_to_numpy(resized), dtype=np.float32)


def _scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def predict_multiscale(model: Any, images: Any, *, scales: Sequence[float] = (1.0,),
                       flip: bool = False, from_logits: bool = False) -> np.ndarray:
    """Probabilities averaged over image scales (and the left-right mirror).

    For each scale s the (B, H, W, C) batch is resized (bilinear) to round(s·H) × round(s·W),
    run through `predict_proba` (which pads images below the model's minimum size and tiles
    fixed-size models), and the probabilities are resized back to H × W; the mean over scales
    (and, with `flip`, over each scale's mirrored copy) is returned. `scales=(1.0,)` without
    `flip` is one plain forward pass.

    Args:
        model: a Keras model mapping (B, H, W, C) pixels to (B, H, W, K).
        images: (B, H, W, C) raw pixels (numpy or a tensor).
        scales: image scales, e.g. `(0.75, 1.0, 1.25)`.
        flip: also predict each scaled batch mirrored left-right (mirrored back).
        from_logits: the model outputs logits (turned into probabilities before averaging).

    Returns:
        (B, H, W, K) float32 mean probabilities.

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((None, None, 3))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(2, 1, activation="softmax")(inputs))
        >>> predict_multiscale(model, np.zeros((1, 40, 36, 3)), scales=(0.5, 1.5), flip=True).shape
        (1, 40, 36, 2)
    """
    scales = check_scales(scales)
    batch = np.asarray(images, dtype=np.float32)
    if batch.ndim != 4:
        raise ArgumentError(f"images must be a (B, H, W, C) batch, got shape {batch.shape}.")
    height, width = batch.shape[1:3]
    total = None
    for scale in scales:
        scaled = _resize(batch, _scaled_size(height, width, scale))
        views = [(scaled, False)] + ([(scaled[:, :, ::-1], True)] if flip else [])
        for view, mirrored in views:
            proba = predict_proba(model, view, batch_size=len(view), from_logits=from_logits)
            if mirrored:
                proba = proba[:, :, ::-1]
            proba = _resize(np.ascontiguousarray(proba, dtype=np.float32), (height, width))
            total = proba.copy() if total is None else total + proba
    return total / np.float32(len(scales) * (2 if flip else 1))
