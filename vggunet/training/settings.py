"""The settings of a training run: the one typed source of the defaults of `train`, `finetune`,
the `vggunet train`/`finetune` flags and `state.json`.

Four frozen dataclasses describe a run, and their field defaults are the defaults everywhere:
`CompileSettings` (how the model is compiled), `PhaseSettings` (one phase: epochs, learning rate,
schedule, what is unfrozen), `RunSettings` (monitoring, early stopping, steps, logs) and
`DataSettings` (the CLI's pipeline flags). The phases of the two entry points:

* `TRAIN_PHASE`: `train` and `vggunet train` (10 epochs at 1e-3; the API requires `epochs`);
* `FINETUNE_PHASE1`: 5 epochs at 1e-3 with the encoder frozen;
* `FINETUNE_PHASE2`: 10 epochs at 1e-4 with the top two encoder blocks unfrozen. On ISBI,
  1e-4..3e-4 suited phase 2 and 1e-5 barely moved the weights (BENCHMARKS.md).

This module imports nothing heavy, so the CLI builds its flags from it without loading Keras.

Resuming with other settings. `state.json` records the settings of the run (`settings_record`);
a resume compares the requested ones with them (`check_resume`):

* applied, and named in one line: the epochs of the phase under way (more or fewer), early
  stopping, `steps_per_epoch`, `validation_steps`, TensorBoard, `recalibrate_bn`, `verbose`,
  `jit_compile` (how steps execute, not what they compute), the data pipeline
  (`DataSettings`), and any setting of a phase that has not started yet;
* refused with `SettingsMismatchError`, each difference named with its stored and requested
  value: the kind of run (train/finetune); the other `CompileSettings` fields (the checkpoint's
  optimizer state, loss and metrics were built from them); the monitored quantity and its mode
  (`best.keras` and the best value were chosen by them); the learning rate, schedule, unfreeze
  spec and `train_bn` of a phase under way (its optimizer state and learning-rate curve were
  built on them; a silent switch would leave `log.csv` and `state.json` describing a run that
  never happened); and anything of a phase that has ended. To go on with such a change, start
  a new run from the checkpoint: `train(load_model(".../checkpoints/last.keras"), ...,
  out_dir=<another folder>)`.

`state.json` files of version 1 (written before the settings were recorded) hold the phases'
epochs, learning rates and schedules and the monitor: those are compared as above; compile, run
and data settings cannot be, and the requested ones are used (said in the resume line).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from vggunet.checks import check_bool, check_choice, check_int, check_number
from vggunet.errors import SettingsMismatchError

__all__ = [
    "CompileSettings",
    "DataSettings",
    "FINETUNE_PHASE1",
    "FINETUNE_PHASE2",
    "LR_SCHEDULES",
    "MONITOR_MODES",
    "PhaseSettings",
    "RunSettings",
    "STRATEGIES",
    "SettingChange",
    "TRAIN_PHASE",
    "check_resume",
    "settings_record",
]

LR_SCHEDULES = ("constant", "cosine")
"""Learning-rate schedules of a phase (`lr_schedule=`, `--lr-schedule`)."""

MONITOR_MODES = ("auto", "min", "max")
"""How the monitored value improves (`mode=`): "auto" reads it from the name."""

STRATEGIES = ("none", "mirrored", "multiworker")
"""Strategy names accepted by `resolve_strategy` and the CLI's `--strategy`."""

JIT_OPTIONS = ("auto", True, False)


def _set(settings: Any, **values: Any) -> None:
    for name, value in values.items():
        object.__setattr__(settings, name, value)  # frozen dataclass: normalised once, here


@dataclasses.dataclass(frozen=True)
class CompileSettings:
    """How the model is compiled (`compile_model`); the learning rate belongs to each phase.

    Attributes:
        loss: a `get_loss` name ("ce", "dice", "jaccard", "focal", "ce+dice") or a Loss.
        metrics: `get_metrics` names and/or Metric instances (a comma-separated string is split).
        optimizer: an optimizer name ("adam", "sgd", ...) or instance.
        ignore_index: mask value not counted by loss and metrics.
        class_weights: per-class loss weights, or None.
        num_classes: classes (None: the model's output channels).
        jit_compile: passed to `model.compile` ("auto", True or False).
    """

    loss: Any = "ce+dice"
    metrics: Any = ("miou", "dice", "accuracy")
    optimizer: Any = "adam"
    ignore_index: int | None = None
    class_weights: Any = None
    num_classes: int | None = None
    jit_compile: Any = "auto"

    def __post_init__(self) -> None:
        metrics = self.metrics
        if isinstance(metrics, str):
            metrics = [m.strip() for m in metrics.split(",") if m.strip()]
        weights = self.class_weights
        _set(self, metrics=tuple(metrics or ()),
             class_weights=None if weights is None else tuple(float(w) for w in weights),
             ignore_index=check_int(self.ignore_index, "ignore_index", minimum=None,
                                    allow_none=True),
             num_classes=check_int(self.num_classes, "num_classes", allow_none=True),
             jit_compile=check_choice(self.jit_compile, JIT_OPTIONS, "jit_compile"))


_PHASE_NAMES = {"epochs": "epochs", "learning_rate": "learning_rate",
                "lr_schedule": "lr_schedule", "train_bn": "train_bn"}


def _checked_phase(values: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    return {
        "epochs": check_int(values["epochs"], names["epochs"], minimum=0),
        "learning_rate": check_number(values["learning_rate"], names["learning_rate"], low=0,
                                      low_open=True),
        "lr_schedule": check_choice(values["lr_schedule"], LR_SCHEDULES, names["lr_schedule"]),
        "unfreeze": values["unfreeze"],
        "train_bn": check_bool(values["train_bn"], names["train_bn"]),
    }


@dataclasses.dataclass(frozen=True)
class PhaseSettings:
    """One training phase. Defaults: `TRAIN_PHASE`; fine-tuning uses `FINETUNE_PHASE1/2`.

    Attributes:
        epochs: epochs of the phase (0 skips it).
        learning_rate: the phase's learning rate (> 0).
        lr_schedule: "constant", or "cosine" (half a cosine from `learning_rate` towards 0 over
            the phase, set per epoch; see `cosine_lr`).
        unfreeze: what the phase unfreezes (fine-tuning's phase 2: "topN", "encoder" or any
            `vggunet.freeze` spec); None: nothing.
        train_bn: let encoder BatchNorm layers train when unfreezing.
    """

    epochs: int = 10
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"
    unfreeze: Any = None
    train_bn: bool = False

    def __post_init__(self) -> None:
        _set(self, **_checked_phase(dataclasses.asdict(self), _PHASE_NAMES))

    @classmethod
    def from_arguments(cls, names: Mapping[str, str], **values: Any) -> "PhaseSettings":
        """Builds the settings from a function's keywords; errors name those keywords.

        Args:
            names: field -> the caller's keyword (e.g. `{"learning_rate": "phase2_lr"}`).
            **values: field values (missing ones take the class defaults).

        Returns:
            The settings.

        Example:
            >>> PhaseSettings.from_arguments({"learning_rate": "phase2_lr"}, learning_rate=0)
            Traceback (most recent call last):
            ...
            vggunet.errors.ArgumentError: phase2_lr must be a number > 0, got 0.
        """
        defaults = dataclasses.asdict(cls())
        return cls(**_checked_phase({**defaults, **values}, {**_PHASE_NAMES, **names}))


TRAIN_PHASE = PhaseSettings()
"""`train`'s phase: 10 epochs (the CLI's `--epochs`) at 1e-3, trainable flags as given."""

FINETUNE_PHASE1 = PhaseSettings(epochs=5, learning_rate=1e-3)
"""`finetune`'s phase 1: the decoder trains on the frozen encoder."""

FINETUNE_PHASE2 = PhaseSettings(epochs=10, learning_rate=1e-4, unfreeze="top2")
"""`finetune`'s phase 2: the top two encoder blocks unfrozen (BatchNorm stays frozen)."""


def _optional_int(value: Any, name: str, minimum: int = 1) -> int | None:
    # None means "off"; the message names the valid numbers, as the CLI's flags do.
    return None if value is None else check_int(value, name, minimum=minimum)


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How a run is watched and logged.

    Attributes:
        monitor: the quantity that picks `best.keras` and drives early stopping. Without
            validation data "val_X" becomes "X"; without a "miou" metric "mean_iou" becomes the
            loss. None means the default.
        mode: "auto" ("min" for losses and errors, else "max"), "min" or "max".
        early_stopping: patience in epochs, or None (off).
        steps_per_epoch: batches per epoch (None: one pass over the data).
        validation_steps: validation batches per epoch (None: all).
        tensorboard: write TensorBoard logs to `out_dir/tensorboard`.
        recalibrate_bn: re-estimate the trainable BatchNorm statistics on this many training
            batches before each validation and checkpoint; None: off.
        verbose: Keras progress verbosity (0 silent, 1 bar, 2 a line per epoch); 0 also
            silences vggunet's own progress lines.
    """

    monitor: str | None = "val_mean_iou"
    mode: str = "auto"
    early_stopping: int | None = None
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    tensorboard: bool = True
    recalibrate_bn: int | None = None
    verbose: int = 1

    def __post_init__(self) -> None:
        default = RunSettings.__dataclass_fields__["monitor"].default
        _set(self, monitor=default if self.monitor is None else str(self.monitor),
             mode=check_choice(self.mode, MONITOR_MODES, "mode"),
             early_stopping=_optional_int(self.early_stopping, "early_stopping", minimum=0),
             steps_per_epoch=_optional_int(self.steps_per_epoch, "steps_per_epoch"),
             validation_steps=_optional_int(self.validation_steps, "validation_steps"),
             tensorboard=check_bool(self.tensorboard, "tensorboard"),
             recalibrate_bn=_optional_int(self.recalibrate_bn, "recalibrate_bn"),
             verbose=check_int(self.verbose, "verbose", minimum=0))


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """The training pipeline the CLI builds (`make_datasets`), recorded in `state.json`.

    Attributes:
        batch_size: images per (global) batch.
        size: resize every image and mask to (H, W), or None.
        crop: random training crops of (H, W), or None.
        augment: augmentation spec, e.g. "flip,rot90,elastic", or None.
        cache: keep decoded images in memory after the first epoch.
        sample_weights: "median_frequency", "inverse_frequency", "border" or None.
        border_w0: weight of the separation term of "border" weights.
        border_sigma: its width in pixels.
        seed: seed of data order, augmentation and the validation split.
        val_split: fraction of the training pairs held out for validation, or None.
        mask_format: "index", "binary", "palette" or "channel".
        mask_channel: the channel holding the class for "channel" masks.
    """

    batch_size: int = 4
    size: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    augment: str | None = None
    cache: bool = False
    sample_weights: str | None = None
    border_w0: float = 10.0
    border_sigma: float = 5.0
    seed: int | None = None
    val_split: float | None = None
    mask_format: str = "index"
    mask_channel: int = 0

    def __post_init__(self) -> None:
        _set(self, batch_size=check_int(self.batch_size, "batch_size"),
             size=None if self.size is None else tuple(self.size),
             crop=None if self.crop is None else tuple(self.crop))


# --------------------------------------------------------------------------------------------
# state.json records and the resume rule
# --------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """A JSON form of a setting value: plain values as they are, objects by class and config."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "__index__"):
        return int(value)
    get_config = getattr(value, "get_config", None)
    if callable(get_config):
        try:
            return {"class": type(value).__name__, "config": _jsonable(get_config())}
        except Exception:  # noqa: BLE001  a config that cannot be read is described by name
            return {"class": type(value).__name__}
    if callable(value):
        return getattr(value, "__name__", type(value).__name__)
    return repr(value)


def settings_record(compile: CompileSettings, phases: Sequence[PhaseSettings],
                    run: RunSettings, data: DataSettings | None = None) -> dict[str, Any]:
    """The JSON form of a run's settings, as `state.json` keeps it under "settings".

    Args:
        compile: compile settings.
        phases: the phases in order.
        run: run settings.
        data: the data pipeline's settings, if known.

    Returns:
        `{"compile": {...}, "phases": [{...}, ...], "run": {...}, "data": {...} or None}`.

    Example:
        >>> record = settings_record(CompileSettings(), [TRAIN_PHASE], RunSettings())
        >>> record["compile"]["metrics"], record["phases"][0]["learning_rate"]
        (['miou', 'dice', 'accuracy'], 0.001)
    """
    def one(settings: Any) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(settings, f.name))
                for f in dataclasses.fields(settings)}

    return {"compile": one(compile), "phases": [one(p) for p in phases], "run": one(run),
            "data": None if data is None else one(data)}


@dataclasses.dataclass(frozen=True)
class SettingChange:
    """One setting that differs between `state.json` and a resume.

    Attributes:
        name: the setting, e.g. "loss" or "phase 2 learning_rate".
        stored: the recorded value.
        requested: the requested value.
        safe: whether the resume applies it (else it refuses).
        why: for a refused change of a phase setting, the phase's status.
    """

    name: str
    stored: Any
    requested: Any
    safe: bool
    why: str = ""

    def __str__(self) -> str:
        if self.safe:
            return f"{self.name} {self.stored!r} -> {self.requested!r}"
        return (f"{self.name}: stored {self.stored!r}, requested {self.requested!r}"
                + (f" ({self.why})" if self.why else ""))


_SAFE_COMPILE = ("jit_compile",)
_SAFE_RUN = ("early_stopping", "steps_per_epoch", "validation_steps", "tensorboard",
             "recalibrate_bn", "verbose")


def _section_changes(stored: Any, requested: Any, safe: bool, prefix: str = "",
                     keys: Sequence[str] | None = None) -> list[SettingChange]:
    """Differences of the keys recorded on both sides (a side not recorded compares nothing)."""
    if not isinstance(stored, Mapping) or not isinstance(requested, Mapping):
        return []
    names = keys if keys is not None else sorted(set(stored) & set(requested))
    return [SettingChange(prefix + key, stored[key], requested[key], safe)
            for key in names if key in stored and key in requested
            and stored[key] != requested[key]]


def _stored_phases(state: Mapping[str, Any]) -> list[dict[str, Any] | None]:
    """The recorded settings of each phase (version 1: what its phase records hold)."""
    settings = state.get("settings")
    if isinstance(settings, Mapping):
        return list(settings.get("phases") or [])
    records = {int(r["phase"]): r for r in state.get("phases", []) if "phase" in r}
    keys = ("epochs", "learning_rate", "lr_schedule")
    return [({k: records[n][k] for k in keys if k in records[n]} if n in records else None)
            for n in range(1, max(records, default=0) + 1)]


def phase_status(state: Mapping[str, Any], number: int) -> str:
    """Where phase `number` stands in a recorded run: "pending", "under way" or "ended".

    Args:
        state: the parsed `state.json`.
        number: the phase number (1-based).

    Returns:
        "ended" once a later phase has started or early stopping ended it, "under way" once it
        has started, else "pending".
    """
    records = {int(r["phase"]): r for r in state.get("phases", []) if "phase" in r}
    if any(k > number for k in records) or records.get(number, {}).get("ended") == \
            "early_stopping":
        return "ended"
    return "under way" if number in records else "pending"


def _phase_changes(state: Mapping[str, Any], requested: Sequence[Mapping[str, Any]]
                   ) -> list[SettingChange]:
    stored = _stored_phases(state)
    changes = []
    for number, new in enumerate(requested, start=1):
        old = stored[number - 1] if number <= len(stored) else None
        status = phase_status(state, number)
        prefix = f"phase {number} " if len(requested) > 1 else ""
        for change in _section_changes(old, new, True, prefix):
            field = change.name[len(prefix):]
            safe = status == "pending" or (status == "under way" and field == "epochs")
            done = "ended" if status == "ended" else "started"
            why = "" if safe else f"phase {number} has {done}"
            changes.append(dataclasses.replace(change, safe=safe, why=why))
    return changes


def check_resume(state: Mapping[str, Any], kind: str, record: Mapping[str, Any],
                 monitor: str, mode: str, out_dir: Any = "") -> list[SettingChange]:
    """Compares a resume's settings with the recorded run's (the rule: module docstring).

    Args:
        state: the parsed `state.json` (version 1 or 2).
        kind: "train" or "finetune".
        record: the requested settings, as `settings_record` gives them.
        monitor: the monitored quantity the request resolves to.
        mode: its resolved mode ("min" or "max").
        out_dir: the run folder, for the message.

    Returns:
        The changes that are applied (empty when nothing differs).

    Raises:
        SettingsMismatchError: a change that cannot be applied; the message names each, with
            the stored and the requested value.
    """
    stored = state.get("settings") if isinstance(state.get("settings"), Mapping) else {}
    changes = _section_changes({"kind": state.get("kind"), "monitor": state.get("monitor"),
                                "mode": state.get("mode")},
                               {"kind": kind, "monitor": monitor, "mode": mode}, False,
                               keys=("kind", "monitor", "mode"))
    for change in _section_changes(stored.get("compile"), record.get("compile"), False):
        changes.append(dataclasses.replace(change, safe=change.name in _SAFE_COMPILE))
    changes += _phase_changes(state, record.get("phases") or [])
    changes += _section_changes(stored.get("run"), record.get("run"), True, keys=_SAFE_RUN)
    changes += _section_changes(stored.get("data"), record.get("data"), True)
    refused = [c for c in changes if not c.safe]
    if refused:
        raise SettingsMismatchError(
            f"Cannot resume the run in '{out_dir}' with these settings: "
            + "; ".join(str(c) for c in refused)
            + ". Resume with the stored settings, or start a new run in another out_dir "
              "(from its checkpoints/last.keras to keep the weights)."
        )
    return changes
