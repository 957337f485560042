"""Training loops: compile, train (one phase) and two-phase fine-tuning, with crash-safe resume.

Everything a run writes lives in `out_dir`:

* `checkpoints/last.keras` after every epoch and `checkpoints/best.keras` whenever the monitored
  value improves, each written atomically (temp file in the same folder, fsync, rename), so a
  crash never leaves a truncated model;
* `state.json` (atomic, written after `last.keras`): phase, completed epochs, best value, monitor
  and the phases' settings, which `resume=True` reads to continue where the run stopped;
* `log.csv`: one row per epoch (Keras `CSVLogger`) with a `phase` column;
* `tensorboard/` (optional).

Fine-tuning (`finetune`) follows Keras's transfer-learning recipe: phase 1 trains the decoder on a
frozen encoder, phase 2 unfreezes the top encoder blocks (BatchNorm stays frozen by default) and
trains everything with a small learning rate. Epoch numbers are global across phases.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import keras
import numpy as np

from vggunet.errors import ArgumentError, CheckpointError
from vggunet.training.distribute import (
    ModelOrFactory,
    build_in_scope,
    distribute_dataset,
    is_chief,
    resolve_strategy,
    strategy_scope,
    worker_dir,
)
from vggunet.evaluate import output_is_logits, write_json_atomic
from vggunet.transfer.freezing import FreezeReport, freeze, recompile, top_blocks
from vggunet.transfer.freezing import unfreeze as _unfreeze
from vggunet.transfer.inspect import all_layers
from vggunet.losses import get_loss
from vggunet.metrics import get_metrics
from vggunet.saving import load_model

__all__ = [
    "AtomicCheckpoint",
    "BatchNormRecalibration",
    "CosineDecayEpochs",
    "LR_SCHEDULES",
    "NaNGuard",
    "TrainResult",
    "compile_model",
    "cosine_lr",
    "finetune",
    "prepare_phase2",
    "recalibrate_batchnorm",
    "train",
]

STATE_VERSION = 1


@dataclasses.dataclass
class TrainResult:
    """What `train`/`finetune` did.

    Attributes:
        history: metric name -> per-epoch values over the whole run (all phases, earlier
            sessions included when resumed), read back from `log.csv`.
        phase_boundaries: global epoch index where each phase started.
        epochs_completed: epochs completed in total (global).
        best_checkpoint: path of `best.keras` (None if never written).
        last_checkpoint: path of `last.keras` (None if never written).
        best_value: best monitored value (None if none was seen).
        monitor: the monitored quantity.
        stopped_reason: "completed", "early_stopping" or "nan".
        wall_time_s: wall time of this call.
        model: the trained model (on resume, the model loaded from `last.keras`; its weights
            are also copied into the model that was passed in).
    """

    history: dict[str, list[float]]
    phase_boundaries: list[int]
    epochs_completed: int
    best_checkpoint: str | None
    last_checkpoint: str | None
    best_value: float | None
    monitor: str
    stopped_reason: str
    wall_time_s: float
    model: keras.Model | None = dataclasses.field(default=None, repr=False)


# --------------------------------------------------------------------------------------------
# Compilation
# --------------------------------------------------------------------------------------------


def _make_optimizer(optimizer: Any, learning_rate: float) -> keras.optimizers.Optimizer:
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    if not isinstance(optimizer, str):
        raise ArgumentError(f"optimizer must be a name or an Optimizer, got {optimizer!r}.")
    cls = type(keras.optimizers.get(optimizer))
    return cls(learning_rate=float(learning_rate))


def compile_model(
    model: keras.Model,
    num_classes: int | None = None,
    loss: str | keras.losses.Loss = "ce+dice",
    learning_rate: float = 1e-3,
    metrics: Sequence[Any] | str = ("miou", "dice", "accuracy"),
    ignore_index: int | None = None,
    class_weights: Sequence[float] | None = None,
    optimizer: str | keras.optimizers.Optimizer = "adam",
    jit_compile: bool | str = "auto",
    from_logits: bool | str = "auto",
) -> keras.Model:
    """Compiles a segmentation model with vggunet's losses and metrics.

    Args:
        model: a model with `(B, H, W, K)` output.
        num_classes: classes (default: the output channels; 1 channel = binary sigmoid).
        loss: a `get_loss` name ("ce", "dice", "jaccard", "focal", "ce+dice") or a Loss.
        learning_rate: learning rate for an optimizer given by name.
        metrics: `get_metrics` names and/or Metric instances.
        ignore_index: mask value not counted by loss and metrics.
        class_weights: per-class loss weights.
        optimizer: optimizer name ("adam", "sgd", ...) or instance.
        jit_compile: passed to `model.compile`.
        from_logits: "auto" reads the model's last layer (softmax/sigmoid = probabilities).

    Returns:
        The same model, compiled.
    """
    channels = int(model.output_shape[-1])
    if num_classes is None:
        num_classes = channels
    if from_logits == "auto":
        from_logits = output_is_logits(model)
    if isinstance(loss, str):
        loss_kwargs: dict[str, Any] = {"num_classes": num_classes, "from_logits": from_logits,
                                       "ignore_index": ignore_index}
        if class_weights is not None:
            loss_kwargs["class_weights"] = class_weights
        loss_obj = get_loss(loss, **loss_kwargs)
    else:
        loss_obj = loss
    if isinstance(metrics, str):
        metrics = [m for m in metrics.split(",") if m.strip()]
    metric_objs: list[Any] = []
    for m in metrics or ():
        if isinstance(m, str):
            metric_objs.extend(get_metrics([m], num_classes, ignore_index, from_logits))
        else:
            metric_objs.append(m)
    model.compile(
        optimizer=_make_optimizer(optimizer, learning_rate),
        loss=loss_obj,
        metrics=metric_objs,
        jit_compile=jit_compile,
    )
    return model


# --------------------------------------------------------------------------------------------
# Atomic files
# --------------------------------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_save_model(model: keras.Model, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        # A bare "[Errno 28] No space left on device" would not say which file failed, nor that
        # the previous checkpoint is still intact.
        raise CheckpointError(exc.errno, f"cannot write checkpoint '{path}': "
                                 f"{exc.strerror or exc}; the previous '{path.name}' (if any) "
                                 f"is kept") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


_TEMP_PATTERNS = (".last.*.keras", ".best.*.keras")


def _remove_stale_temps(ckpt_dir: Path) -> list[Path]:
    """Deletes half-written checkpoint temp files that a killed run left behind.

    Args:
        ckpt_dir: the run's checkpoint folder.

    Returns:
        The removed paths.
    """
    removed = []
    for pattern in _TEMP_PATTERNS:
        for stale in ckpt_dir.glob(pattern):
            try:
                stale.unlink()
                removed.append(stale)
            except OSError:
                pass  # a leftover temp file is litter, never a reason to stop training
    return removed


def _atomic_copy(src: Path, dst: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.stem}.", suffix=dst.suffix, dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, dst)
        _fsync_dir(dst.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(np.asarray(value)))
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------------------------
# Callbacks
# --------------------------------------------------------------------------------------------


class NaNGuard(keras.callbacks.Callback):
    """Stops training as soon as the loss is NaN/inf (batch or epoch), with a one-line message.

    Must come before `AtomicCheckpoint` in the callback list: the checkpoint callback skips an
    epoch the guard has flagged, so NaN weights are never written.
    """

    def __init__(self) -> None:
        super().__init__()
        self.triggered = False
        self.where = ""
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _trip(self, where: str, value: Any) -> None:
        if not self.triggered:
            self.triggered = True
            self.where = where
            print(f"\nNaN guard: loss is {float(np.asarray(value))} at {where}; stopping "
                  f"training (checkpoints keep the last finite weights).")
        self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        value = (logs or {}).get("loss")
        if value is not None and not _finite(value):
            self._trip(f"epoch {self._epoch + 1}, step {batch + 1}", value)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for key in ("loss", "val_loss"):
            if key in logs and not _finite(logs[key]):
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
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ArgumentError(f"recalibrate_bn must be a positive integer, got {steps!r}.")
        self.data = data
        self.steps = steps
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


LR_SCHEDULES = ("constant", "cosine")
"""Learning-rate schedules of `train` and `finetune` (phase 2): `lr_schedule=`."""


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


def _current_lr(model: keras.Model) -> float:
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
            logs["learning_rate"] = _current_lr(self.model)


def _check_schedule(lr_schedule: Any) -> str:
    if lr_schedule not in LR_SCHEDULES:
        raise ArgumentError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}.")
    return lr_schedule


class _PhaseTag(keras.callbacks.Callback):
    """Adds `phase` and `learning_rate` entries to the epoch logs (before CSVLogger writes them),
    so every row of `log.csv` says which phase and rate trained it."""

    def __init__(self, phase: int) -> None:
        super().__init__()
        self.phase = phase

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["phase"] = self.phase
            logs["learning_rate"] = _current_lr(self.model)


def _better(mode: str, current: float, best: float | None) -> bool:
    if best is None:
        return True
    return current < best if mode == "min" else current > best


class AtomicCheckpoint(keras.callbacks.Callback):
    """Writes `last.keras` every epoch and `best.keras` on improvement, atomically, then state.

    Args:
        ckpt_dir: folder for `last.keras` and `best.keras`.
        monitor: logged quantity deciding `best.keras`.
        mode: "min" or "max".
        best: best value so far (from an earlier session).
        guard: a `NaNGuard`; epochs it flagged are not saved.
        on_saved: `callback(epoch_index, improved, current_value)` called after the model files
            are written (used to write `state.json` last).
    """

    def __init__(self, ckpt_dir: Path, monitor: str, mode: str, best: float | None = None,
                 guard: NaNGuard | None = None,
                 on_saved: Callable[[int, bool, float | None], None] | None = None) -> None:
        super().__init__()
        self.ckpt_dir = Path(ckpt_dir)
        self.monitor = monitor
        self.mode = mode
        self.best = best
        self.best_epoch: int | None = None
        self.guard = guard
        self.on_saved = on_saved
        self._warned = False

    @property
    def last_path(self) -> Path:
        return self.ckpt_dir / "last.keras"

    @property
    def best_path(self) -> Path:
        return self.ckpt_dir / "best.keras"

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if (self.guard is not None and self.guard.triggered) or not _finite(logs.get("loss")):
            return
        _atomic_save_model(self.model, self.last_path)
        current = logs.get(self.monitor)
        improved = False
        if current is None or not _finite(current):
            if not self._warned:
                print(f"Checkpoint: '{self.monitor}' not in logs ({sorted(logs)}); best.keras "
                      f"follows last.keras.")
                self._warned = True
            current = None
            improved = True
        elif _better(self.mode, float(current), self.best):
            self.best = float(current)
            improved = True
        if improved:
            self.best_epoch = epoch
            _atomic_copy(self.last_path, self.best_path)
        if self.on_saved is not None:
            self.on_saved(epoch, improved, None if current is None else float(current))


# --------------------------------------------------------------------------------------------
# The run engine shared by train and finetune
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Phase:
    number: int
    name: str
    epochs: int
    learning_rate: float
    setup: Callable[[keras.Model], FreezeReport | None]
    spec: str
    schedule: str = "constant"


def _structure(model: keras.Model) -> list[tuple[str, tuple[tuple[int, ...], ...]]]:
    return [(layer.name, tuple(tuple(w.shape) for w in layer.weights)) for layer in model.layers]


def _check_same_structure(model: keras.Model, loaded: keras.Model, path: Path) -> None:
    mine, theirs = _structure(model), _structure(loaded)
    if mine == theirs:
        return
    names_a = [n for n, _ in mine]
    names_b = [n for n, _ in theirs]
    if names_a != names_b:
        only_a = sorted(set(names_a) - set(names_b))[:5]
        only_b = sorted(set(names_b) - set(names_a))[:5]
        detail = (f"layers only in the given model: {only_a}; only in the checkpoint: {only_b}"
                  if only_a or only_b else "layer order differs")
    else:
        diff = next(a for a, b in zip(mine, theirs) if a != b)
        other = dict(theirs)[diff[0]]
        detail = f"layer {diff[0]!r} has weight shapes {list(diff[1])} vs {list(other)}"
    raise ArgumentError(
        f"Cannot resume from checkpoint '{path}': it holds a different model "
        f"({loaded.name!r}, {len(names_b)} layers) than the one given ({model.name!r}, "
        f"{len(names_a)} layers); {detail}. Use another out_dir or resume=False."
    )


def _trainable_flags(model: keras.Model) -> dict[str, bool]:
    return {layer.name: bool(layer.trainable) for layer in model.layers}


def _default_monitor(monitor: str | None, has_val: bool, metric_names: Sequence[Any]) -> str:
    names = [m.lower() if isinstance(m, str) else getattr(m, "name", "") for m in metric_names]
    if monitor is None:
        monitor = "val_mean_iou"
    if monitor.startswith("val_") and not has_val:
        base = monitor[4:]
        if base == "mean_iou" and "miou" not in names and "mean_iou" not in names:
            base = "loss"
        print(f"No validation data: monitoring '{base}' instead of '{monitor}'.")
        monitor = base
    elif monitor in ("val_mean_iou", "mean_iou") and "miou" not in names \
            and "mean_iou" not in names:
        fallback = "val_loss" if has_val else "loss"
        print(f"No 'miou' metric: monitoring '{fallback}' instead of '{monitor}'.")
        monitor = fallback
    return monitor


def _resolve_mode(mode: str, monitor: str) -> str:
    if mode in ("min", "max"):
        return mode
    if mode != "auto":
        raise ArgumentError(f"mode must be 'auto', 'min' or 'max', got {mode!r}.")
    return "min" if monitor.endswith("loss") or "error" in monitor else "max"


def _read_log(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _truncate_log(path: Path, completed: int) -> None:
    """Drops rows of epochs >= completed (written before a crash, redone on resume)."""
    rows = _read_log(path)
    keep = [r for r in rows if r.get("epoch", "").strip() != "" and int(r["epoch"]) < completed]
    if len(keep) == len(rows):
        return
    with open(path, newline="") as handle:
        header = next(csv.reader(handle), None)
    fd, tmp = tempfile.mkstemp(prefix=".log.", suffix=".csv", dir=path.parent)
    with os.fdopen(fd, "w", newline="") as handle:
        if header:
            writer = csv.DictWriter(handle, fieldnames=header)
            writer.writeheader()
            writer.writerows(keep)
    os.replace(tmp, path)


def _history_from_log(path: Path) -> dict[str, list[float]]:
    history: dict[str, list[float]] = {}
    for row in _read_log(path):
        for key, value in row.items():
            if key in ("epoch", "phase") or key is None:
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = float("nan")
            history.setdefault(key, []).append(number)
    return history


def _tensorboard_available() -> bool:
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        if not getattr(_tensorboard_available, "warned", False):
            print("TensorBoard is not installed; skipping TensorBoard logs "
                  "(pip install tensorboard).")
            _tensorboard_available.warned = True  # type: ignore[attr-defined]
        return False
    return True


def _copy_into(target: keras.Model, source: keras.Model) -> None:
    if target is source:
        return
    for layer in source.layers:
        try:
            target.get_layer(layer.name).trainable = layer.trainable
        except ValueError:
            pass
    target.set_weights(source.get_weights())


def _run(
    model: keras.Model,
    train_data: Any,
    val_data: Any,
    phases: list[_Phase],
    *,
    kind: str,
    out_dir: str | os.PathLike,
    compile_kwargs: dict[str, Any],
    monitor: str | None,
    mode: str,
    early_stopping: int | None,
    steps_per_epoch: int | None,
    validation_steps: int | None,
    resume: bool,
    tensorboard: bool,
    verbose: int,
    extra_state: dict[str, Any],
    callbacks: Sequence[keras.callbacks.Callback] | None,
    strategy: Any = None,
    recalibrate_bn: int | None = None,
) -> TrainResult:
    start_time = time.perf_counter()
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(ckpt_dir)
    state_path = out / "state.json"
    log_path = out / "log.csv"
    last_path = ckpt_dir / "last.keras"
    best_path = ckpt_dir / "best.keras"
    for phase in phases:
        if not isinstance(phase.epochs, int) or isinstance(phase.epochs, bool) or phase.epochs < 0:
            raise ArgumentError(f"{phase.name} epochs must be an int >= 0, got {phase.epochs!r}.")
    # Built (and so validated) before anything runs; one instance serves every phase.
    recalibration = (BatchNormRecalibration(train_data, recalibrate_bn)
                     if recalibrate_bn is not None else None)

    monitor = _default_monitor(monitor, val_data is not None,
                               compile_kwargs.get("metrics") or ())
    mode = _resolve_mode(mode, monitor)

    state: dict[str, Any] | None = None
    working = model
    if resume:
        if last_path.is_file() and state_path.is_file():
            import json

            with open(state_path, encoding="utf-8") as handle:
                state = json.load(handle)
            try:
                with strategy_scope(strategy):
                    loaded = load_model(last_path, compile=True)
            except Exception as exc:  # noqa: BLE001  report which file failed
                raise ArgumentError(f"Cannot resume: failed to load checkpoint '{last_path}': "
                                 f"{exc}") from exc
            _check_same_structure(model, loaded, last_path)
            working = loaded
            print(f"Resuming from '{last_path}': {state['completed_epochs']} epoch(s) done "
                  f"(phase {state.get('phase')}), best {state.get('monitor')} = "
                  f"{state.get('best_value')}.")
            if state.get("monitor") and state["monitor"] != monitor:
                print(f"Note: the checkpointed run monitored '{state['monitor']}'; keeping it.")
                monitor = state["monitor"]
                mode = state.get("mode", _resolve_mode("auto", monitor))
        else:
            print(f"Nothing to resume in '{out}' (no checkpoints/last.keras + state.json); "
                  f"starting fresh.")

    if state is None:
        state = {
            "version": STATE_VERSION,
            "kind": kind,
            "monitor": monitor,
            "mode": mode,
            "completed_epochs": 0,
            "phase": None,
            "phases": [],
            "phase_boundaries": [],
            "best_value": None,
            "best_epoch": None,
            "stopped_reason": None,
            "finished": False,
            "last_checkpoint": None,
            "best_checkpoint": None,
        }
        if log_path.exists():
            log_path.unlink()
        append_log = False
    else:
        _truncate_log(log_path, int(state["completed_epochs"]))
        append_log = log_path.is_file()
    state.update(extra_state)
    recorded = {int(p["phase"]): p for p in state.get("phases", [])}

    def write_state() -> None:
        state["phases"] = [recorded[k] for k in sorted(recorded)]
        state["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json_atomic(state, state_path)

    def finish(reason: str) -> TrainResult:
        state["stopped_reason"] = reason
        state["finished"] = reason in ("completed", "early_stopping")
        write_state()
        _copy_into(model, working)
        return TrainResult(
            history=_history_from_log(log_path),
            phase_boundaries=list(state["phase_boundaries"]),
            epochs_completed=int(state["completed_epochs"]),
            best_checkpoint=str(best_path) if best_path.is_file() else None,
            last_checkpoint=str(last_path) if last_path.is_file() else None,
            best_value=state.get("best_value"),
            monitor=monitor,
            stopped_reason=reason,
            wall_time_s=time.perf_counter() - start_time,
            model=working,
        )

    if state.get("finished") and state.get("stopped_reason") == "early_stopping":
        print("The checkpointed run already ended by early stopping; nothing more to do.")
        return finish("early_stopping")

    resumed = working is not model
    completed = int(state["completed_epochs"])
    compiled_here = False
    last_reason = "completed"
    last_number = max(p.number for p in phases)
    for phase in phases:
        rec = recorded.get(phase.number)
        later_started = any(k > phase.number for k in recorded)
        if rec is not None and (later_started or (rec.get("ended") == "early_stopping"
                                                  and phase.number != last_number)):
            continue  # an earlier session finished this phase
        start = int(rec["start_epoch"]) if rec is not None else completed
        end = start + phase.epochs
        if phase.epochs == 0 or completed >= end:
            if rec is not None:
                rec["end_epoch"] = completed
            continue
        # Set the phase's trainable flags (and compile).
        if resumed and not compiled_here and rec is not None:
            before = _trainable_flags(working)
            report = phase.setup(working)
            if _trainable_flags(working) != before:
                print("Checkpoint's trainable flags differ from the phase's; recompiling "
                      "(optimizer state is reset).")
                with strategy_scope(strategy):
                    recompile(working, learning_rate=phase.learning_rate)
            compiled_here = True
            print(f"Phase {phase.number} ({phase.name}), continuing at epoch {completed + 1} "
                  f"of {end}: trainable flags restored.")
        else:
            report = phase.setup(working)
            with strategy_scope(strategy):
                if compiled_here or resumed:
                    recompile(working, learning_rate=phase.learning_rate)
                else:
                    compile_model(working, learning_rate=phase.learning_rate, **compile_kwargs)
            compiled_here = True
            print(f"Phase {phase.number} ({phase.name}): epochs {start + 1}-{end}, "
                  f"lr={phase.learning_rate:g}. {report if report is not None else ''}".rstrip())
        if rec is None:
            rec = {"phase": phase.number, "name": phase.name, "start_epoch": start,
                   "epochs": phase.epochs, "learning_rate": phase.learning_rate,
                   "spec": phase.spec, "end_epoch": None, "ended": None}
            recorded[phase.number] = rec
            if start not in state["phase_boundaries"]:
                state["phase_boundaries"].append(start)
        rec.update(epochs=phase.epochs, learning_rate=phase.learning_rate, spec=phase.spec,
                   lr_schedule=phase.schedule)
        state["phase"] = phase.number

        guard = NaNGuard()

        def on_saved(epoch: int, improved: bool, current: float | None) -> None:
            state["completed_epochs"] = epoch + 1
            state["last_checkpoint"] = str(last_path)
            if improved:
                state["best_value"] = current
                state["best_epoch"] = epoch
                state["best_checkpoint"] = str(best_path)
            write_state()

        best = state.get("best_value")
        checkpoint = AtomicCheckpoint(ckpt_dir, monitor, mode, best=best, guard=guard,
                                      on_saved=on_saved)
        # The log row goes before the checkpoint and state.json: a crash between the two then
        # leaves a row that resume drops (and redoes), never a completed epoch without its row.
        cbs: list[keras.callbacks.Callback] = [guard, _PhaseTag(phase.number),
                                               keras.callbacks.CSVLogger(str(log_path),
                                                                         append=append_log),
                                               checkpoint]
        if recalibration is not None:
            cbs.insert(0, recalibration)
        if phase.schedule == "cosine":
            cbs.insert(0, CosineDecayEpochs(phase.learning_rate, start, end))
        append_log = True
        early = None
        if early_stopping is not None:
            early = keras.callbacks.EarlyStopping(monitor=monitor, mode=mode,
                                                  patience=int(early_stopping), verbose=1)
            cbs.append(early)
        if tensorboard and _tensorboard_available():
            cbs.append(keras.callbacks.TensorBoard(log_dir=str(out / "tensorboard"),
                                                   write_graph=False, profile_batch=0))
        cbs.extend(callbacks or ())

        working.fit(
            train_data,
            validation_data=val_data,
            epochs=end,
            initial_epoch=completed,
            steps_per_epoch=steps_per_epoch,
            validation_steps=validation_steps,
            callbacks=cbs,
            verbose=verbose,
        )
        completed = int(state["completed_epochs"])
        if guard.triggered:
            if last_path.is_file():
                _copy_into(working, load_model(last_path, compile=False))
            return finish("nan")
        if working.stop_training and completed < end:
            rec["ended"] = "early_stopping"
            last_reason = "early_stopping"
            if phase.number != last_number:
                print(f"Early stopping ended phase {phase.number} at epoch {completed}; "
                      f"moving on.")
        else:
            rec["ended"] = "completed"
            last_reason = "completed"
        rec["end_epoch"] = completed
        write_state()
    return finish(last_reason)


def _run_distributed(
    model: ModelOrFactory,
    train_data: Any,
    val_data: Any,
    phases: list[_Phase],
    *,
    strategy: Any,
    out_dir: str | os.PathLike,
    resume: bool,
    **kwargs: Any,
) -> TrainResult:
    """`_run` under `strategy`: the model built in its scope, run files written by the chief only.

    Without a strategy this is `_run` on the given model (a model function is called first).
    """
    strategy = resolve_strategy(strategy)
    if strategy is not None and kwargs.get("recalibrate_bn"):
        raise ArgumentError("recalibrate_bn runs eager forward passes on one device and is not "
                         "supported with a distribution strategy; call "
                         "recalibrate_batchnorm(result.model, data) after training instead.")
    working = build_in_scope(model, strategy)
    train_data = distribute_dataset(train_data, strategy)
    val_data = distribute_dataset(val_data, strategy)
    chief = is_chief(strategy)
    # Every worker runs the same saves (reading mirrored variables is collective), but only the
    # chief's land in out_dir: the others write to a temporary folder removed afterwards.
    run_dir = worker_dir(out_dir, strategy, resume=resume)
    try:
        result = _run(working, train_data, val_data, phases, out_dir=run_dir, resume=resume,
                      strategy=strategy, **kwargs)
    finally:
        if not chief:
            shutil.rmtree(run_dir, ignore_errors=True)
    if not chief:
        result.best_checkpoint = result.last_checkpoint = None
    if isinstance(model, keras.Model) and working is not model:
        _copy_into(model, result.model)
    return result


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def _compile_kwargs(loss, metrics, ignore_index, class_weights, optimizer, jit_compile,
                    num_classes) -> dict[str, Any]:
    return {"loss": loss, "metrics": metrics, "ignore_index": ignore_index,
            "class_weights": class_weights, "optimizer": optimizer, "jit_compile": jit_compile,
            "num_classes": num_classes}


def train(
    model: ModelOrFactory,
    train_data: Any,
    val_data: Any = None,
    *,
    out_dir: str | os.PathLike,
    epochs: int,
    learning_rate: float = 1e-3,
    loss: str | keras.losses.Loss = "ce+dice",
    metrics: Sequence[Any] = ("miou", "dice", "accuracy"),
    ignore_index: int | None = None,
    class_weights: Sequence[float] | None = None,
    num_classes: int | None = None,
    optimizer: str = "adam",
    jit_compile: bool | str = "auto",
    monitor: str | None = "val_mean_iou",
    mode: str = "auto",
    early_stopping: int | None = None,
    steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    resume: bool = False,
    tensorboard: bool = True,
    verbose: int = 1,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    strategy: Any = None,
    recalibrate_bn: int | None = None,
    lr_schedule: str = "constant",
) -> TrainResult:
    """Trains `model` as it is (its trainable flags untouched) for `epochs` epochs in total.

    Args:
        model: the model, compiled here with `compile_model`; or a function of no arguments
            that builds it (called inside the strategy's scope when `strategy` is given; a
            model passed as it is is then rebuilt there from its config and weights, and gets
            the trained weights back at the end).
        train_data: `(images, masks[, weights])` batches, e.g. a `tf.data.Dataset`.
        val_data: validation batches or None.
        out_dir: run folder (checkpoints, state.json, log.csv, tensorboard).
        epochs: total epochs (global; a resumed run continues up to it).
        learning_rate, loss, metrics, ignore_index, class_weights, num_classes, optimizer,
            jit_compile: see `compile_model`.
        monitor: quantity for best.keras and early stopping (default "val_mean_iou";
            "mean_iou" or "loss" without validation data).
        mode: "auto", "min" or "max".
        early_stopping: patience in epochs, or None.
        steps_per_epoch, validation_steps: passed to `fit`.
        resume: continue from `out_dir/checkpoints/last.keras` + `state.json` if present.
        tensorboard: write TensorBoard logs to `out_dir/tensorboard`.
        verbose: Keras progress-bar verbosity.
        callbacks: extra Keras callbacks.
        strategy: None / "none" (one device), "mirrored" (`tf.distribute.MirroredStrategy`,
            all GPUs of this machine), "multiworker" (`MultiWorkerMirroredStrategy` over the
            machines in `TF_CONFIG`) or a `tf.distribute.Strategy`; see `vggunet.distribute`.
            Batches of `train_data` are global batches, split across the replicas. Only the
            chief writes to `out_dir`; other workers' results have no checkpoint paths.
        recalibrate_bn: re-estimate the trainable BatchNorm statistics on this many training
            batches before each validation and checkpoint (`BatchNormRecalibration`); None
            (default) keeps Keras's moving averages. Not with `strategy`.
        lr_schedule: "constant" (default) or "cosine": `learning_rate` decays along half a
            cosine towards 0 over the epochs, set per epoch (`CosineDecayEpochs`).

    Returns:
        A `TrainResult`.
    """
    phase = _Phase(1, "train", epochs, learning_rate, lambda m: None, "as given",
                   _check_schedule(lr_schedule))
    return _run_distributed(
        model, train_data, val_data, [phase], kind="train", out_dir=out_dir,
        compile_kwargs=_compile_kwargs(loss, metrics, ignore_index, class_weights, optimizer,
                                       jit_compile, num_classes),
        monitor=monitor, mode=mode, early_stopping=early_stopping,
        steps_per_epoch=steps_per_epoch, validation_steps=validation_steps, resume=resume,
        tensorboard=tensorboard, verbose=verbose,
        extra_state={"epochs": epochs, "learning_rate": learning_rate,
                     "lr_schedule": lr_schedule},
        callbacks=callbacks, strategy=strategy, recalibrate_bn=recalibrate_bn,
    )


def _phase2_spec(model: keras.Model, spec: Any) -> Any:
    if isinstance(spec, str):
        match = re.fullmatch(r"top(\d+)", spec.strip().lower())
        if match:
            return top_blocks(model, int(match.group(1)))
    return spec


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
        ValueError: `steps` < 1, or `data` yields no batch.

    Example:
        >>> import numpy as np
        >>> from vggunet import build_vgg_unet
        >>> m = build_vgg_unet("vgg16", input_shape=(32, 32, 3), weights=None,
        ...                    decoder_filters=(8,) * 5, bottleneck_filters=8,
        ...                    decoder_batchnorm=True, precision="float32")
        >>> recalibrate_batchnorm(m, [np.ones((2, 32, 32, 3), "float32")] * 3, steps=2)
        2
    """
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ArgumentError(f"steps must be a positive integer or None, got {steps!r}.")
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


def prepare_phase2(model: keras.Model, unfreeze: Any = "top2", *,
                   train_bn: bool = False) -> FreezeReport:
    """Sets the phase-2 trainable flags of `finetune`: encoder frozen, then `unfreeze` unfrozen.

    Args:
        model: a vggunet encoder U-Net (changed in place; recompile before training).
        unfreeze: "topN" (the encoder's top N blocks), "encoder", or any `vggunet.freeze` spec.
        train_bn: let encoder BatchNorm layers train.

    Returns:
        The `FreezeReport` of the unfreeze step.
    """
    freeze(model, "encoder")
    return _unfreeze(model, _phase2_spec(model, unfreeze), train_bn=train_bn)


def _spec_text(spec: Any) -> str:
    if callable(spec) and not isinstance(spec, str):
        return getattr(spec, "__name__", "predicate")
    return str(spec)


def finetune(
    model: ModelOrFactory,
    train_data: Any,
    val_data: Any = None,
    *,
    out_dir: str | os.PathLike,
    phase1_epochs: int = 5,
    phase2_epochs: int = 5,
    phase1_lr: float = 1e-3,
    phase2_lr: float = 1e-5,
    unfreeze: Any = "top2",
    train_bn: bool = False,
    loss: str | keras.losses.Loss = "ce+dice",
    metrics: Sequence[Any] = ("miou", "dice", "accuracy"),
    ignore_index: int | None = None,
    class_weights: Sequence[float] | None = None,
    num_classes: int | None = None,
    optimizer: str = "adam",
    jit_compile: bool | str = "auto",
    monitor: str | None = "val_mean_iou",
    mode: str = "auto",
    early_stopping: int | None = None,
    steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    resume: bool = False,
    tensorboard: bool = True,
    verbose: int = 1,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    strategy: Any = None,
    recalibrate_bn: int | None = None,
    lr_schedule: str = "constant",
) -> TrainResult:
    """Two-phase transfer learning: frozen encoder, then the top of the encoder unfrozen.

    Phase 1 freezes the whole encoder (`freeze(model, "encoder")`) and trains the rest for
    `phase1_epochs` at `phase1_lr`. Phase 2 unfreezes `unfreeze` (encoder BatchNorm stays frozen
    unless `train_bn`), recompiles at `phase2_lr` and trains `phase2_epochs` more; epochs are
    numbered globally. A phase with 0 epochs is skipped. Early stopping ends the current phase.

    Args:
        model: a vggunet encoder U-Net, or a function building one (see `train`).
        train_data, val_data: see `train`.
        out_dir: run folder.
        phase1_epochs, phase2_epochs: epochs per phase.
        phase1_lr, phase2_lr: learning rates per phase.
        unfreeze: phase-2 spec: "topN" (the encoder's top N blocks), "encoder", or any
            `vggunet.freeze` spec (int, prefixes, predicate).
        train_bn: let encoder BatchNorm layers train in phase 2.
        lr_schedule: phase 2's learning rate: "constant" (default) or "cosine" (from
            `phase2_lr` towards 0 over phase 2's epochs); phase 1 keeps `phase1_lr`.
        Other arguments (`strategy`, `recalibrate_bn` included): as in `train`.

    Returns:
        A `TrainResult` over both phases.
    """
    spec_text = _spec_text(unfreeze)

    def setup1(m: keras.Model) -> FreezeReport:
        return freeze(m, "encoder")

    def setup2(m: keras.Model) -> FreezeReport:
        return prepare_phase2(m, unfreeze, train_bn=train_bn)

    phases = [
        _Phase(1, "frozen encoder", phase1_epochs, phase1_lr, setup1, "freeze encoder"),
        _Phase(2, "fine-tune", phase2_epochs, phase2_lr, setup2,
               f"unfreeze {spec_text}, train_bn={train_bn}", _check_schedule(lr_schedule)),
    ]
    return _run_distributed(
        model, train_data, val_data, phases, kind="finetune", out_dir=out_dir,
        compile_kwargs=_compile_kwargs(loss, metrics, ignore_index, class_weights, optimizer,
                                       jit_compile, num_classes),
        monitor=monitor, mode=mode, early_stopping=early_stopping,
        steps_per_epoch=steps_per_epoch, validation_steps=validation_steps, resume=resume,
        tensorboard=tensorboard, verbose=verbose,
        extra_state={"phase1_epochs": phase1_epochs, "phase2_epochs": phase2_epochs,
                     "phase1_lr": phase1_lr, "phase2_lr": phase2_lr, "unfreeze": spec_text,
                     "train_bn": train_bn, "lr_schedule": lr_schedule},
        callbacks=callbacks, strategy=strategy, recalibrate_bn=recalibrate_bn,
    )

