"""One training run of the ISBI transfer benchmark (`benchmarks/transfer_isbi.py`, issue 5).

`run_one` builds a configuration's model, trains it for the budget with vggunet's public API
(`data.make_dataset`, `training.train` / `training.finetune`) and scores it on the held-out
images (`evaluate.evaluate`, `predict.predict_proba` with and without TTA); the benchmark runs
it in a subprocess per configuration and seed.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from isbi_finetune import _split
from isbi_scoring import (
    binary_scores, held_out_arrays, held_out_curve, load_average, mirror_scores,
    score_prediction,
)

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs" / "transfer_isbi"
CLASS_NAMES = ["membrane", "cell"]


def build_model(cfg: dict[str, Any], hed_path: Path | None) -> Any:
    """Builds the configuration's model (1 grey input channel, 2 classes).

    Args:
        cfg: a resolved configuration (see `resolve_config`).
        hed_path: the converted HED weights file, needed when `cfg["weights"] == "hed"`.

    Returns:
        The uncompiled Keras model.
    """
    from vggunet.unet import build_unet, build_vgg_unet

    if cfg["model"] == "lab":
        # Free H and W (multiples of 16) so the held-out 512x512 images go through whole.
        return build_unet(input_size=(None, None, 1), n_filters=32, n_classes=2)
    extra = {"decoder_filters": cfg["decoder_filters"]} if cfg.get("decoder_filters") else {}
    return build_vgg_unet(
        "vgg16", input_shape=(None, None, 1), num_classes=2,
        weights=str(hed_path) if cfg["weights"] == "hed" else None,
        decoder_batchnorm=cfg["decoder_batchnorm"], skip_batchnorm=cfg["skip_batchnorm"],
        bn_momentum=cfg["bn_momentum"], precision=cfg["precision"], **extra,
    )


def step_decay_lr(cfg: dict[str, Any], epoch: int, epochs: int, lr: float) -> float:
    """`--lr-decay-last`: the last share of the epochs at a tenth of the last phase's rate.

    (`--lr-schedule cosine` is vggunet's own `lr_schedule="cosine"`, passed to
    `finetune`/`train`.)

    Args:
        cfg: a resolved configuration.
        epoch: the global epoch index (0-based, counted across phases).
        epochs: the total number of epochs.
        lr: the rate the optimizer has now (kept before the decay).

    Returns:
        The learning rate for `epoch`.
    """
    decay_from = epochs - max(1, round(epochs * cfg["lr_decay_last"]))
    return 0.1 * (cfg.get("lr2") or cfg["lr"]) if epoch >= decay_from else lr


def run_dir(cfg: dict[str, Any], seed: int, root: Path = RUNS) -> Path:
    """The checkpoint folder of one run; tagged runs get their own, so they can run side by side.

    Args:
        cfg: a resolved configuration.
        seed: the run's seed.
        root: the folder holding all runs.

    Returns:
        `root/<config>_seed<seed>[/<tag>]`.
    """
    folder = root / f"{cfg['name']}_seed{seed}"
    return folder / cfg["tag"] if cfg.get("tag") else folder


def _train(cfg: dict[str, Any], model: Any, train_ds: Any, held_out: list[Any], scale: str,
           ) -> dict[str, Any]:
    """Trains the model for the configuration's budget (`train` or `finetune`).

    Args:
        cfg: a resolved configuration.
        model: the built model.
        train_ds: the repeating training dataset.
        held_out: `(image_path, mask_path)` pairs (for `--curve`).
        scale: "raw" or "unit" input scaling.

    Returns:
        `result` (TrainResult), `phases` (text), `steps`, `curve` (points or None),
        `train_wall_s`, `train_cpu_s`.
    """
    import keras

    from vggunet.training import finetune, train

    epochs = cfg["epochs"]
    if cfg["mode"] == "finetune":
        # Phases end on epoch boundaries: enough epochs for the frozen share to be one or more.
        epochs = max(epochs, round(1 / cfg["phase1_fraction"]))
    steps_per_epoch = max(1, cfg["steps"] // epochs)
    callbacks: list[Any] = []
    if cfg["lr_decay_last"] and cfg["lr_schedule"] == "constant":
        callbacks.append(keras.callbacks.LearningRateScheduler(
            lambda epoch, lr: step_decay_lr(cfg, epoch, epochs, lr)))
    curve = held_out_curve(held_out, scale, steps_per_epoch=steps_per_epoch) \
        if cfg["curve"] else None
    if curve is not None:
        callbacks.append(curve)
    common = dict(out_dir=run_dir(cfg, cfg["seed"]), steps_per_epoch=steps_per_epoch,
                  loss=cfg["loss"], metrics=("accuracy",), monitor="loss", tensorboard=False,
                  verbose=2, callbacks=callbacks, recalibrate_bn=cfg["recalibrate_bn"],
                  lr_schedule=cfg["lr_schedule"])
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if curve is not None:
        curve.start = wall0
    if cfg["mode"] == "finetune":
        e1 = min(epochs - 1, max(1, round(epochs * cfg["phase1_fraction"])))
        result = finetune(model, train_ds, None, phase1_epochs=e1, phase2_epochs=epochs - e1,
                          phase1_lr=cfg["lr"], phase2_lr=cfg["lr2"], unfreeze=cfg["unfreeze"],
                          **common)
        phases = f"{e1 * steps_per_epoch} frozen + {(epochs - e1) * steps_per_epoch} " \
                 f"with {cfg['unfreeze']} unfrozen"
    else:
        if cfg["mode"] == "frozen":
            from vggunet.freezing import freeze

            freeze(model, "encoder")
        result = train(model, train_ds, None, epochs=epochs, learning_rate=cfg["lr"], **common)
        phases = f"{epochs * steps_per_epoch} " + \
                 ("encoder frozen" if cfg["mode"] == "frozen" else "all trainable")
    train_wall = time.perf_counter() - wall0 - (curve.eval_s if curve is not None else 0.0)
    return {"result": result, "phases": phases, "steps": epochs * steps_per_epoch,
            "curve": curve.points if curve is not None else None,
            "train_wall_s": round(train_wall, 1),
            "train_cpu_s": round(time.process_time() - cpu0, 1)}


def _score(cfg: dict[str, Any], model: Any, held_out: list[Any], scale: str,
           tta: bool) -> tuple[dict[str, Any], dict[str, float]]:
    """Held-out scores: plain through `evaluate`, TTA and mirror padding via `predict_proba`.

    Args:
        cfg: a resolved configuration.
        model: the trained model.
        held_out: `(image_path, mask_path)` pairs.
        scale: "raw" or "unit" input scaling.
        tta: also score with test-time augmentation.

    Returns:
        `(figures: plain[, tta][, mirror...], eval wall seconds per extra scoring)`.
    """
    from vggunet.data import make_dataset
    from vggunet.evaluate import evaluate

    val_ds = make_dataset(pairs=held_out, num_classes=2, mask_format="binary", channels=1,
                          scale=scale, batch_size=2, shuffle=False)
    plain = evaluate(model, val_ds, num_classes=2, class_names=CLASS_NAMES, verbose=False)
    figures: dict[str, Any] = {"plain": binary_scores(plain["confusion_matrix"])}
    eval_wall = {}
    from_logits = cfg["model"] == "lab"
    images, masks = held_out_arrays(held_out, scale)
    if tta:
        t0 = time.perf_counter()
        figures["tta"], _ = score_prediction(model, images, masks, from_logits=from_logits,
                                             tta=True)
        eval_wall["tta_s"] = round(time.perf_counter() - t0, 1)
    if cfg.get("mirror_pad"):
        t0 = time.perf_counter()
        figures.update(mirror_scores(model, images, masks, cfg["mirror_pad"], tta=tta,
                                     from_logits=from_logits))
        eval_wall["mirror_s"] = round(time.perf_counter() - t0, 1)
    return figures, eval_wall


def run_one(cfg: dict[str, Any], seed: int, data: Path, tta: bool = True) -> dict[str, Any]:
    """Trains one configuration with one seed and scores it on the held-out images.

    Args:
        cfg: a resolved configuration.
        seed: seeds Keras (weights init) and the data pipeline (order, crops, augmentation).
        data: the ISBI 2012 folder (`image/`, `label/`).
        tta: also score with test-time augmentation (8 flips/rotations).

    Returns:
        The figures: budget, wall/CPU time, load average, held-out scores (plain and TTA).
    """
    import keras
    import numpy as np

    from hed_weights import convert_hed_weights
    from vggunet.data import make_dataset

    load_start = load_average()
    hed_path = None
    if cfg["weights"] == "hed":
        hed_path = convert_hed_weights(RUNS / "vgg16_hed_notop.weights.h5")
    keras.utils.set_random_seed(seed)
    train_pairs, held_out = _split(data)
    # build_vgg_unet models preprocess raw [0, 255] pixels inside; the lab model has no
    # preprocessing and, as in the lab, takes [0, 1] (raw pixels blow its first loss up to ~400).
    scale = "unit" if cfg["model"] == "lab" else "raw"
    train_ds = make_dataset(
        pairs=train_pairs, num_classes=2, mask_format="binary", channels=1, scale=scale,
        crop=(cfg["crop"], cfg["crop"]), augment=cfg["augment"], batch_size=cfg["batch"],
        shuffle=True, seed=seed, repeat=True, cache=True,
    )
    model = build_model(cfg, hed_path)
    trained = _train(dict(cfg, seed=seed), model, train_ds, held_out, scale)
    load_after_train = load_average()
    figures, eval_wall = _score(cfg, model, held_out, scale, tta)
    result = trained["result"]
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    return {
        "config": cfg["name"], "label": cfg["label"], "seed": seed,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "model": "build_unet" if cfg["model"] == "lab" else "build_vgg_unet('vgg16')",
        "weights": "HED (BSDS500)" if cfg["weights"] == "hed" else "random",
        "mode": cfg["mode"], "phases": trained["phases"], "augment": cfg["augment"],
        "precision": cfg["precision"], "decoder_batchnorm": cfg["decoder_batchnorm"],
        "skip_batchnorm": cfg["skip_batchnorm"], "bn_momentum": cfg["bn_momentum"],
        "recalibrate_bn": cfg["recalibrate_bn"], "decoder_filters": cfg["decoder_filters"],
        "lr_decay_last": cfg["lr_decay_last"], "lr_schedule": cfg["lr_schedule"],
        "loss": cfg["loss"], "curve": trained["curve"],
        "lr": cfg["lr"], "lr2": cfg.get("lr2"), "steps": trained["steps"],
        "batch": cfg["batch"], "crop": cfg["crop"], "trainable_params": trainable,
        "train_wall_s": trained["train_wall_s"], "train_cpu_s": trained["train_cpu_s"],
        "s_per_step": round(trained["train_wall_s"] / max(1, trained["steps"]), 3),
        "eval": eval_wall, "load_start": load_start, "load_after_train": load_after_train,
        "load_end": load_average(), "stopped_reason": result.stopped_reason,
        "final_loss": round(float(result.history["loss"][-1]), 5) if result.history.get("loss")
        else None,
        **figures,
    }
