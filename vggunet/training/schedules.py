"""Learning-rate schedules of a phase: the half-cosine decay of `lr_schedule="cosine"`, and a
polynomial decay (`poly_lr`, `PolyDecayEpochs`), each after an optional linear warm-up
(`PhaseSettings.warmup_epochs`), set per epoch or, with `PhaseSettings.lr_per_step`, before
every batch; `phase_schedule` picks the callback of a phase's settings."""

from __future__ import annotations

import math

import keras

from vggunet.training.settings import LR_SCHEDULES, PhaseSettings

__all__ = ["CosineDecayEpochs", "LR_SCHEDULES", "PolyDecayEpochs", "cosine_lr", "current_lr",
           "phase_schedule", "poly_lr", "warmup_lr"]

WARMUP_START = 0.1
"""The first rate of a warm-up, as a fraction of the phase's rate."""


def warmup_lr(step: float, warmup: float, base_lr: float,
              warmup_start: float = WARMUP_START) -> float:
    """The rate at `step < warmup` of a linear warm-up from `warmup_start * base_lr` to `base_lr`.

    Args:
        step: the current step (0-based).
        warmup: length of the warm-up, in steps (> 0).
        base_lr: the rate reached at `step = warmup`.
        warmup_start: the first rate, as a fraction of `base_lr`.

    Returns:
        The learning rate.

    Example:
        >>> [round(warmup_lr(s, 4, 1.0), 3) for s in range(4)]
        [0.1, 0.325, 0.55, 0.775]
    """
    return float(base_lr) * (warmup_start + (1.0 - warmup_start) * step / warmup)


def cosine_lr(epoch: int, start: int, end: int, base_lr: float, warmup: int = 0,
              warmup_start: float = WARMUP_START) -> float:
    """The learning rate of global epoch `epoch` under a half-cosine decay over [start, end).

    The rate falls from `base_lr` towards 0, evaluated at the middle of each epoch (so the
    first epoch trains just below `base_lr` and the last one just above 0, never at 0); the
    mean rate over the span is `base_lr / 2`. Epochs outside the span get `base_lr`. With a
    warm-up, its first `warmup` epochs rise linearly (`warmup_lr`) and the cosine spans
    [start + warmup, end).

    Args:
        epoch: global epoch index (0-based).
        start: first epoch of the schedule.
        end: one past its last epoch.
        base_lr: the rate the decay starts from.
        warmup: epochs of linear warm-up at the start (0: none).
        warmup_start: the warm-up's first rate, as a fraction of `base_lr`.

    Returns:
        The learning rate.

    Example:
        >>> [round(cosine_lr(e, 0, 4, 1.0), 3) for e in range(4)]
        [0.962, 0.691, 0.309, 0.038]
        >>> [round(cosine_lr(e, 0, 4, 1.0, warmup=2), 3) for e in range(4)]
        [0.1, 0.55, 0.854, 0.146]
    """
    if start <= epoch < start + warmup:
        return warmup_lr(epoch - start, warmup, base_lr, warmup_start)
    start += warmup
    if end <= start or not start <= epoch < end:
        return float(base_lr)
    return float(base_lr) * 0.5 * (1.0 + math.cos(math.pi * (epoch - start + 0.5) / (end - start)))


def poly_lr(step: float, total: float, base_lr: float, power: float = 0.9, warmup: float = 0,
            end_lr: float = 0.0, warmup_start: float = WARMUP_START) -> float:
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
        return warmup_lr(step, warmup, base_lr, warmup_start)
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
    """Sets the optimizer's learning rate to `cosine_lr` at each epoch's start or each batch's.

    Epochs are global, so a resumed run continues the curve where it stopped. The rate the last
    batch trained at is added to the epoch logs as `learning_rate` (so `log.csv` records it).

    With `per_step`, the curve runs over the phase's batches (`epochs * steps`, the warm-up over
    `warmup * steps`; each batch at the middle of its step, as each epoch is otherwise) and the
    rate is set before every batch. `steps` is what Keras's `fit` knows per epoch; where it does
    not know it (a dataset of unknown length and no `steps_per_epoch`), the batches seen in the
    first epoch count, and that epoch keeps the per-epoch rate.

    Args:
        base_lr: the rate the decay starts from.
        start: first epoch of the schedule.
        end: one past its last epoch.
        warmup: epochs of linear warm-up at the start (see `cosine_lr`).
        per_step: set the rate before every batch instead of every epoch.
    """

    def __init__(self, base_lr: float, start: int, end: int, warmup: int = 0,
                 per_step: bool = False) -> None:
        super().__init__()
        self.base_lr, self.start, self.end = float(base_lr), int(start), int(end)
        self.warmup, self.per_step = int(warmup), bool(per_step)
        self._epoch, self._steps, self._seen = self.start, None, 0

    def rate_at(self, step: int, steps_per_epoch: int) -> float:
        """The rate of batch `step` of the phase (0-based, counted from `start`'s first batch).

        Args:
            step: batches since the phase's first one (`(epoch - start) * steps_per_epoch +
                batch`).
            steps_per_epoch: batches per epoch (1: the per-epoch curve).

        Returns:
            The learning rate.
        """
        return cosine_lr(step, 0, (self.end - self.start) * steps_per_epoch, self.base_lr,
                         self.warmup * steps_per_epoch)

    def rate(self, epoch: int) -> float:
        """The rate of global epoch `epoch` on the per-epoch curve.

        Args:
            epoch: global epoch index (0-based).

        Returns:
            The learning rate.
        """
        return self.rate_at(epoch - self.start, 1)

    def _steps_per_epoch(self) -> int | None:
        steps = (self.params or {}).get("steps")
        return int(steps) if steps else self._steps

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._seen = int(epoch), 0
        self.model.optimizer.learning_rate = self.rate(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        steps = self._steps_per_epoch() if self.per_step else None
        if steps:
            step = (self._epoch - self.start) * steps + min(int(batch), steps - 1)
            self.model.optimizer.learning_rate = self.rate_at(step, steps)

    def on_train_batch_end(self, batch, logs=None):
        # Counted at the end: on data of unknown length Keras begins one batch that never comes.
        self._seen = max(self._seen, int(batch) + 1)

    def on_epoch_end(self, epoch, logs=None):
        if self._steps is None and self._seen:
            self._steps = self._seen
        if logs is not None:
            logs["learning_rate"] = current_lr(self.model)


class PolyDecayEpochs(CosineDecayEpochs):
    """Sets the optimizer's learning rate to `poly_lr` over [start, end), per epoch or batch.

    Epochs are global, as for `CosineDecayEpochs` (a resumed run continues the curve); the
    rate of global epoch `e` is `poly_lr(e - start, end - start, ...)`, so the last epoch trains
    just above `end_lr`. With `per_step` the curve runs over the phase's batches instead (batch
    `s` of the phase at `poly_lr(s, epochs * steps, ...)`, the warm-up over `warmup * steps`;
    `steps` as for `CosineDecayEpochs`). The rate the last batch trained at is added to the
    epoch logs as `learning_rate`.

    Args:
        base_lr: the peak rate.
        start: first epoch of the schedule.
        end: one past its last epoch.
        power, warmup, end_lr, warmup_start: as for `poly_lr` (`warmup` in epochs).
        per_step: set the rate before every batch instead of every epoch.
    """

    def __init__(self, base_lr: float, start: int, end: int, power: float = 0.9,
                 warmup: int = 0, end_lr: float = 0.0,
                 warmup_start: float = WARMUP_START, per_step: bool = False) -> None:
        super().__init__(base_lr, start, end, warmup, per_step)
        self.power = float(power)
        self.end_lr, self.warmup_start = float(end_lr), float(warmup_start)

    def rate_at(self, step: int, steps_per_epoch: int) -> float:
        """The rate of batch `step` of the phase (see `CosineDecayEpochs.rate_at`).

        Args:
            step: batches since the phase's first one.
            steps_per_epoch: batches per epoch (1: the per-epoch curve).

        Returns:
            The learning rate.
        """
        return poly_lr(step, (self.end - self.start) * steps_per_epoch, self.base_lr,
                       self.power, self.warmup * steps_per_epoch, self.end_lr,
                       self.warmup_start)


def phase_schedule(settings: PhaseSettings, start: int, end: int) -> CosineDecayEpochs | None:
    """The callback that sets the rate of a phase over its global epochs [start, end).

    "cosine" and "poly" (power 0.9, to 0) decay after `settings.warmup_epochs` of linear
    warm-up; "constant" with a warm-up rises the same way, then holds the rate (a poly decay
    of power 0); "constant" without one needs no callback. `settings.lr_per_step` sets the
    rate before every batch instead of every epoch.

    Args:
        settings: the phase's settings.
        start: the phase's first global epoch.
        end: one past its last.

    Returns:
        The callback, or None.

    Example:
        >>> settings = PhaseSettings(learning_rate=1.0, lr_schedule="constant", warmup_epochs=2)
        >>> [round(phase_schedule(settings, 3, 7).rate(e), 3) for e in range(3, 7)]
        [0.1, 0.55, 1.0, 1.0]
    """
    lr, warmup, per_step = settings.learning_rate, settings.warmup_epochs, settings.lr_per_step
    if settings.lr_schedule == "cosine":
        return CosineDecayEpochs(lr, start, end, warmup, per_step=per_step)
    if settings.lr_schedule == "poly":
        return PolyDecayEpochs(lr, start, end, warmup=warmup, per_step=per_step)
    if not warmup:
        return None
    return PolyDecayEpochs(lr, start, end, power=0.0, warmup=warmup, per_step=per_step)
