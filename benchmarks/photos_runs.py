"""The photo benchmark's runs and results bookkeeping (`benchmarks/photos.py`, issue 17).

What each run changes in the "photos" recipe, its budget and results key, the epoch plan, and
the JSON results and calibration files. Nothing here trains, so tests import it cheaply.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PHASE1_SHARE = 0.25

# Each ingredient of the recipe and how removing it changes (finetune, data, model) keywords.
ABLATIONS: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "scale": ({}, {"augment": "hflip,jitter"}, {}),
    "jitter": ({}, {"augment": "hflip,scale=0.5:2"}, {}),
    "flip": ({}, {"augment": "scale=0.5:2,jitter"}, {}),
    "weights": ({}, {"sample_weights": None, "max_weight": None}, {}),
    "cap": ({}, {"max_weight": None}, {}),
    "poly": ({"lr_schedule": "constant"}, {}, {}),
    "warmup": ({"warmup_epochs": 0}, {}, {}),
    "layerwise": ({"layerwise_lr": None}, {}, {}),
    "unfreeze": ({"unfreeze": "top2"}, {}, {}),
    "batchnorm": ({}, {}, {"decoder_batchnorm": False, "skip_batchnorm": False}),
}
_UNWEIGHTED = {"sample_weights": None, "max_weight": None}
# Alternatives to an ingredient, as (finetune, data, model) changes: a loss that handles the
# imbalance itself in place of the class weights; the rate set per batch instead of per epoch.
ALTERNATIVES: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "lovasz": ({"loss": "lovasz"}, _UNWEIGHTED, {}),
    "ohem": ({"loss": "ohem"}, _UNWEIGHTED, {}),
    "per-step": ({"lr_per_step": True}, {}, {}),
}
RUN_NAMES = ("defaults", "recipe", *(f"recipe-minus-{k}" for k in ABLATIONS),
             *(f"recipe-{k}" for k in ALTERNATIVES))
# Runs whose steps cost what another run's do use its step times (and so train its steps).
CALIBRATED_AS = {"recipe-per-step": "recipe"}


def run_config(run: str) -> dict[str, dict[str, Any]]:
    """The finetune, data and model keywords of a run (the budget and split are shared).

    Args:
        run: one of `RUN_NAMES`.

    Returns:
        {"finetune": ..., "data": ..., "model": ...}.
    """
    from vggunet.training.recipes import recipe_keywords

    if run == "defaults":
        return {"finetune": {}, "data": {}, "model": {}}
    config = {target: recipe_keywords("photos", target)
              for target in ("finetune", "data", "model")}
    if run == "recipe":
        return config
    minus = run.startswith("recipe-minus-")
    changes = (ABLATIONS[run[len("recipe-minus-"):]] if minus
               else ALTERNATIVES[run[len("recipe-"):]])
    for target, change in zip(("finetune", "data", "model"), changes):
        config[target].update(change)
    return config


def plan_epochs(minutes: float, steps: list[float], steps_per_epoch: int) -> list[int]:
    """Epochs per phase that fill the budget: a quarter for phase 1, the rest for phase 2.

    Args:
        minutes: training budget.
        steps: seconds per step of each phase.
        steps_per_epoch: steps per epoch.

    Returns:
        [phase-1 epochs, phase-2 epochs], each at least 1.

    Example:
        >>> plan_epochs(40, [2.0, 3.0], 50)
        [6, 12]
    """
    shares = (PHASE1_SHARE, 1 - PHASE1_SHARE)
    return [max(1, round(minutes * 60 * share / (step * steps_per_epoch)))
            for share, step in zip(shares, steps)]


def default_minutes(run: str) -> float:
    """The issue's budget for a run: 40 minutes for defaults and recipe, 15 for the others.

    Args:
        run: one of `RUN_NAMES`.

    Returns:
        Minutes of this CPU.
    """
    return 40.0 if run in ("defaults", "recipe") else 15.0


def record_key(run: str, seed: int, minutes: float, precision: str = "auto",
               steps_as: str | None = None) -> str:
    """The results key (and run folder) of a run: a budget other than its default is named, so
    is a precision other than "auto", and so are steps borrowed from another run's calibration.

    So the recipe at the ablations' 15 minutes neither overwrites nor resumes its 40-minute run,
    a float32 run on a bfloat16 machine (or the reverse) keeps the "auto" one, and the recipe
    trained for an ablation's steps keeps the recipe's own.

    Args:
        run: one of `RUN_NAMES`.
        seed: Keras and data seed.
        minutes: training budget.
        precision: `build_vgg_unet`'s precision.
        steps_as: the run whose calibration set the steps, if not `run`'s own.

    Returns:
        e.g. "recipe/seed0", "recipe/seed0/15min", "recipe/seed0/15min/float32".

    >>> record_key("recipe", 0, 40.0), record_key("recipe", 0, 15.0)
    ('recipe/seed0', 'recipe/seed0/15min')
    >>> record_key("recipe", 0, 15.0, "float32"), record_key("recipe", 1, 40.0, "float32")
    ('recipe/seed0/15min/float32', 'recipe/seed1/float32')
    >>> record_key("recipe", 0, 15.0, "float32", steps_as="recipe-minus-cap")
    'recipe/seed0/15min/float32/steps-as-recipe-minus-cap'
    """
    key = f"{run}/seed{seed}"
    key = key if minutes == default_minutes(run) else f"{key}/{minutes:g}min"
    key = key if precision == "auto" else f"{key}/{precision}"
    return key if steps_as in (None, run) else f"{key}/steps-as-{steps_as}"


def split_key(key: str) -> tuple[str, int]:
    """The run and seed of a results key (the inverse of `record_key`, less budget and precision).

    Args:
        key: e.g. "recipe/seed0/15min", "recipe/seed0/15min/float32".

    Returns:
        (run, seed).

    >>> split_key("recipe/seed0/15min"), split_key("recipe-minus-poly/seed1")
    (('recipe', 0), ('recipe-minus-poly', 1))
    """
    run, rest = key.split("/seed")
    return run, int(rest.split("/")[0])


def read_records(path: Path) -> dict[str, Any]:
    """A results file's records by key ({} before the first run).

    Args:
        path: the JSON file.

    Returns:
        key -> record.
    """
    return json.loads(path.read_text()) if path.is_file() else {}


def merge_record(path: Path, key: str, record: dict[str, Any]) -> None:
    """Writes `record` under `key` into a results file, keeping the other keys (atomically).

    Args:
        path: the JSON file.
        key: e.g. "recipe/seed0" or a run name.
        record: the record.
    """
    from vggunet.fileio import write_json_atomic

    write_json_atomic({**read_records(path), key: record}, path)


def read_calibration(run: str) -> dict[str, Any]:
    """The step times `--calibrate` recorded for `run` (or the run it is `CALIBRATED_AS`).

    Args:
        run: one of `RUN_NAMES`.

    Returns:
        The calibration record ("step_seconds", "load_before", "date").

    Raises:
        SystemExit: no calibration for `run` yet (says how to make one).
    """
    path = RESULTS / "photos_calibration.json"
    records = read_records(path)
    run = CALIBRATED_AS.get(run, run)
    if run not in records:
        raise SystemExit(f"no step times for {run!r} in {path}: run `benchmarks/photos.py "
                         f"--calibrate --run {run}` first, with the machine otherwise idle")
    return records[run]
