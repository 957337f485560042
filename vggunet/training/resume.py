"""The resume rule: the settings a run recorded in `state.json` against those of a resume.

`settings_record` gives the JSON form `state.json` keeps under "settings"; `check_resume`
compares a request with it and returns the changes it applies or raises
`SettingsMismatchError` naming those it cannot apply. The rule itself (which change is safe,
and why the others are not) is documented with the settings, in `vggunet.training.settings`.
Nothing here imports Keras.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from vggunet.errors import SettingsMismatchError
from vggunet.training.settings import (
    CompileSettings, DataSettings, PhaseSettings, RunSettings,
)

__all__ = ["SettingChange", "check_resume", "phase_status", "settings_record"]

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
        >>> from vggunet.training.settings import TRAIN_PHASE
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


# Phase settings added after state.json version 2: a file without one trained at its default.
_LATER_PHASE_FIELDS = ("warmup_epochs", "layerwise_lr", "lr_per_step")


def _stored_phases(state: Mapping[str, Any]) -> list[dict[str, Any] | None]:
    """The recorded settings of each phase (version 1: what its phase records hold)."""
    settings = state.get("settings")
    if isinstance(settings, Mapping):
        defaults = {f: getattr(PhaseSettings(), f) for f in _LATER_PHASE_FIELDS}
        return [({**defaults, **p} if isinstance(p, Mapping) else p)
                for p in settings.get("phases") or []]
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
