"""Inputs shared by the loss and metric tests (tests/test_losses.py, tests/test_metrics.py).

A 2x2 image, 2 classes. Labels and foreground probabilities:
  Y  = [[0, 1],      P1 = [[0.2, 0.6],
        [1, 1]]            [0.9, 0.3]]
so the probability of the true class per pixel is 0.8, 0.6, 0.9, 0.3 and the argmax
prediction is [[0, 1], [1, 0]].
"""

from __future__ import annotations

import numpy as np

Y = np.array([[[0, 1], [1, 1]]], dtype="int32")
P1 = np.array([[[0.2, 0.6], [0.9, 0.3]]], dtype="float32")
PROBS = np.stack([1.0 - P1, P1], axis=-1)  # (1, 2, 2, 2)


def random_batch(seed: int, shape=(2, 5, 6), classes: int = 3):
    """Random integer labels `shape` and float32 logits `(*shape, classes)`."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=shape).astype("int32")
    logits = rng.normal(size=(*shape, classes)).astype("float32")
    return labels, logits
