"""Learning-rate schedules over epochs: the half-cosine decay of `lr_schedule="cosine"`, and a
polynomial decay with linear warm-up (`poly_lr`, `PolyDecayEpochs`)."""

from __future__ import annotations

import math

import keras

from vggunet.training.settings import LR_SCHEDULES

__all__ = ["CosineDecayEpochs", "LR_SCHEDULES", "PolyDecayEpochs", "cosine_lr", "current_lr",
           "poly_lr"]


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


def poly_lr(step: float, total: float, base_lr: float, power: float = 0.9, warmup: float = 0,
            end_lr: float = 0.0, warmup_start: float = 0.1) -> float:
    """The learning rate at `step` of a polynomial ("poly") decay with a linear warm-up.

    During the warm-up (`step < warmup`) the rate rises linearly from `warmup_start * base_lr`
    to `base_lr`; from there it decays as `end_lr + (base_lr - end_lr) * (1 - t) ** power`,
    `t = (step - warmup) / (total - warmup)`, reaching `end_lr` at `step = total` and staying
    there. Steps may be batches or epochs, as long as all arguments use the same unit.

    Args:
        step: the current step (0-based).
        total: the step at which the decay ends (> `warmup`).
        base_lr: the peak rate, reached at the end of the warm-up.
        power: the exponent of the decay (0.9: the usual choice in semantic segmentation).
        warmup: length of the warm-up, in steps (0: none).
        end_lr: the final rate.
        warmup_start: the first rate, as a fraction of `base_lr`.

    Returns:
        The learning rate.

    Example:
        >>> [round(poly_lr(s, 10, 1.0, power=1.0, warmup=2), 3) for s in (0, 1, 2, 6, 10, 11)]
        [0.1, 0.55, 1.0, 0.5, 0.0, 0.0]
    """
    base_lr, end_lr = float(base_lr), float(end_lr)
    if step < warmup:
        return base_lr * (warmup_start + (1.0 - warmup_start) * step / warmup)
    if total <= warmup:
        return base_lr
    progress = min(1.0, max(0.0, (step - warmup) / (total - warmup)))
    return end_lr + (base_lr - end_lr) * (1.0 - progress) ** power


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


class PolyDecayEpochs(CosineDecayEpochs):
    """Sets the optimizer's learning rate at each epoch's start to `poly_lr` over [start, end).

    Epochs are global, as for `CosineDecayEpochs` (a resumed run continues the curve); the
    rate of global epoch `e` is `poly_lr(e - start, end - start, ...)`, so the last epoch trains
    just above `end_lr`. The rate is added to the epoch logs as `learning_rate`.

    Args:
        base_lr: the peak rate.
        start: first epoch of the schedule.
        end: one past its last epoch.
        power, warmup, end_lr, warmup_start: as for `poly_lr` (`warmup` in epochs).
    """

    def __init__(self, base_lr: float, start: int, end: int, power: float = 0.9,
                 warmup: int = 0, end_lr: float = 0.0, warmup_start: float = 0.1) -> None:
        super().__init__(base_lr, start, end)
        self.power, self.warmup = float(power), int(warmup)
        self.end_lr, self.warmup_start = float(end_lr), float(warmup_start)

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate = poly_lr(
            epoch - self.start, self.end - self.start, self.base_lr, self.power, self.warmup,
            self.end_lr, self.warmup_start)
