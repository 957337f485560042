"""The run engine behind `train` and `finetune`: phases of `fit` in a resumable run folder.

Everything a run writes lives in its folder (`RunPaths`):

* `checkpoints/last.keras` after every epoch and `checkpoints/best.keras` whenever the monitored
  value improves, each written atomically (temp file in the same folder, fsync, rename), so a
  crash never leaves a truncated model;
* `state.json` (atomic, written after `last.keras`): phase, completed epochs, best value, the
  phases' records and the run's settings, which a resume reads to continue where the run stopped;
* `log.csv`: one row per epoch (Keras `CSVLogger`) with `phase` and `learning_rate` columns;
* `tensorboard/` (unless turned off);
* `run.lock` while the run is live (`RunLock`).

A session (`_Session`) goes: resolve the monitor, resume or start the state, then for each phase
set its trainable flags and compile, build its callbacks and `fit`; epochs are global across
phases and sessions. `run_session` wraps it with the lock and a distribution strategy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import keras
import numpy as np

from vggunet.console import Say, resolve_say
from vggunet.errors import ArgumentError
from vggunet.fileio import make_folder
from vggunet.saving import load_model
from vggunet.training.callbacks import (
    AtomicCheckpoint, BatchNormRecalibration, MonitorCheck, NaNGuard, PhaseTag, resolve_mode,
    resolve_monitor, tensorboard_callback,
)
from vggunet.training.checkpoint import copy_into, load_for_resume, trainable_flags
from vggunet.training.compiling import compile_model
from vggunet.training.distribute import (
    ModelOrFactory, build_in_scope, distribute_dataset, is_chief, resolve_strategy,
    strategy_scope, worker_dir,
)
from vggunet.training.lock import RunLock
from vggunet.training.preflight import check_before_training
from vggunet.training.resume import check_resume, settings_record
from vggunet.training.layerwise import apply_layerwise_lr
from vggunet.training.schedules import phase_schedule
from vggunet.training.settings import CompileSettings, DataSettings, PhaseSettings, RunSettings
from vggunet.training.state import (
    RunPaths, history_from_log, new_state, read_state, remove_leftovers, truncate_log,
    write_state,
)
from vggunet.transfer.freezing import FreezeReport, recompile

__all__ = ["Phase", "TrainResult", "run_session"]


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


@dataclasses.dataclass
class Phase:
    """One phase of a run as the engine runs it.

    Attributes:
        number: 1-based phase number.
        name: a name for messages ("train", "frozen encoder", "fine-tune").
        settings: epochs, learning rate, schedule.
        setup: sets the phase's trainable flags on a model; returns a report or None.
        spec: what `setup` does, in words (recorded in `state.json`).
        check: raises if `setup` cannot work on the model (an unfreeze spec that matches no
            layer), without changing it; run before any phase trains. None: nothing to check.
    """

    number: int
    name: str
    settings: PhaseSettings
    setup: Callable[[keras.Model], FreezeReport | None]
    spec: str
    check: Callable[[keras.Model], Any] | None = None


def _keras_shuffles(data: Any) -> bool:
    """Whether `fit(shuffle=True)` would shuffle `data`: arrays and PyDatasets only. Datasets
    and generators come shuffled, and `shuffle=True` with them only makes Keras warn."""
    if isinstance(data, keras.utils.PyDataset):
        return True
    leaves = keras.tree.flatten(data)
    return bool(leaves) and all(isinstance(x, np.ndarray) or keras.ops.is_tensor(x)
                                for x in leaves)


class _Session:
    """One call of `train`/`finetune` on a run folder, from the resume decision to the result.

    Args:
        model: the model to train (already bound to the strategy).
        train_data, val_data: what `fit` gets.
        phases: the phases, in order.
        kind: "train" or "finetune" (recorded; a resume of the other kind is refused).
        paths: the run folder's files.
        compile, run, data: the settings.
        extra_state: entries added to `state.json` (the entry point's own arguments).
        callbacks: the user's extra callbacks.
        strategy: a resolved strategy or None.
        say: the line sink (None: printed, silenced by `run.verbose == 0`).
    """

    def __init__(self, model: keras.Model, train_data: Any, val_data: Any,
                 phases: Sequence[Phase], *, kind: str, paths: RunPaths,
                 compile: CompileSettings, run: RunSettings, data: DataSettings | None,
                 extra_state: dict[str, Any], callbacks: Sequence[Any] | None, strategy: Any,
                 say: Say | None) -> None:
        self.model, self.working = model, model
        self.train_data, self.val_data = train_data, val_data
        self.phases, self.kind, self.paths = list(phases), kind, paths
        self.compile, self.run, self.extra_state = compile, run, extra_state
        self.record = settings_record(compile, [p.settings for p in phases], run, data)
        self.user_callbacks, self.strategy = list(callbacks or ()), strategy
        self.say = resolve_say(run.verbose, say)
        self.notice = resolve_say(True, say)  # why a run did not do what was asked
        self.state: dict[str, Any] = {}
        self.recorded: dict[int, dict[str, Any]] = {}
        self.compiled_here = False
        self.append_log = False
        # Built (and so validated) before anything runs; one instance serves every phase.
        self.recalibration = (BatchNormRecalibration(train_data, run.recalibrate_bn)
                              if run.recalibrate_bn is not None else None)
        self.monitor = resolve_monitor(run.monitor, val_data is not None, compile.metrics,
                                       self.say)
        self.mode = resolve_mode(run.mode, self.monitor)
        self.start_time = time.perf_counter()

    # ---- the state: resumed or new

    def _resume(self) -> dict[str, Any] | None:
        """The stored state with the checkpoint loaded, or None when there is nothing."""
        paths = self.paths
        if not (paths.last.is_file() and paths.state.is_file()):
            self.notice(f"Nothing to resume in '{paths.out}' (no checkpoints/last.keras + "
                        f"state.json); starting fresh.")
            return None
        state = read_state(paths.state)
        self.working = load_for_resume(paths.last, self.model, self.strategy)
        changes = check_resume(state, self.kind, self.record, self.monitor, self.mode,
                               paths.out)
        self.say(f"Resuming from '{paths.last}': {state['completed_epochs']} epoch(s) done "
                 f"(phase {state.get('phase')}), best {state.get('monitor')} = "
                 f"{state.get('best_value')}.")
        if "settings" not in state:
            self.say("Its state.json (version 1, an earlier vggunet) records no compile, run "
                     "or data settings; the requested ones are used.")
        if changes:
            self.say("Applying changed settings: " + "; ".join(map(str, changes)) + ".")
        if isinstance(self.compile.jit_compile, bool):
            self.working.jit_compile = self.compile.jit_compile  # "auto" keeps the checkpoint's
        return state

    def _open_state(self, resume: bool) -> None:
        state = self._resume() if resume else None
        if state is None:
            state = new_state(self.kind, self.monitor, self.mode)
            if self.paths.log.exists():
                self.paths.log.unlink()
        else:
            truncate_log(self.paths.log, int(state["completed_epochs"]))
            self.append_log = self.paths.log.is_file()
        state.update(self.extra_state)
        state["settings"] = self.record
        self.state = state
        self.recorded = {int(p["phase"]): p for p in state.get("phases", [])}

    def _write_state(self) -> None:
        self.state["phases"] = [self.recorded[k] for k in sorted(self.recorded)]
        write_state(self.state, self.paths.state)

    def _finish(self, reason: str) -> TrainResult:
        state, paths = self.state, self.paths
        state["stopped_reason"] = reason
        state["finished"] = reason in ("completed", "early_stopping")
        self._write_state()
        copy_into(self.model, self.working)
        return TrainResult(
            history=history_from_log(paths.log),
            phase_boundaries=list(state["phase_boundaries"]),
            epochs_completed=int(state["completed_epochs"]),
            best_checkpoint=str(paths.best) if paths.best.is_file() else None,
            last_checkpoint=str(paths.last) if paths.last.is_file() else None,
            best_value=state.get("best_value"),
            monitor=self.monitor,
            stopped_reason=reason,
            wall_time_s=time.perf_counter() - self.start_time,
            model=self.working,
        )

    # ---- one phase

    def _span(self, phase: Phase) -> tuple[int, int] | None:
        """The phase's global epochs [start, end), or None when there is nothing to train."""
        rec = self.recorded.get(phase.number)
        last_number = self.phases[-1].number
        if any(k > phase.number for k in self.recorded) or (
                rec is not None and rec.get("ended") == "early_stopping"
                and phase.number != last_number):
            return None  # an earlier session finished (or skipped) this phase
        completed = int(self.state["completed_epochs"])
        start = int(rec["start_epoch"]) if rec is not None else completed
        end = start + phase.settings.epochs
        if phase.settings.epochs == 0 or completed >= end:
            if rec is not None:
                rec["end_epoch"] = completed
            return None
        return start, end

    def _enter(self, phase: Phase, start: int, end: int) -> None:
        """Sets the phase's trainable flags and compiles (or keeps the resumed optimizer)."""
        lr, jit = phase.settings.learning_rate, self.compile.jit_compile
        resumed = self.working is not self.model
        if resumed and not self.compiled_here and phase.number in self.recorded:
            before = trainable_flags(self.working)
            phase.setup(self.working)
            if trainable_flags(self.working) != before:
                self.say("Checkpoint's trainable flags differ from the phase's; recompiling "
                         "(optimizer state is reset).")
                with strategy_scope(self.strategy):
                    recompile(self.working, learning_rate=lr, jit_compile=jit)
            self.say(f"Phase {phase.number} ({phase.name}), continuing at epoch "
                     f"{int(self.state['completed_epochs']) + 1} of {end}: trainable flags "
                     f"restored.")
        else:
            report = phase.setup(self.working)
            layerwise = phase.settings.layerwise_lr
            with strategy_scope(self.strategy):
                if self.compiled_here or resumed:
                    recompile(self.working, learning_rate=lr, jit_compile=jit)
                else:
                    compile_model(self.working, learning_rate=lr,
                                  **dataclasses.asdict(self.compile))
                if layerwise is not None:
                    apply_layerwise_lr(self.working, layerwise)
            described = report.describe(recompile_hint=False) if report is not None else ""
            rates = f" (encoder stages below the top: x{layerwise:g} each)" if layerwise else ""
            self.say(f"Phase {phase.number} ({phase.name}): epochs {start + 1}-{end}, "
                     f"lr={lr:g}{rates}. {described}".rstrip())
        self.compiled_here = True

    def _record_phase(self, phase: Phase, start: int) -> dict[str, Any]:
        rec = self.recorded.get(phase.number)
        if rec is None:
            rec = {"phase": phase.number, "name": phase.name, "start_epoch": start,
                   "end_epoch": None, "ended": None}
            self.recorded[phase.number] = rec
            if start not in self.state["phase_boundaries"]:
                self.state["phase_boundaries"].append(start)
        rec.update(epochs=phase.settings.epochs, learning_rate=phase.settings.learning_rate,
                   spec=phase.spec, lr_schedule=phase.settings.lr_schedule)
        self.state["phase"] = phase.number
        return rec

    def _on_saved(self, epoch: int, improved: bool, current: float | None) -> None:
        state = self.state
        state["completed_epochs"] = epoch + 1
        state["last_checkpoint"] = str(self.paths.last)
        if improved:
            state["best_value"] = current
            state["best_epoch"] = epoch
            state["best_checkpoint"] = str(self.paths.best)
        self._write_state()

    def _callbacks(self, phase: Phase, guard: NaNGuard, start: int, end: int) -> list[Any]:
        run = self.run
        checkpoint = AtomicCheckpoint(self.paths.checkpoints, self.monitor, self.mode,
                                      best=self.state.get("best_value"), guard=guard,
                                      on_saved=self._on_saved, say=self.say)
        # The log row goes before the checkpoint and state.json: a crash between the two then
        # leaves a row that resume drops (and redoes), never a completed epoch without its row.
        cbs: list[Any] = [guard, MonitorCheck(self.monitor), PhaseTag(phase.number),
                          keras.callbacks.CSVLogger(str(self.paths.log), append=self.append_log),
                          checkpoint]
        self.append_log = True
        if self.recalibration is not None:
            cbs.insert(0, self.recalibration)
        schedule = phase_schedule(phase.settings, start, end)
        if schedule is not None:
            cbs.insert(0, schedule)
        if run.early_stopping is not None:
            cbs.append(keras.callbacks.EarlyStopping(monitor=self.monitor, mode=self.mode,
                                                     patience=run.early_stopping,
                                                     verbose=1 if run.verbose else 0))
        board = (tensorboard_callback(self.paths.tensorboard, self.val_data is not None, self.say)
                 if run.tensorboard else None)
        return cbs + ([board] if board is not None else []) + self.user_callbacks

    def _fit(self, phase: Phase, start: int, end: int) -> str:
        """Trains the phase; returns how it ended ("completed", "early_stopping" or "nan")."""
        rec = self._record_phase(phase, start)
        guard = NaNGuard(say=self.notice)
        self.working.fit(
            self.train_data, validation_data=self.val_data, epochs=end,
            initial_epoch=int(self.state["completed_epochs"]),
            steps_per_epoch=self.run.steps_per_epoch,
            validation_steps=self.run.validation_steps,
            callbacks=self._callbacks(phase, guard, start, end), verbose=self.run.verbose,
            shuffle=_keras_shuffles(self.train_data),
        )
        completed = int(self.state["completed_epochs"])
        if guard.triggered:
            if self.paths.last.is_file():
                copy_into(self.working, load_model(self.paths.last, compile=False))
            return "nan"
        ended = "completed"
        if self.working.stop_training and completed < end:
            ended = "early_stopping"
            if phase.number != self.phases[-1].number:
                self.say(f"Early stopping ended phase {phase.number} at epoch {completed}; "
                         f"moving on.")
        rec["ended"], rec["end_epoch"] = ended, completed
        self._write_state()
        return ended

    def execute(self, resume: bool) -> TrainResult:
        """Runs the session.

        Args:
            resume: continue from the folder's `last.keras` + `state.json` if present.

        Returns:
            The `TrainResult`.
        """
        make_folder(self.paths.checkpoints, what="the checkpoint folder ")
        remove_leftovers(self.paths)
        self._open_state(resume)
        if self.state.get("finished") and self.state.get("stopped_reason") == "early_stopping":
            self.say("The checkpointed run already ended by early stopping; nothing more to do.")
            return self._finish("early_stopping")
        reason = "completed"
        for phase in self.phases:
            span = self._span(phase)
            if span is None:
                continue
            self._enter(phase, *span)
            reason = self._fit(phase, *span)
            if reason == "nan":
                break
        return self._finish(reason)


def run_session(
    model: ModelOrFactory,
    train_data: Any,
    val_data: Any,
    phases: Sequence[Phase],
    *,
    kind: str,
    out_dir: str | os.PathLike,
    compile: CompileSettings,
    run: RunSettings,
    data: DataSettings | None = None,
    extra_state: dict[str, Any] | None = None,
    resume: bool = False,
    callbacks: Sequence[Any] | None = None,
    strategy: Any = None,
    say: Say | None = None,
) -> TrainResult:
    """Runs `phases` into the run folder `out_dir`: locked, under `strategy`, resumable.

    The model is built in the strategy's scope (`build_in_scope`); only the chief holds the
    run lock and writes to `out_dir`, the other workers write to a temporary folder removed
    afterwards (every worker must save: reading mirrored variables is collective).

    Args:
        model: a model or a function building one.
        train_data, val_data: what `fit` gets (`val_data` may be None).
        phases: the phases, in order.
        kind: "train" or "finetune".
        out_dir: the run folder.
        compile, run, data: the settings.
        extra_state: entries added to `state.json`.
        resume: continue from the folder's checkpoint if there is one.
        callbacks: extra Keras callbacks.
        strategy: None, a strategy name or a `tf.distribute.Strategy`.
        say: the line sink (None: printed, silenced by `run.verbose == 0`).

    Returns:
        The `TrainResult`; a non-chief worker's has no checkpoint paths.

    Raises:
        RunLockedError: another live run holds `out_dir`.
        SettingsMismatchError: a resume asked for settings that cannot be applied.
    """
    strategy = resolve_strategy(strategy)
    if strategy is not None and run.recalibrate_bn:
        raise ArgumentError("recalibrate_bn runs eager forward passes on one device and is not "
                            "supported with a distribution strategy; call "
                            "recalibrate_batchnorm(result.model, data) after training instead.")
    chief = is_chief(strategy)
    lock = RunLock(out_dir, say=resolve_say(run.verbose, say)) if chief else None
    with lock or contextlib.nullcontext():
        working = build_in_scope(model, strategy)
        check_before_training(working, train_data, val_data, phases, compile)
        run_dir = worker_dir(out_dir, strategy, resume=resume)
        session = _Session(working, distribute_dataset(train_data, strategy),
                           distribute_dataset(val_data, strategy), phases, kind=kind,
                           paths=RunPaths(Path(run_dir)), compile=compile, run=run, data=data,
                           extra_state=dict(extra_state or {}), callbacks=callbacks,
                           strategy=strategy, say=say)
        try:
            result = session.execute(resume)
        finally:
            if not chief:
                shutil.rmtree(run_dir, ignore_errors=True)
    if not chief:
        result.best_checkpoint = result.last_checkpoint = None
    if isinstance(model, keras.Model) and working is not model:
        copy_into(model, result.model)
    return result
