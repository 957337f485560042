"""ISBI 2012 transfer learning: does a pretrained (HED) VGG16 encoder help a U-Net? (issue 5)

Fixed split: images 0-23 train, 24-29 held out (full 512x512). Label 255 = cell (class 1),
0 = membrane (class 0). Every configuration trains for the same budget (steps x batch x crop)
with vggunet's public API (`data.make_dataset`, `training.train` / `training.finetune`,
`evaluate.evaluate`, `predict.predict_proba(tta=True)`) and is scored on the held-out images
with and without test-time augmentation.

Configurations (`--configs`, comma-separated):
    hed_frozen          VGG16 U-Net, HED encoder frozen, decoder trained
    random_frozen       the same with a random-init frozen encoder
    hed_finetune        HED encoder: frozen phase, then the top encoder blocks unfrozen
    random_full         VGG16 U-Net, random init, everything trainable
    unet_scratch        `build_unet` (the 2D lab model), 1 input channel, 2 classes
    hed_finetune_noelastic, hed_finetune_fp32, hed_finetune_long   variants of hed_finetune
    hed_frozen_nobn, random_frozen_nobn    1/2 with the un-normalised decoder (the pre-check)

Each configuration runs in its own subprocess; the results file is rewritten after each one,
so an interrupted run keeps what it finished. Re-running merges into the same file (keyed by
configuration and seed).

Usage (from the repository root):
    .venv/bin/python benchmarks/transfer_isbi.py --configs hed_frozen,random_frozen --seeds 0,1
    .venv/bin/python benchmarks/transfer_isbi.py --table      # render BENCHMARKS.md's section
    .venv/bin/python benchmarks/transfer_isbi.py --rescore --configs hed_finetune_long \
        --tag cos --mirror-pad 64   # where a finished run's errors sit; mirror-padded scores
    .venv/bin/python benchmarks/transfer_isbi.py --quick      # smoke test (minutes)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "isbi2012"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "transfer_isbi.json"
RUNS = REPO / "runs" / "transfer_isbi"

# The split and machine helpers are shared with the plain fine-tuning benchmark.
from isbi_finetune import HELD_OUT_IDS, TRAIN_IDS, _cpu_model, _split  # noqa: E402,F401
CLASS_NAMES = ["membrane", "cell"]
SECTION = "## Transfer learning on ISBI 2012 (issue 5)"
BASE_AUGMENT = "flip,rot90,elastic"
NO_ELASTIC_AUGMENT = "flip,rot90"

# One entry per configuration. model: "vgg" (build_vgg_unet) or "lab" (build_unet);
# weights: "hed" or None; mode: "frozen" (encoder frozen throughout, `train`), "finetune"
# (`finetune`: frozen, then `unfreeze` unfrozen), "full" (everything trainable, `train`).
CONFIGS: dict[str, dict[str, Any]] = {
    "hed_frozen": dict(label="1. HED encoder frozen, decoder trained", model="vgg",
                       weights="hed", mode="frozen"),
    "random_frozen": dict(label="2. random-init encoder frozen, decoder trained", model="vgg",
                          weights=None, mode="frozen"),
    "hed_finetune": dict(label="3. HED, two-phase fine-tuning", model="vgg", weights="hed",
                         mode="finetune"),
    "random_full": dict(label="4. random init, all trainable", model="vgg", weights=None,
                        mode="full"),
    "unet_scratch": dict(label="5. `build_unet` (lab model) from scratch", model="lab",
                         weights=None, mode="full"),
    "hed_finetune_noelastic": dict(label="3. without elastic", model="vgg", weights="hed",
                                   mode="finetune", augment=NO_ELASTIC_AUGMENT),
    "hed_finetune_fp32": dict(label="3. float32 (not mixed bfloat16)", model="vgg",
                              weights="hed", mode="finetune", precision="float32"),
    # Without elastic: at the common budget elastic cost 0.019 pixel error (0.1444 vs 0.1255).
    "hed_finetune_long": dict(label="3. long budget", model="vgg", weights="hed",
                              mode="finetune", long=True, augment=NO_ELASTIC_AUGMENT),
    "hed_frozen_nobn": dict(label="1. without decoder BatchNorm", model="vgg", weights="hed",
                            mode="frozen", decoder_batchnorm=False),
    "random_frozen_nobn": dict(label="2. without decoder BatchNorm", model="vgg", weights=None,
                               mode="frozen", decoder_batchnorm=False),
    "hed_frozen_skipbn": dict(label="1. with skip BatchNorm", model="vgg", weights="hed",
                              mode="frozen", skip_batchnorm=True),
    "random_frozen_skipbn": dict(label="2. with skip BatchNorm", model="vgg", weights=None,
                                 mode="frozen", skip_batchnorm=True),
}
DEFAULT_CONFIGS = ("hed_frozen", "random_frozen", "hed_finetune", "random_full", "unet_scratch",
                   "hed_finetune_noelastic", "hed_finetune_fp32", "hed_finetune_long")


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _scores(cm: Any) -> dict[str, float]:
    from vggunet.metrics import scores_from_confusion

    s = scores_from_confusion(cm)
    return {
        "pixel_error": round(float(s["pixel_error"]), 5),
        "membrane_dice": round(float(s["per_class_dice"][0]), 5),
        "cell_dice": round(float(s["per_class_dice"][1]), 5),
        "membrane_iou": round(float(s["per_class_iou"][0]), 5),
        "cell_iou": round(float(s["per_class_iou"][1]), 5),
        "mean_iou": round(float(s["mean_iou"]), 5),
    }


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


def resolve_config(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """A configuration with the run-wide settings (budget, learning rates, ...) filled in.

    Args:
        name: a key of `CONFIGS`.
        args: the parsed command line.

    Returns:
        The configuration dict, with `steps`, `batch`, `crop`, learning rates and so on.
    """
    cfg = {"name": name, "augment": BASE_AUGMENT, "precision": "auto",
           "decoder_batchnorm": bool(args.decoder_batchnorm),
           "skip_batchnorm": bool(args.skip_batchnorm), "long": False, **CONFIGS[name]}
    cfg["steps"] = args.long_steps if cfg["long"] else args.steps
    cfg["crop"] = (args.long_crop or args.crop) if cfg["long"] else args.crop
    cfg.update(batch=args.batch, epochs=args.long_epochs if cfg["long"] else args.epochs,
               phase1_fraction=args.phase1_fraction, unfreeze=args.unfreeze,
               bn_momentum=args.bn_momentum, recalibrate_bn=args.recalibrate_bn or None,
               decoder_filters=args.decoder_filters, lr_decay_last=args.lr_decay_last,
               curve=args.curve, loss=args.loss, tag=args.tag, lr_schedule=args.lr_schedule,
               mirror_pad=args.mirror_pad)
    if cfg["mode"] == "frozen":
        cfg["lr"] = args.lr_frozen
    elif cfg["mode"] == "finetune":
        cfg["lr"] = args.lr_frozen
        cfg["lr2"] = args.lr_finetune
    else:
        cfg["lr"] = args.lr_lab if cfg["model"] == "lab" else args.lr_full
    if cfg["model"] == "lab":
        cfg["decoder_batchnorm"] = cfg["skip_batchnorm"] = False  # the lab model has no BN
        cfg["recalibrate_bn"] = cfg["decoder_filters"] = None
        cfg["precision"] = "float32"  # build_unet takes the global policy: float32 here
    return cfg


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


def held_out_arrays(held_out: list[Any], scale: str) -> tuple[Any, Any]:
    """The held-out images and masks as arrays, scaled like the training data.

    Args:
        held_out: `(image_path, mask_path)` pairs.
        scale: "raw" ([0, 255]) or "unit" ([0, 1]).

    Returns:
        `(images (N, H, W, 1) float32, masks (N, H, W) class indices)`.
    """
    import numpy as np

    from vggunet.data import load_image, load_mask

    images = np.stack([load_image(p, channels=1) for p, _ in held_out])
    if scale == "unit":
        images = images / np.float32(255.0)
    masks = np.stack([load_mask(m, "binary", num_classes=2) for _, m in held_out])
    return images, masks


def held_out_curve(held_out: list[Any], scale: str, *, steps_per_epoch: int) -> Any:
    """A Keras callback scoring the held-out images after every epoch (the learning curve).

    Runs after vggunet's own callbacks (BatchNorm re-estimation, checkpoint), so it scores what
    `last.keras` holds. Its own time is kept in `eval_s` and left out of the training wall time.

    Args:
        held_out: `(image_path, mask_path)` pairs.
        scale: "raw" or "unit" input scaling (as the training data).
        steps_per_epoch: training steps per epoch (for the step column).

    Returns:
        The callback; `points` holds one dict per epoch: step, training wall seconds so far,
        plain held-out scores.
    """
    import keras
    import numpy as np

    from vggunet.metrics import confusion_matrix

    images, masks = held_out_arrays(held_out, scale)

    class _Curve(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.points: list[dict[str, Any]] = []
            self.eval_s = 0.0
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            t0 = time.perf_counter()
            train_s = t0 - self.start - self.eval_s
            out = self.model.predict(images, batch_size=2, verbose=0)
            pred = np.argmax(out, axis=-1)  # argmax is the same on logits and probabilities
            scores = _scores(confusion_matrix(masks, pred, 2))
            self.eval_s += time.perf_counter() - t0
            self.points.append({
                "epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch,
                "train_wall_s": round(train_s, 1),
                "loss": round(float((logs or {}).get("loss", float("nan"))), 5),
                "load": _load()[0], **scores,
            })
            print(f"  held-out after step {self.points[-1]['step']}: pixel error "
                  f"{scores['pixel_error']:.4f} at {train_s:.0f} s of training", flush=True)

    return _Curve()


def score_prediction(model: Any, images: Any, masks: Any, *, from_logits: bool = False,
                     **predict: Any) -> tuple[dict[str, float], Any]:
    """Held-out scores of one way of predicting (`predict_proba` with `predict`'s options).

    Args:
        model: the trained model.
        images: (N, H, W, 1) held-out images, scaled like the training data.
        masks: (N, H, W) true class indices.
        from_logits: the model outputs logits (the lab model).
        **predict: `predict_proba` options, e.g. `tta=True`, `mirror_pad=64`.

    Returns:
        `(scores, predicted class indices (N, H, W))`.
    """
    import numpy as np

    from vggunet.metrics import confusion_matrix
    from vggunet.predict import predict_proba

    proba = predict_proba(model, images, batch_size=2, from_logits=from_logits, **predict)
    pred = np.argmax(proba, axis=-1)
    return _scores(confusion_matrix(masks, pred, 2)), pred


def mirror_scores(model: Any, images: Any, masks: Any, mirror_pad: int, *,
                  tta: bool, from_logits: bool = False) -> dict[str, Any]:
    """Held-out scores with the U-Net paper's mirrored border context (`mirror_pad`).

    Args:
        model: the trained model.
        images: (N, H, W, 1) held-out images, scaled like the training data.
        masks: (N, H, W) true class indices.
        mirror_pad: mirrored pixels added on each side (`predict_proba(mirror_pad=...)`).
        tta: also score mirror padding together with the 8-fold TTA.
        from_logits: the model outputs logits (the lab model).

    Returns:
        `{"mirror_pad": N, "mirror": scores[, "tta_mirror": scores]}`.
    """
    out: dict[str, Any] = {"mirror_pad": mirror_pad}
    for key, with_tta in (("mirror", False), ("tta_mirror", True)):
        if with_tta and not tta:
            continue
        out[key], _ = score_prediction(model, images, masks, from_logits=from_logits,
                                       tta=with_tta, mirror_pad=mirror_pad)
    return out


def error_breakdown(masks: Any, pred: Any, border: int = 32) -> dict[str, float]:
    """Where the pixel errors sit: on the labels' class edges, and near the image border.

    A pixel is on a class edge when its 3×3 neighbourhood in the label holds more than one
    class (the 1-px band on both sides of every membrane outline).

    Args:
        masks: (N, H, W) true class indices.
        pred: (N, H, W) predicted class indices.
        border: width in pixels of the image-border band.

    Returns:
        `edge_share` (pixels on class edges), `edge_error` / `off_edge_error` (error rate on /
        off them), `edge_error_share` (share of all errors on them), `border_share`,
        `border_error` / `interior_error` (error rate within / beyond `border` px of the edge).
    """
    import numpy as np
    from scipy import ndimage

    masks, pred = np.asarray(masks), np.asarray(pred)
    wrong = masks != pred
    edge = np.stack([ndimage.grey_dilation(m, size=3) != ndimage.grey_erosion(m, size=3)
                     for m in masks])
    height, width = masks.shape[1:]
    yy, xx = np.mgrid[:height, :width]
    near = np.minimum(np.minimum(yy, xx), np.minimum(height - 1 - yy, width - 1 - xx)) < border
    near = np.broadcast_to(near, masks.shape)

    def rate(where: Any) -> float:
        return round(float(wrong[where].mean()), 5) if where.any() else float("nan")

    return {
        "edge_share": round(float(edge.mean()), 5), "edge_error": rate(edge),
        "off_edge_error": rate(~edge),
        "edge_error_share": round(float(wrong[edge].sum() / max(1, wrong.sum())), 5),
        "border_px": border, "border_share": round(float(near.mean()), 5),
        "border_error": rate(near), "interior_error": rate(~near),
    }


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
    from vggunet.evaluate import evaluate
    from vggunet.training import finetune, train

    load_start = _load()
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
    out_dir = run_dir(cfg, seed)
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
    common = dict(out_dir=out_dir, steps_per_epoch=steps_per_epoch, loss=cfg["loss"],
                  metrics=("accuracy",), monitor="loss", tensorboard=False, verbose=2,
                  callbacks=callbacks, recalibrate_bn=cfg["recalibrate_bn"],
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
    train_cpu = time.process_time() - cpu0
    load_after_train = _load()

    # Plain scores through the public evaluate(); TTA scores through predict_proba(tta=True).
    val_ds = make_dataset(pairs=held_out, num_classes=2, mask_format="binary", channels=1,
                          scale=scale, batch_size=2, shuffle=False)
    plain = evaluate(model, val_ds, num_classes=2, class_names=CLASS_NAMES, verbose=False)
    figures: dict[str, Any] = {"plain": _scores(plain["confusion_matrix"])}
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
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    return {
        "config": cfg["name"], "label": cfg["label"], "seed": seed,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "model": "build_unet" if cfg["model"] == "lab" else "build_vgg_unet('vgg16')",
        "weights": "HED (BSDS500)" if cfg["weights"] == "hed" else "random",
        "mode": cfg["mode"], "phases": phases, "augment": cfg["augment"],
        "precision": cfg["precision"], "decoder_batchnorm": cfg["decoder_batchnorm"],
        "skip_batchnorm": cfg["skip_batchnorm"], "bn_momentum": cfg["bn_momentum"],
        "recalibrate_bn": cfg["recalibrate_bn"], "decoder_filters": cfg["decoder_filters"],
        "lr_decay_last": cfg["lr_decay_last"], "lr_schedule": cfg["lr_schedule"],
        "loss": cfg["loss"],
        "curve": curve.points if curve is not None else None,
        "lr": cfg["lr"], "lr2": cfg.get("lr2"), "steps": epochs * steps_per_epoch,
        "batch": cfg["batch"], "crop": cfg["crop"], "trainable_params": trainable,
        "train_wall_s": round(train_wall, 1), "train_cpu_s": round(train_cpu, 1),
        "s_per_step": round(train_wall / max(1, epochs * steps_per_epoch), 3),
        "eval": eval_wall, "load_start": load_start, "load_after_train": load_after_train,
        "load_end": _load(), "stopped_reason": result.stopped_reason,
        "final_loss": round(float(result.history["loss"][-1]), 5) if result.history.get("loss")
        else None,
        **figures,
    }


def _read(path: Path) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    return {"runs": {}}


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _fmt_spread(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f}"
    return f"{sum(values) / len(values):.4f} ({min(values):.4f}–{max(values):.4f})"


def render_table(results: dict[str, Any]) -> str:
    """The markdown body of BENCHMARKS.md's issue-5 section from the results file.

    Args:
        results: the parsed results JSON.

    Returns:
        Markdown: one row per (configuration, seed), TTA columns, and the per-config spread
        between seeds.
    """
    runs = list(results["runs"].values())
    order = {name: i for i, name in enumerate(CONFIGS)}
    runs.sort(key=lambda r: (order.get(r["config"], 99), r["seed"]))
    lines = [
        "| config | encoder | decoder norm | training (Adam lr) | augment | precision | seed | "
        "pixel error | membrane Dice / IoU | cell Dice / IoU | mean IoU | pixel error, TTA | "
        "mean IoU, TTA | pixel error, mirror pad (with TTA) | train wall (s/step) | "
        "load avg start→end |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        p, t = r["plain"], r.get("tta")
        if r["model"] == "build_unet":
            norm = "– (lab model)"
        else:
            norm = {(False, False): "none", (True, False): "BN after convs",
                    (True, True): "BN after convs + on skips",
                    (False, True): "BN on skips"}[(bool(r["decoder_batchnorm"]),
                                                   bool(r.get("skip_batchnorm")))]
            if norm != "none":
                # Rows run before `bn_momentum` existed used Keras's default 0.99.
                norm += f", momentum {r.get('bn_momentum', 0.99):g}"
                if r.get("recalibrate_bn"):
                    norm += f", re-estimated on {r['recalibrate_bn']} batches per epoch"
            if r.get("decoder_filters"):
                norm += f"; decoder {','.join(str(f) for f in r['decoder_filters'])}"
        lr = f"{r['lr']:g}" + (f" then {r['lr2']:g}" if r.get("lr2") else "")
        if r.get("lr_schedule") == "cosine":
            lr += ", cosine decay over the phase"
        elif r.get("lr_decay_last"):
            lr += f", ×0.1 for the last {r['lr_decay_last']:.0%} of epochs"
        lr += f"; {r['crop']}² crops, batch {r['batch']}"
        # Rows from before `--loss` existed trained with CE + Dice.
        lr += f"; loss {r.get('loss', 'ce+dice').upper().replace('DICE', 'Dice')}"
        tta = f"{t['pixel_error']:.4f} | {t['mean_iou']:.3f}" if t else "– | –"
        mirror = "–"
        if r.get("mirror"):
            mirror = f"{r['mirror_pad']} px: {r['mirror']['pixel_error']:.4f}"
            if r.get("tta_mirror"):
                mirror += f" ({r['tta_mirror']['pixel_error']:.4f})"
        precision = "mixed bf16" if r["precision"] == "auto" else r["precision"]
        lines.append(
            f"| `{r['config']}`{' ' + r['tag'] if r.get('tag') else ''} {r['label']} | {r['weights']} | {norm} | {r['phases']}, {lr} | "
            f"{r['augment']} | {precision} | {r['seed']} | {p['pixel_error']:.4f} | "
            f"{p['membrane_dice']:.3f} / {p['membrane_iou']:.3f} | "
            f"{p['cell_dice']:.3f} / {p['cell_iou']:.3f} | {p['mean_iou']:.3f} | {tta} | "
            f"{mirror} | "
            f"{r['train_wall_s']:.0f} s ({r['s_per_step']:.2f}) | "
            f"{r['load_start'][0]:.1f}→{r['load_end'][0]:.1f} |"
        )
    by_config: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        variant = r["config"] if r.get("bn_momentum") is None else \
            f"{r['config']} (momentum {r['bn_momentum']:g})"
        if r.get("tag"):
            variant += f" {r['tag']}"
        by_config.setdefault(variant, []).append(r)
    spread = [(name, rs) for name, rs in by_config.items() if len(rs) > 1]
    if spread:
        lines += ["", "Seed spread (mean, min–max over seeds):", "",
                  "| config | seeds | pixel error | pixel error, TTA | mean IoU |",
                  "|---|---|---|---|---|"]
        for name, rs in spread:
            tta_values = [r["tta"]["pixel_error"] for r in rs if r.get("tta")]
            lines.append(
                f"| `{name}` | {', '.join(str(r['seed']) for r in rs)} | "
                f"{_fmt_spread([r['plain']['pixel_error'] for r in rs])} | "
                f"{_fmt_spread(tta_values) if tta_values else '–'} | "
                f"{_fmt_spread([r['plain']['mean_iou'] for r in rs])} |"
            )
    located = [r for r in runs if r.get("errors")]
    if located:
        lines += ["", "Where the held-out errors sit (plain prediction; a class-edge pixel has "
                  "both classes in its 3×3 label neighbourhood):", "",
                  "| run | pixels on class edges | error on / off them | errors on them | "
                  "error within / beyond the border band |", "|---|---:|---:|---:|---:|"]
        for r in located:
            e = r["errors"]
            name = f"`{r['config']}`" + (f" {r['tag']}" if r.get("tag") else "")
            lines.append(f"| {name} seed {r['seed']} | {e['edge_share']:.1%} | "
                         f"{e['edge_error']:.3f} / {e['off_edge_error']:.4f} | "
                         f"{e['edge_error_share']:.0%} | {e['border_error']:.4f} / "
                         f"{e['interior_error']:.4f} ({e['border_px']} px) |")
    for r in runs:
        if not r.get("curve"):
            continue
        name = f"`{r['config']}`" + (f" {r['tag']}" if r.get("tag") else "")
        lines += ["", f"Held-out learning curve of {name} (seed {r['seed']}; BatchNorm statistics "
                  "as checkpointed; training wall time without the scoring):", "",
                  "| step | training wall (min) | pixel error | membrane Dice | mean IoU | "
                  "training loss |", "|---:|---:|---:|---:|---:|---:|"]
        for c in r["curve"]:
            lines.append(f"| {c['step']} | {c['train_wall_s'] / 60:.1f} | {c['pixel_error']:.4f} | "
                         f"{c['membrane_dice']:.3f} | {c['mean_iou']:.3f} | {c['loss']:.3f} |")
    return "\n".join(lines)


TABLE_BEGIN = "<!-- transfer_isbi.py --table: begin -->"
TABLE_END = "<!-- transfer_isbi.py --table: end -->"


def update_benchmarks_md(table: str, path: Path = REPO / "BENCHMARKS.md") -> None:
    """Writes the results table into BENCHMARKS.md's issue-5 section, leaving the rest as it is.

    Inside the section (from its `## Transfer learning on ISBI 2012 (issue 5)` heading to the
    next `## ` heading) only the text between the `TABLE_BEGIN` and `TABLE_END` markers is
    replaced, so the prose around the table is kept; a missing section is appended with the
    markers.

    Args:
        table: the markdown table (see `render_table`).
        path: the BENCHMARKS.md file.

    Returns:
        None.
    """
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    marked = f"{TABLE_BEGIN}\n{table.strip()}\n{TABLE_END}"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{marked}\n"
    else:
        end = text.find("\n## ", start + len(SECTION))
        end = len(text) if end < 0 else end + 1
        section = text[start:end]
        if TABLE_BEGIN in section and TABLE_END in section:
            head, rest = section.split(TABLE_BEGIN, 1)
            section = head + marked + rest.split(TABLE_END, 1)[1]
        else:
            section = section.rstrip("\n") + f"\n\n{marked}\n" + ("\n" if end < len(text)
                                                                    else "")
        text = text[:start] + section + text[end:]
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark configurations (each in a subprocess) or renders the table.

    Args:
        argv: command-line arguments (default `sys.argv[1:]`).

    Returns:
        The exit status: 0, or 1 when a configuration failed.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    return _main(parser, args, argv)


def build_parser() -> argparse.ArgumentParser:
    """The command line of the benchmark (shared by `main` and the tests).

    Returns:
        The argument parser.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                        help=f"comma-separated, from: {', '.join(CONFIGS)}")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1")
    parser.add_argument("--steps", type=int, default=300, help="common budget (training steps)")
    parser.add_argument("--long-steps", type=int, default=900, help="budget of *_long configs")
    parser.add_argument("--crop", type=int, default=256, help="square training crop size")
    parser.add_argument("--long-crop", type=int, default=None,
                        help="crop size of *_long configs (default: --crop)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=6,
                        help="checkpoint epochs the steps are split into")
    parser.add_argument("--phase1-fraction", type=float, default=0.25,
                        help="share of a finetune budget spent with the encoder frozen")
    parser.add_argument("--unfreeze", default="top2", help="phase-2 unfreeze spec of finetune")
    parser.add_argument("--lr-frozen", type=float, default=1e-3,
                        help="Adam lr while the encoder is frozen (decoder only)")
    parser.add_argument("--lr-finetune", type=float, default=1e-4,
                        help="Adam lr of finetune's phase 2")
    parser.add_argument("--lr-full", type=float, default=1e-4,
                        help="Adam lr of the all-trainable VGG U-Net")
    parser.add_argument("--lr-lab", type=float, default=1e-3, help="Adam lr of build_unet")
    parser.add_argument("--decoder-batchnorm", type=int, choices=(0, 1), default=1,
                        help="decoder BatchNorm for VGG configs that do not fix it")
    parser.add_argument("--skip-batchnorm", type=int, choices=(0, 1), default=0,
                        help="BatchNorm on skips and bottleneck input, for VGG configs that do "
                             "not fix it")
    parser.add_argument("--bn-momentum", type=float, default=0.9,
                        help="momentum of the decoder-side BatchNorms (vggunet's default 0.9; "
                             "the rows before it was introduced used Keras's 0.99)")
    parser.add_argument("--recalibrate-bn", type=int, default=0, metavar="N",
                        help="re-estimate BatchNorm statistics on N training batches before "
                             "each checkpoint (train/finetune recalibrate_bn; 0 = off)")
    parser.add_argument("--decoder-filters", type=lambda t: tuple(int(v) for v in t.split(",")),
                        default=None, metavar="N,N,...",
                        help="decoder widths of the VGG configs (default: build_vgg_unet's)")
    parser.add_argument("--long-epochs", type=int, default=None,
                        help="checkpoint epochs of *_long configs (default --epochs)")
    parser.add_argument("--lr-decay-last", type=float, default=0.0,
                        help="share of the epochs run at a tenth of the (last phase's) lr")
    parser.add_argument("--lr-schedule", default="constant", choices=("constant", "cosine"),
                        help="learning rate over the last phase (train/finetune lr_schedule): "
                             "constant (with --lr-decay-last a step decay), or cosine from its "
                             "rate towards 0, set per epoch")
    parser.add_argument("--curve", action="store_true",
                        help="score the held-out images after every epoch (learning curve; its "
                             "time is left out of the training wall time)")
    parser.add_argument("--loss", default="ce+dice", choices=("ce+dice", "ce", "dice", "focal"),
                        help="training loss (vggunet.losses name)")
    parser.add_argument("--tag", default="",
                        help="a name for this variant (kept apart from runs of the same config)")
    parser.add_argument("--no-tta", action="store_true", help="skip the TTA evaluation")
    parser.add_argument("--mirror-pad", type=int, default=0, metavar="N",
                        help="also score with N mirrored pixels of border context "
                             "(predict_proba(mirror_pad=N)), plain and with TTA")
    parser.add_argument("--rescore", action="store_true",
                        help="score the finished runs named by --configs/--seeds/--tag again "
                             "from their last.keras (where the errors sit; with --mirror-pad "
                             "also mirror-padded) and merge the figures into their rows; no "
                             "training")
    parser.add_argument("--tta-configs", default="all",
                        help="configs also scored with TTA (8 forward passes per image, the "
                             "costliest part of scoring on a busy CPU): 'all' or a list")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="results JSON (merged into)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 12 steps of batch 2 on 128² crops, no TTA")
    parser.add_argument("--table", action="store_true",
                        help="render the results into BENCHMARKS.md and print the table")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--one-out", default=None, help=argparse.SUPPRESS)
    return parser


def result_key(name: str, seed: int, args: argparse.Namespace) -> str:
    """The results-file key of one run: configuration, seed, BatchNorm momentum and tag."""
    # Rows from before `--bn-momentum` (Keras's 0.99) keep their keys; later ones are told
    # apart by their momentum.
    key = f"{name}@seed{seed}@bnm{args.bn_momentum:g}"
    return key + (f"@{args.tag}" if args.tag else "")


def rescore(args: argparse.Namespace, names: list[str], seeds: list[int], out: Path) -> int:
    """Scores finished runs again from their `last.keras` and merges the figures into their rows.

    Always adds `errors` (`error_breakdown` of the plain prediction); with `--mirror-pad N`
    also the mirror-padded scores (plain, and with TTA where the row has TTA scores).

    Args:
        args: the parsed command line (locates the runs; `--mirror-pad` adds mirror scores).
        names: configurations.
        seeds: seeds.
        out: the results file.

    Returns:
        0, or 1 when a run's checkpoint or row is missing.
    """
    from vggunet.saving import load_model

    failed = 0
    for seed in seeds:
        for name in names:
            cfg = resolve_config(name, args)
            key = result_key(name, seed, args)
            checkpoint = run_dir(cfg, seed) / "checkpoints" / "last.keras"
            row = _read(out).get("runs", {}).get(key)
            if row is None or not checkpoint.is_file():
                print(f"=== {key}: no results row or no {checkpoint}; skipped", flush=True)
                failed += 1
                continue
            _, held_out = _split(Path(args.data))
            scale = "unit" if cfg["model"] == "lab" else "raw"
            model = load_model(checkpoint, compile=False)
            from_logits = cfg["model"] == "lab"
            images, masks = held_out_arrays(held_out, scale)
            _, pred = score_prediction(model, images, masks, from_logits=from_logits)
            figures: dict[str, Any] = {"errors": error_breakdown(masks, pred)}
            if args.mirror_pad > 0:
                figures.update(mirror_scores(model, images, masks, args.mirror_pad,
                                             tta=bool(row.get("tta")), from_logits=from_logits))
            results = _read(out)
            results["runs"][key].update(figures)
            _write(out, results)
            e = figures["errors"]
            print(f"=== {key}: {e['edge_error_share']:.0%} of the errors on class edges "
                  f"({e['edge_share']:.1%} of the pixels, error {e['edge_error']:.3f} there, "
                  f"{e['off_edge_error']:.4f} elsewhere)", flush=True)
            if "mirror" in figures:
                print(f"=== {key}: mirror_pad {args.mirror_pad}: pixel error "
                      f"{figures['mirror']['pixel_error']:.4f}"
                      + (f", with TTA {figures['tta_mirror']['pixel_error']:.4f}"
                         if "tta_mirror" in figures else ""), flush=True)
    return 1 if failed else 0


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace,
          argv: list[str] | None) -> int:
    if args.long_epochs is None:
        args.long_epochs = args.epochs
    if args.quick:
        args.steps, args.long_steps, args.batch, args.crop, args.epochs = 12, 12, 2, 128, 2
        args.long_crop = None
        args.no_tta = True
    out = Path(args.out)

    if args.table:
        table = render_table(_read(out))
        update_benchmarks_md(table)
        print(table)
        return 0

    if args.one:  # the child: one configuration, one seed
        cfg = resolve_config(args.one, args)
        tta = not args.no_tta and (args.tta_configs == "all"
                                   or args.one in args.tta_configs.split(","))
        figures = run_one(cfg, int(args.seeds), Path(args.data), tta=tta)
        Path(args.one_out).write_text(json.dumps(figures, indent=2))
        return 0

    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; valid: {', '.join(CONFIGS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.rescore:
        return rescore(args, names, seeds, out)
    results = _read(out)
    results["meta"] = {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
        "split": "train 0-23, held out 24-29 (full 512x512)", "data": str(args.data),
    }
    failed = 0
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    for seed in seeds:
        for name in names:
            with tempfile.TemporaryDirectory() as tmp:
                child_out = Path(tmp) / "one.json"
                cmd = [sys.executable, __file__, *passthrough, "--one", name,
                       "--seeds", str(seed), "--one-out", str(child_out)]
                print(f"=== {name} seed {seed} (load {_load()}) ===", flush=True)
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, cwd=REPO)
                if proc.returncode != 0 or not child_out.is_file():
                    print(f"=== {name} seed {seed} FAILED (exit {proc.returncode})", flush=True)
                    failed += 1
                    continue
                figures = json.loads(child_out.read_text())
            figures["command"] = " ".join([".venv/bin/python", "benchmarks/transfer_isbi.py",
                                           *passthrough])
            figures["total_wall_s"] = round(time.perf_counter() - t0, 1)
            results = _read(out)  # another invocation may have merged meanwhile
            key = result_key(name, seed, args)
            if args.tag:
                figures["tag"] = args.tag
            results.setdefault("runs", {})[key] = figures
            _write(out, results)
            print(f"=== {name} seed {seed}: pixel error {figures['plain']['pixel_error']:.4f}"
                  f" (TTA {figures.get('tta', {}).get('pixel_error', float('nan')):.4f}), "
                  f"train {figures['train_wall_s']:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
