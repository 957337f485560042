"""Learning-rate schedules over epochs: the half-cosine decay of `lr_schedule="cosine"`."""

from __future__ import annotations

import math

import keras

from vggunet.training.settings import LR_SCHEDULES

__all__ = ["CosineDecayEpochs", "LR_SCHEDULES", "cosine_lr", "current_lr"]


def cosine_lr(epoch: int, start: int, end: int, base_lr: float) -> float:
    """The learning rate of global epoch `epoch` under a half-cosine decay over [start, end).

    The rate falls from `base_lr` towards 0, evaluated at the middle of each epoch (so the
    first epoch trains just below `base_lr` and the last one just above 0, never at 0); the
    mean rate over the span is `base_lr / 2`. Epochs outside the span get `base_lr`.

    Args:
        epoch: global epoch index (0-based).
        start: first epoch of the decay.
        end: one past its last epoch.
        base_lr: the rate the decay starts from.

    Returns:
        The learning rate.

    Example:
        >>> [round(cosine_lr(e, 0, 4, 1.0), 3) for e in range(4)]
        [0.962, 0.691, 0.309, 0.038]
    """
    if end <= start or not start <= epoch < end:
        return float(base_lr)
    return float(base_lr) * 0.5 * (1.0 + math.cos(math.pi * (epoch - start + 0.5) / (end - start)))


def current_lr(model: keras.Model) -> float:
    """The learning rate the model's optimizer uses now.

    Args:
        model: a compiled model.

    Returns:
        The rate as a float.
    """
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class CosineDecayEpochs(keras.callbacks.Callback):
    """Sets the optimizer's learning rate at each epoch's start to `cosine_lr`.

    Epochs are global, so a resumed run continues the curve where it stopped. The rate is added
    to the epoch logs as `learning_rate` (so `log.csv` records it).

    Args:
        base_lr: the rate the decay starts from.
        start: first epoch of the decay.
        end: one past its last epoch.
    """

    def __init__(self, base_lr: float, start: int, end: int) -> None:
        super().__init__()
        self.base_lr, self.start, self.end = float(base_lr), int(start), int(end)

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate = cosine_lr(epoch, self.start, self.end, self.base_lr)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = current_lr(self.model)
