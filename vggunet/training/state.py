"""A run folder's files: where they live, `state.json`, `log.csv`, and leftovers of killed runs.

`state.json` (version 2) holds the run's progress (phase, completed epochs, best value, the
phases' records) and, under "settings", the settings the run was started with
(`vggunet.training.settings`). Version 1 files, written before the settings were recorded, are
still read (a resume compares what they hold). Every file is written atomically through
`vggunet.fileio`, so it gets the permissions the user's umask gives.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from vggunet.errors import ArgumentError, CheckpointError
from vggunet.fileio import atomic_write, remove_stale_temps, write_json_atomic

__all__ = [
    "RunPaths",
    "STATE_VERSION",
    "history_from_log",
    "new_state",
    "read_log",
    "read_state",
    "remove_leftovers",
    "truncate_log",
    "write_state",
]

STATE_VERSION = 2
"""Version of the `state.json` layout written here (1: before the settings were recorded)."""

# Temporary names of the previous release (tempfile.mkstemp), which a run it left behind may hold.
_LEGACY_TEMPS = {"": (".state.json.*.tmp", ".log.*.csv"),
                 "checkpoints": (".last.*.keras", ".best.*.keras")}


class RunPaths:
    """The files of a run folder.

    Args:
        out: the run folder.

    Attributes:
        out: the run folder; `checkpoints` its checkpoint folder with `last` (last.keras) and
            `best` (best.keras); `state` (state.json), `log` (log.csv), `lock` (run.lock),
            `tensorboard` (the TensorBoard folder).
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        self.checkpoints = self.out / "checkpoints"
        self.last, self.best = self.checkpoints / "last.keras", self.checkpoints / "best.keras"
        self.state, self.log = self.out / "state.json", self.out / "log.csv"
        self.lock, self.tensorboard = self.out / "run.lock", self.out / "tensorboard"


def remove_leftovers(paths: RunPaths) -> list[Path]:
    """Deletes the temporary files that killed writes left in the run folder.

    Only safe while this process holds the run's lock (no other run writes there).

    Args:
        paths: the run's files.

    Returns:
        The removed paths.
    """
    removed = []
    for sub, patterns in _LEGACY_TEMPS.items():
        folder = paths.out / sub
        removed += remove_stale_temps(folder)
        for pattern in patterns:
            for stale in folder.glob(pattern):
                try:
                    stale.unlink()
                    removed.append(stale)
                except OSError:
                    pass  # litter, never a reason to stop training
    return removed


def new_state(kind: str, monitor: str, mode: str) -> dict[str, Any]:
    """The `state.json` content of a run that has not trained yet.

    Args:
        kind: "train" or "finetune".
        monitor: the monitored quantity.
        mode: "min" or "max".

    Returns:
        The state dict.
    """
    return {"version": STATE_VERSION, "kind": kind, "monitor": monitor, "mode": mode,
            "completed_epochs": 0, "phase": None, "phases": [], "phase_boundaries": [],
            "best_value": None, "best_epoch": None, "stopped_reason": None, "finished": False,
            "last_checkpoint": None, "best_checkpoint": None}


def read_state(path: Path) -> dict[str, Any]:
    """Reads a run's `state.json` (version 1 or 2).

    Args:
        path: the file.

    Returns:
        The parsed state.

    Raises:
        ArgumentError: the file is not a vggunet state, or one of a newer version.
    """
    try:
        state = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArgumentError(f"Cannot resume: cannot read '{path}': {exc}.") from exc
    if not isinstance(state, dict) or "completed_epochs" not in state:
        raise ArgumentError(f"Cannot resume: '{path}' is not a vggunet run state "
                            f"(no 'completed_epochs').")
    version = state.get("version", 1)
    if not isinstance(version, int) or version > STATE_VERSION:
        raise ArgumentError(f"Cannot resume: '{path}' has state version {version!r}, written by "
                            f"a newer vggunet; this one reads versions 1 to {STATE_VERSION}.")
    return state


def write_state(state: dict[str, Any], path: Path) -> None:
    """Writes `state.json` atomically, stamped with the time and the current version.

    Args:
        state: the state (its "version" and "updated" entries are set here).
        path: the file.
    """
    state["version"] = STATE_VERSION
    state["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    write_json_atomic(state, path, error=CheckpointError)


def read_log(path: Path) -> list[dict[str, str]]:
    """The rows of `log.csv` (none when it does not exist).

    Args:
        path: the file.

    Returns:
        One dict per row, keyed by the header.
    """
    if not Path(path).is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def truncate_log(path: Path, completed: int) -> None:
    """Drops rows of epochs >= `completed` (written before a crash, redone on resume).

    Args:
        path: `log.csv`.
        completed: epochs whose rows are kept.
    """
    rows = read_log(path)
    keep = [r for r in rows if r.get("epoch", "").strip() != "" and int(r["epoch"]) < completed]
    if len(keep) == len(rows):
        return
    with open(path, newline="") as handle:
        header = next(csv.reader(handle), None)
    text = io.StringIO(newline="")
    if header:
        writer = csv.DictWriter(text, fieldnames=header)
        writer.writeheader()
        writer.writerows(keep)
    atomic_write(path, text.getvalue(), error=CheckpointError, what="log ")


def history_from_log(path: Path) -> dict[str, list[float]]:
    """Per-epoch values of every logged quantity, read back from `log.csv`.

    Args:
        path: the file.

    Returns:
        Name -> values (NaN where a row has none); `epoch` and `phase` are left out, and so
        are `val_*` columns without a value (Keras's CSVLogger adds them to runs without
        validation data).
    """
    history: dict[str, list[float]] = {}
    for row in read_log(path):
        for key, value in row.items():
            if key in ("epoch", "phase") or key is None:
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = float("nan")
            history.setdefault(key, []).append(number)
    return {key: values for key, values in history.items()
            if not (key.startswith("val_") and all(math.isnan(v) for v in values))}
