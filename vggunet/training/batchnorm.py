"""BatchNorm statistics that match the current weights: `recalibrate_batchnorm`."""

from __future__ import annotations

from typing import Any

import keras

from vggunet.checks import check_int
from vggunet.errors import ArgumentError
from vggunet.transfer.inspect import all_layers

__all__ = ["recalibrate_batchnorm"]


def recalibrate_batchnorm(model: keras.Model, data: Any, steps: int | None = 8) -> int:
    """Re-estimates the moving statistics of the model's trainable BatchNorm layers.

    Moving averages lag: with Keras's default momentum (0.99) they need hundreds of steps to
    forget their start values, and unfrozen layers keep shifting the features they track; after
    a short run the trained weights can be fine while the inference statistics are stale (on
    ISBI, a VGG16 U-Net at 0.597 held-out pixel error came to 0.102 with no weight changed;
    BENCHMARKS.md). vggunet's decoder BatchNorms use momentum 0.9, which mostly avoids that;
    this gives the exact statistics of the current weights.

    It runs `steps` batches in training mode with a cumulative average (momentum k/(k+1) at
    batch k), so the moving mean and variance become the plain mean of the batch statistics.
    Weights are untouched; frozen BatchNorm layers (inference mode) are left alone.

    Args:
        model: a Keras model; its trainable `BatchNormalization` layers are updated in place.
        data: an iterable of `(images, ...)` batches or of image batches (e.g. the training
            `tf.data.Dataset`, without augmentation for the cleanest statistics).
        steps: batches to use (None: all of `data`).

    Returns:
        The number of batches used.

    Raises:
        ArgumentError: `steps` < 1, or `data` yields no batch.

    Example:
        >>> import numpy as np
        >>> from vggunet import build_vgg_unet
        >>> m = build_vgg_unet("vgg16", input_shape=(32, 32, 3), weights=None,
        ...                    decoder_filters=(8,) * 5, bottleneck_filters=8,
        ...                    decoder_batchnorm=True, precision="float32")
        >>> recalibrate_batchnorm(m, [np.ones((2, 32, 32, 3), "float32")] * 3, steps=2)
        2
    """
    steps = check_int(steps, "steps", allow_none=True)
    norms = [layer for layer in all_layers(model)
             if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    momenta = [layer.momentum for layer in norms]
    used = 0
    try:
        for batch in data:
            if steps is not None and used >= steps:
                break
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            for layer in norms:
                layer.momentum = used / (used + 1.0)
            model(images, training=True)
            used += 1
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    if used == 0:
        raise ArgumentError("recalibrate_batchnorm: `data` yielded no batch.")
    return used
