"""The callbacks of a run (NaN guard, BatchNorm re-estimation, phase tag, atomic checkpoints)
and what they monitor (`resolve_monitor`, `resolve_mode`).

Their order in a phase's callback list matters (the run engine builds it): re-estimation and
the NaN guard run before the checkpoint callback, so a checkpoint carries fresh statistics and
never NaN weights; the phase tag runs before `CSVLogger`, so each `log.csv` row names its phase.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import keras
import numpy as np

from vggunet.checks import check_int, did_you_mean
from vggunet.console import Say, resolve_say
from vggunet.errors import ArgumentError, CheckpointError
from vggunet.fileio import atomic_copy, atomic_save_model
from vggunet.training.batchnorm import recalibrate_batchnorm
from vggunet.training.schedules import current_lr

__all__ = [
    "AtomicCheckpoint",
    "BatchNormRecalibration",
    "MonitorCheck",
    "NaNGuard",
    "PhaseTag",
    "is_finite",
    "split_class_vectors",
    "resolve_mode",
    "resolve_monitor",
    "tensorboard_callback",
]


def is_finite(value: Any) -> bool:
    """Whether a logged value is a finite number.

    Args:
        value: a number, tensor or None.

    Returns:
        False for None, NaN, inf and anything that is not a number.

    Example:
        >>> is_finite(0.5), is_finite(float("nan")), is_finite(None)
        (True, False, False)
    """
    try:
        return math.isfinite(float(np.asarray(value)))
    except (TypeError, ValueError):
        return False


class NaNGuard(keras.callbacks.Callback):
    """Stops training as soon as the loss is NaN/inf (batch or epoch), with a one-line message.

    Must come before `AtomicCheckpoint` in the callback list: the checkpoint callback skips an
    epoch the guard has flagged, so NaN weights are never written. The message says why the run
    stopped, so it is shown even when progress lines are silenced.

    Args:
        say: where the message goes (default: printed).
    """

    def __init__(self, say: Say | None = None) -> None:
        super().__init__()
        self.triggered = False
        self.where = ""
        self._epoch = 0
        self._say = resolve_say(True, say)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _trip(self, where: str, value: Any) -> None:
        if not self.triggered:
            self.triggered = True
            self.where = where
            self._say(f"\nNaN guard: loss is {float(np.asarray(value))} at {where}; stopping "
                      f"training (checkpoints keep the last finite weights).")
        self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        value = (logs or {}).get("loss")
        if value is not None and not is_finite(value):
            self._trip(f"epoch {self._epoch + 1}, step {batch + 1}", value)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for key in ("loss", "val_loss"):
            if key in logs and not is_finite(logs[key]):
                self._trip(f"end of epoch {epoch + 1} ({key})", logs[key])
                return


class BatchNormRecalibration(keras.callbacks.Callback):
    """Re-estimates the trainable BatchNorm statistics before each validation and checkpoint.

    Validation, `best.keras`/`last.keras` and the returned model all use the moving statistics;
    this makes them the plain mean over `steps` fresh training batches (see
    `recalibrate_batchnorm`) instead of an exponential average that lags the weights. Moving
    statistics are not used by training-mode steps, so the training trajectory is unchanged.
    Must come before `AtomicCheckpoint` in the callback list.

    Args:
        data: training batches (re-iterated each epoch; e.g. the training `tf.data.Dataset`).
        steps: batches per re-estimation.
    """

    def __init__(self, data: Any, steps: int = 8) -> None:
        super().__init__()
        self.data = data
        self.steps = check_int(steps, "recalibrate_bn")
        self._epoch: int | None = None
        self._done: int | None = None  # the epoch whose statistics are already fresh

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _recalibrate(self) -> None:
        if self._epoch is None or self._done == self._epoch:
            return
        recalibrate_batchnorm(self.model, self.data, self.steps)
        self._done = self._epoch

    def on_test_begin(self, logs=None):
        # fit() validates before on_epoch_end: re-estimate first so val_* sees fresh statistics.
        self._recalibrate()

    def on_epoch_end(self, epoch, logs=None):
        self._recalibrate()


def split_class_vectors(logs: dict[str, Any]) -> None:
    """Replaces each per-class vector in `logs` by one scalar entry per class, in place.

    Per-class metrics (`"iou"`, `"class_dice"`, `"sensitivity"`, ...) log a vector;
    TensorBoard takes scalars only and a CSV cell would hold the vector's repr, so
    `per_class_dice = [a, b]` becomes `per_class_dice_0 = a`, `per_class_dice_1 = b`.

    Args:
        logs: epoch logs (changed in place).

    Example:
        >>> logs = {"loss": 0.5, "val_per_class_dice": np.array([0.25, 0.75])}
        >>> split_class_vectors(logs); logs
        {'loss': 0.5, 'val_per_class_dice_0': 0.25, 'val_per_class_dice_1': 0.75}
    """
    for name in list(logs):
        value = np.asarray(logs[name]) if not isinstance(logs[name], str) else None
        if value is not None and value.ndim == 1 and value.dtype.kind == "f":
            del logs[name]
            logs.update({f"{name}_{i}": float(v) for i, v in enumerate(value)})


class PhaseTag(keras.callbacks.Callback):
    """Adds `phase` and `learning_rate` entries to the epoch logs (before CSVLogger writes them),
    so every row of `log.csv` says which phase and rate trained it, and splits per-class
    vectors into scalars (`split_class_vectors`) for `log.csv` and TensorBoard.

    Args:
        phase: the phase number.
    """

    def __init__(self, phase: int) -> None:
        super().__init__()
        self.phase = phase

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            split_class_vectors(logs)
            logs["phase"] = self.phase
            logs["learning_rate"] = current_lr(self.model)


def resolve_monitor(monitor: str, has_val: bool, metrics: Sequence[Any],
                    say: Say = print) -> str:
    """The quantity a run can monitor: "val_X" without validation data becomes "X", and
    "mean_iou" without a miou metric becomes the loss (each said in one line).

    Args:
        monitor: the requested quantity.
        has_val: whether the run has validation data.
        metrics: the compile metrics (names or Metric objects).
        say: where the notes go.

    Returns:
        The quantity to monitor.
    """
    names = [m.lower() if isinstance(m, str) else getattr(m, "name", "") for m in metrics]
    has_miou = "miou" in names or "mean_iou" in names
    if monitor.startswith("val_") and not has_val:
        base = monitor[4:]
        if base == "mean_iou" and not has_miou:
            base = "loss"
        say(f"No validation data: monitoring '{base}' instead of '{monitor}'.")
        return base
    if monitor in ("val_mean_iou", "mean_iou") and not has_miou:
        fallback = "val_loss" if has_val else "loss"
        say(f"No 'miou' metric: monitoring '{fallback}' instead of '{monitor}'.")
        return fallback
    return monitor


def resolve_mode(mode: str, monitor: str) -> str:
    """"min" or "max" for `monitor`: "auto" is "min" for losses and errors, else "max".

    Args:
        mode: "auto", "min" or "max".
        monitor: the monitored quantity.

    Returns:
        "min" or "max".

    Example:
        >>> resolve_mode("auto", "val_loss"), resolve_mode("auto", "mean_iou")
        ('min', 'max')
    """
    if mode in ("min", "max"):
        return mode
    return "min" if monitor.endswith("loss") or "error" in monitor else "max"


def _better(mode: str, current: float, best: float | None) -> bool:
    if best is None:
        return True
    return current < best if mode == "min" else current > best


class MonitorCheck(keras.callbacks.Callback):
    """Refuses, after the first training batch, a monitored quantity the run does not log.

    A misspelt monitor would otherwise train to the end with `best.keras` never improving and
    early stopping never firing. The batch logs hold the training quantities; "val_X" is
    checked through its "X" (validation only runs at the epoch's end).

    Args:
        monitor: the monitored quantity (as resolved by `resolve_monitor`).
    """

    def __init__(self, monitor: str) -> None:
        super().__init__()
        self.monitor, self.checked = monitor, False

    def on_train_batch_end(self, batch, logs=None):
        if self.checked or not logs:
            return
        self.checked = True
        prefix = "val_" if self.monitor.startswith("val_") else ""
        base = self.monitor[len(prefix):]
        if base not in logs:
            names = [prefix + key for key in logs if not key.startswith("val_")]
            raise ArgumentError(f"monitor {self.monitor!r} is not a quantity this run logs; "
                                f"it logs {', '.join(sorted(names))}."
                                f"{did_you_mean(self.monitor, names)}")


class AtomicCheckpoint(keras.callbacks.Callback):
    """Writes `last.keras` every epoch and `best.keras` on improvement, atomically, then state.

    A write that fails raises `CheckpointError` naming the file; the previous file is kept.

    Args:
        ckpt_dir: folder for `last.keras` and `best.keras`.
        monitor: logged quantity deciding `best.keras`.
        mode: "min" or "max".
        best: best value so far (from an earlier session).
        guard: a `NaNGuard`; epochs it flagged are not saved.
        on_saved: `callback(epoch_index, improved, current_value)` called after the model files
            are written (used to write `state.json` last).
        say: where the one-time note about a missing monitor goes (default: printed).
    """

    def __init__(self, ckpt_dir: Path, monitor: str, mode: str, best: float | None = None,
                 guard: NaNGuard | None = None,
                 on_saved: Callable[[int, bool, float | None], None] | None = None,
                 say: Say | None = None) -> None:
        super().__init__()
        self.ckpt_dir = Path(ckpt_dir)
        self.last_path = self.ckpt_dir / "last.keras"
        self.best_path = self.ckpt_dir / "best.keras"
        self.monitor = monitor
        self.mode = mode
        self.best = best
        self.best_epoch: int | None = None
        self.guard = guard
        self.on_saved = on_saved
        self._say = resolve_say(True, say)
        self._warned = False

    def _current(self, logs: dict) -> tuple[bool, float | None]:
        """(improved, value): a missing or non-finite monitor lets best follow last."""
        current = logs.get(self.monitor)
        if current is None or not is_finite(current):
            if not self._warned:
                self._say(f"Checkpoint: '{self.monitor}' not in logs ({sorted(logs)}); "
                          f"best.keras follows last.keras.")
                self._warned = True
            return True, None
        if _better(self.mode, float(current), self.best):
            self.best = float(current)
            return True, self.best
        return False, float(current)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if (self.guard is not None and self.guard.triggered) or not is_finite(logs.get("loss")):
            return
        atomic_save_model(self.model, self.last_path, error=CheckpointError, what="checkpoint ")
        improved, current = self._current(logs)
        if improved:
            self.best_epoch = epoch
            atomic_copy(self.last_path, self.best_path, error=CheckpointError,
                        what="checkpoint ")
        if self.on_saved is not None:
            self.on_saved(epoch, improved, current)


_TENSORBOARD_NOTED: list[bool] = []


def tensorboard_callback(folder: Path, validation: bool, say: Say) -> Any:
    """Keras's `TensorBoard` callback writing to `folder`, or None without TensorBoard.

    Args:
        folder: the log folder (`train/` and `validation/` below it).
        validation: the run validates (so `validation/` is written).
        say: where the one-time note about a missing TensorBoard goes.

    Returns:
        The callback, or None when the `tensorboard` package is not installed.
    """
    if importlib.util.find_spec("tensorboard") is None:
        if not _TENSORBOARD_NOTED:
            say("TensorBoard is not installed; skipping TensorBoard logs "
                "(pip install tensorboard).")
            _TENSORBOARD_NOTED.append(True)
        return None
    # TensorFlow would create the writers' folders 0755 whatever the umask: made here first.
    for sub in ("train", "validation") if validation else ("train",):
        (Path(folder) / sub).mkdir(parents=True, exist_ok=True)
    return _ScalarTensorBoard(log_dir=str(folder), write_graph=False, profile_batch=0)


def _scalars(logs: Any) -> Any:
    if not isinstance(logs, dict):
        return logs
    logs = dict(logs)
    split_class_vectors(logs)
    return logs


class _ScalarTensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard, with per-class vectors split into scalars wherever it writes logs
    (it asserts scalars, and also writes batch and evaluation logs that PhaseTag never sees)."""

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, _scalars(logs))

    def on_test_end(self, logs=None):
        super().on_test_end(_scalars(logs))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, _scalars(logs))
