"""Quality of the 3D workflow (issue 15): train within a wall-time budget, score held-out volumes.

Two tasks, each written with the public vggunet API only (so this file also shows the workflow):

* ``brats``: the brain-tumour lab's depth-4 3D U-Net (``preset="assignment"``, 32 base filters,
  3 sigmoid outputs: edema, non-enhancing, enhancing), soft Dice loss, flips and axial turns,
  the lab's per-slice standardisation, on the 20 shared BraTS patches of one patient:
  every 5th patch in natural name order is held out (patch5, 10, 15, 20) and scored as a whole
  160x160x16 volume (sliding window when the training patch is smaller).
* ``hippocampus``: the Decathlon's Task04 (200 shared NIfTI volumes): every 5th case in
  natural name order is held out (40), the other 160 train a small softmax 3D U-Net on patches
  covering the whole volume (48x64x48, smaller volumes zero-padded), z-score standardisation;
  the test volumes are scored whole (Dice of anterior and posterior hippocampus).

Training stops when the budget (``--minutes``) of training wall time is spent (a Keras callback
checks after every batch), so results depend on the machine's speed and load: the JSON records
both. Models use channels_last (``data_format="auto"``), about 10x faster than the lab's
channels_first on this CPU. Usage, from the repository root:

    .venv/bin/python benchmarks/volumes_quality.py --task brats --minutes 25
    .venv/bin/python benchmarks/volumes_quality.py --task hippocampus --minutes 25

Results go to ``benchmarks/results/volumes_quality_<task>.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA = REPO.parent / "shared" / "data"

TASKS: dict[str, dict[str, Any]] = {
    "brats": dict(
        data=DATA / "brats3d" / "train", patch=(80, 80, 16), batch_size=2, num_classes=4,
        label_mode="multilabel", standardize="lab", augment=True, background_fraction=0.95,
        model=dict(preset="assignment"), batchnorm=False, learning_rate=1e-3,
        loss="soft_dice", metrics=("dice_coefficient",),
        class_names=("background", "edema", "non-enhancing", "enhancing")),
    "hippocampus": dict(
        data=DATA / "hippocampus", patch=(48, 64, 48), batch_size=2, num_classes=3,
        # Flips would swap anterior and posterior along the long axis: off.
        label_mode="index", standardize="zscore", augment=False, background_fraction=1.0,
        model=dict(depth=4, base_filters=8), batchnorm=True, learning_rate=1e-3,
        loss="ce+dice", metrics=("accuracy",),
        class_names=("background", "anterior", "posterior")),
}
HOLD_OUT_EVERY = 5


def machine() -> dict[str, Any]:
    """Cores, CPU model, Python and library versions."""
    import keras
    import numpy as np
    import tensorflow as tf
    import vggunet

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": cpu, "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__,
            "keras": keras.__version__, "tensorflow": tf.__version__,
            "vggunet": getattr(vggunet, "__version__", "?"), "backend": keras.backend.backend()}


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (the machine is shared)."""
    return [round(v, 2) for v in os.getloadavg()]


def split_cases(root: Path) -> tuple[list, list]:
    """(train, test): every `HOLD_OUT_EVERY`-th case in natural name order is a test case."""
    from vggunet.data.volume_cases import find_volume_cases

    cases = find_volume_cases(root)
    test = cases[HOLD_OUT_EVERY - 1::HOLD_OUT_EVERY]
    names = {c.name for c in test}
    return [c for c in cases if c.name not in names], test


def budget_callback(seconds: float) -> Any:
    """A Keras callback that stops training once `seconds` of training have passed."""
    import keras

    class Budget(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.start = None
            self.steps = 0
            self.spent = False

        def on_train_begin(self, logs=None) -> None:
            if self.start is None:
                self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None) -> None:
            self.steps += 1
            if time.perf_counter() - self.start >= seconds:
                # Keras ends the epoch after this batch; the loop then ends the run.
                self.spent = True
                self.model.stop_training = True

    return Budget()


def run(task: str, minutes: float, seed: int, out_dir: Path, verbose: int) -> dict[str, Any]:
    """Trains and scores one task; returns the record written to JSON."""
    import keras

    from vggunet.data.volume_cases import load_case
    from vggunet.data.volume_pipeline import make_volume_dataset
    from vggunet.volume_evaluation import evaluate_volumes
    from vggunet.models.unet3d import build_unet_3d
    from vggunet.training import train
    from vggunet.training.settings import VolumeDataSettings, resolve_volume_data_format

    cfg = TASKS[task]
    keras.utils.set_random_seed(seed)
    data_format = resolve_volume_data_format("auto")
    train_cases, test_cases = split_cases(Path(cfg["data"]))
    channels = load_case(train_cases[0])[0].shape[-1]
    settings = VolumeDataSettings(
        patch=cfg["patch"], batch_size=cfg["batch_size"], label_mode=cfg["label_mode"],
        data_format=data_format, standardize=cfg["standardize"], augment=cfg["augment"],
        background_fraction=cfg["background_fraction"], seed=seed)
    train_data = make_volume_dataset(
        train_cases, patch=settings.patch, num_classes=cfg["num_classes"],
        batch_size=settings.batch_size, label_mode=settings.label_mode,
        data_format=data_format, standardize=settings.standardize, augment=settings.augment,
        background_fraction=settings.background_fraction, seed=seed, shuffle=True)
    multilabel = cfg["label_mode"] == "multilabel"
    outputs = cfg["num_classes"] - 1 if multilabel else cfg["num_classes"]
    model = build_unet_3d((*cfg["patch"], channels), n_classes=outputs, data_format=data_format,
                          final_activation="sigmoid" if multilabel else "softmax",
                          batchnorm=cfg["batchnorm"], **cfg["model"])
    budget = budget_callback(minutes * 60.0)
    load_before = load_average()
    result = train(model, train_data, None, out_dir=out_dir, epochs=100000,
                   learning_rate=cfg["learning_rate"], loss=cfg["loss"],
                   metrics=cfg["metrics"], num_classes=None if multilabel else outputs,
                   monitor="loss", tensorboard=False, verbose=verbose, data_settings=settings,
                   callbacks=[budget])
    train_seconds = time.perf_counter() - budget.start
    load_after_training = load_average()
    start = time.perf_counter()
    scores = evaluate_volumes(result.model, test_cases, patch=cfg["patch"], overlap=0.5,
                              batch_size=2, standardize=cfg["standardize"],
                              label_mode=cfg["label_mode"], class_names=cfg["class_names"])
    history = {k: [round(float(v), 5) for v in vs] for k, vs in result.history.items()}
    return {
        "task": task, "command": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "seed": seed, "budget_minutes": minutes,
        "load_average": {"before": load_before, "after_training": load_after_training,
                         "after_scoring": load_average()},
        "split": {"rule": f"every {HOLD_OUT_EVERY}th case in natural name order is a test case",
                  "train": [c.name for c in train_cases], "test": [c.name for c in test_cases]},
        "settings": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.items()},
                     "data_format": data_format, "channels": channels,
                     "optimizer": "adam", "params": model.count_params(),
                     "scoring": "whole volumes, sliding window of the training patch, overlap "
                                "0.5, gaussian blend"},
        "training": {"epochs_completed": result.epochs_completed, "steps": budget.steps,
                     "wall_time_s": round(train_seconds, 1), "budget_spent": budget.spent,
                     "seconds_per_step": round(train_seconds / max(budget.steps, 1), 2),
                     "history": history},
        "scoring_wall_time_s": round(time.perf_counter() - start, 1),
        "scores": scores,
    }


def markdown(record: dict[str, Any]) -> str:
    """A short markdown table: per-class Dice/sensitivity/specificity over the test set."""
    scores = record["scores"]
    lines = [f"{record['task']}: {len(scores['cases'])} test volumes, "
             f"{record['training']['epochs_completed']} epochs / {record['training']['steps']} "
             f"steps in {record['training']['wall_time_s'] / 60:.1f} min",
             "", "| class | Dice | sensitivity | specificity |", "|---|---|---|---|"]
    rows = [(name, scores["overall"][name]) for name in scores["foreground"]]
    rows.append(("mean", scores["mean"]))
    for name, s in rows:
        lines.append(f"| {name} | {s['dice']:.3f} | {s['sensitivity']:.3f} | "
                     f"{s['specificity']:.3f} |")
    per_case = [c["mean"]["dice"] for c in scores["cases"]]
    lines.append(f"\nmean Dice per case: min {min(per_case):.3f}, max {max(per_case):.3f} "
                 f"(overall scores pool the voxels of all test volumes)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", required=True, choices=tuple(TASKS))
    parser.add_argument("--minutes", type=float, default=25.0,
                        help="training wall-time budget (default 25)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file (default benchmarks/results/volumes_quality_TASK.json)")
    parser.add_argument("--verbose", type=int, default=2, help="Keras verbosity (default 2)")
    args = parser.parse_args(argv)
    out = args.out or RESULTS / f"volumes_quality_{args.task}.json"
    from vggunet.fileio import write_json_atomic

    with tempfile.TemporaryDirectory(prefix=f"vq_{args.task}_") as run_dir:
        record = run(args.task, args.minutes, args.seed, Path(run_dir), args.verbose)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(json.loads(json.dumps(record, default=str)), out)
    print(markdown(record))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
