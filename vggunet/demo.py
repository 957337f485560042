"""The `vggunet demo`: a one-minute, offline, end-to-end tour on the bundled ISBI sample.

Steps: build a VGG16 U-Net (ImageNet encoder when its weights are in the Keras cache, else a
random encoder), print its layer table, fine-tune in two phases on 6 sample tiles, evaluate on
the other 2, and write a training-curve PNG, a prediction-grid PNG and a metrics JSON.

The sample itself (`vggunet/sample/isbi/`) is made by :func:`make_sample` from the ISBI 2012
training set; see `vggunet/sample/README.md`.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

from vggunet.console import Say, resolve_say
from vggunet.errors import MissingFileError
from vggunet.fileio import atomic_write, make_folder

SAMPLE_DIR = Path(__file__).resolve().parent / "sample" / "isbi"
"""The bundled sample: `image/N.png` (128×128 grey EM tiles) and `label/N.png` (0/255)."""

SAMPLE_SIZE = 128
SAMPLE_COUNT = 8
CLASS_NAMES = ("membrane", "cell")

# Measured on a 2-core CPU: ~2.7 s per epoch (6 tiles at 64×64, validation on 2 tiles at 128², a
# checkpoint save) with the half-width decoder; 10 + 12 epochs fine-tune in about one minute.
DEFAULT_PHASE1_EPOCHS = 10
DEFAULT_PHASE2_EPOCHS = 12


def make_sample(src: str | os.PathLike, dst: str | os.PathLike = SAMPLE_DIR, *,
                count: int = SAMPLE_COUNT, size: int = SAMPLE_SIZE) -> list[Path]:
    """Regenerates the bundled sample from the ISBI 2012 training set.

    Images `0..count-1` of `src/image/` are downscaled to `size`×`size` (Lanczos), their labels in
    `src/label/` with nearest-neighbour resampling (so they stay 0/255), and written as
    optimised 8-bit PNGs to `dst/image/` and `dst/label/`.

    Args:
        src: the ISBI folder holding `image/N.png` and `label/N.png` (512×512).
        dst: where to write the sample (default: the package's `sample/isbi`).
        count: how many consecutive sections to take.
        size: output side length in pixels.

    Returns:
        The written files.

    Example:
        >>> from vggunet.demo import make_sample
        >>> make_sample("/work/shared/data/isbi2012")  # doctest: +SKIP
    """
    from PIL import Image

    src, dst = Path(src), Path(dst)
    for sub in ("image", "label"):
        if not (src / sub).is_dir():
            raise MissingFileError(f"{src / sub} not found; src must hold image/ and label/")
    written: list[Path] = []
    for i in range(count):
        for sub, resample in (("image", Image.Resampling.LANCZOS),
                              ("label", Image.Resampling.NEAREST)):
            path = src / sub / f"{i}.png"
            if not path.is_file():
                raise MissingFileError(f"{path} not found")
            img = Image.open(path).convert("L").resize((size, size), resample)
            save = functools.partial(img.save, format="PNG", optimize=True)
            written.append(atomic_write(dst / sub / f"{i}.png", save))
    return written


def sample_pairs(root: str | os.PathLike = SAMPLE_DIR) -> list[tuple[Path, Path]]:
    """The (image, label) paths of the sample, in section order.

    Args:
        root: a folder with `image/` and `label/` (default: the bundled sample).

    Returns:
        The pairs.
    """
    root = Path(root)
    images = sorted((root / "image").glob("*.png"), key=lambda p: int(p.stem))
    if not images:
        raise MissingFileError(f"no sample images under {root / 'image'}; reinstall vggunet "
                                "or regenerate it with vggunet.demo.make_sample")
    return [(p, root / "label" / p.name) for p in images]


def _imagenet_cached(backbone: str) -> bool:
    from vggunet.models.registry import get_encoder_spec
    from vggunet.models.weights import keras_cache_dir

    return (keras_cache_dir() / get_encoder_spec(backbone).weights_file).is_file()


DEMO_DECODER_FILTERS = (256, 128, 64, 32, 32)
DEMO_BOTTLENECK_FILTERS = 256


def build_demo_model(backbone: str = "vgg16", say: Say | None = None, *,
                     decoder_filters: tuple[int, ...] = DEMO_DECODER_FILTERS,
                     bottleneck_filters: int = DEMO_BOTTLENECK_FILTERS) -> Any:
    """A 2-class U-Net with ImageNet encoder weights when cached, else a random encoder.

    Never downloads: the demo must run offline. Says which in one line. The decoder is half
    the default width (the full VGG16 encoder is kept) so that CPU fine-tuning stays short.

    Args:
        backbone: encoder name.
        say: where the one-line note goes (default: print).
        decoder_filters, bottleneck_filters: see `build_vgg_unet`.

    Returns:
        The model.
    """
    say = resolve_say(True, say)
    from vggunet.models.unet import build_vgg_unet
    from vggunet.models.weights import ImagenetWeightsUnavailable

    kwargs = dict(input_shape=(None, None, 3), num_classes=2, precision="float32",
                  decoder_filters=decoder_filters, bottleneck_filters=bottleneck_filters)
    if _imagenet_cached(backbone):
        try:
            model = build_vgg_unet(backbone, weights="imagenet", **kwargs)
            say(f"encoder: {backbone} with ImageNet weights (from the Keras cache)")
            return model
        except ImagenetWeightsUnavailable:
            pass
    from vggunet.models.registry import get_encoder_spec
    from vggunet.models.weights import keras_cache_dir

    spec = get_encoder_spec(backbone)
    say(f"encoder: {backbone} with RANDOM weights (ImageNet weights not cached: copy "
        f"{spec.weights_file} into {keras_cache_dir()} to use them; expect lower scores)")
    return build_vgg_unet(backbone, weights=None, **kwargs)


def run_demo(out_dir: str | os.PathLike = "runs/demo", *,
             phase1_epochs: int = DEFAULT_PHASE1_EPOCHS,
             phase2_epochs: int = DEFAULT_PHASE2_EPOCHS,
             crop: int | None = 64, batch_size: int = 4, seed: int = 0,
             sample_dir: str | os.PathLike = SAMPLE_DIR,
             say: Say | None = None, verbose: bool = True) -> dict[str, Path]:
    """Runs the demo end to end.

    Args:
        out_dir: output folder (created).
        phase1_epochs: epochs with the encoder frozen.
        phase2_epochs: epochs with the top two encoder blocks unfrozen.
        crop: random training crop side (None: full 128×128 tiles).
        batch_size: training batch size.
        seed: seed for data order, crops and flips.
        sample_dir: a folder with `image/` and `label/` (default: the bundled sample).
        say: where progress lines and the layer table go (default: print).
        verbose: False silences them (unless `say` is given).

    Returns:
        `{"curve": png, "predictions": png, "metrics": json, "model": keras}` paths.
    """
    import keras

    from vggunet.evaluate import evaluate
    from vggunet.plots import plot_history
    from vggunet.training import finetune
    from vggunet.transfer.inspect import format_layers

    start = time.perf_counter()
    say = resolve_say(verbose, say)
    out = Path(out_dir)
    make_folder(out, what="the demo's output folder ")
    keras.utils.set_random_seed(seed)
    train_ds, val_ds = _demo_datasets(sample_dir, crop, batch_size, seed, say)
    model = build_demo_model("vgg16", say=say)
    say(format_layers(model))

    say(f"fine-tuning: phase 1 {phase1_epochs} epochs (encoder frozen), phase 2 "
        f"{phase2_epochs} epochs (top 2 encoder blocks unfrozen)")
    result = finetune(
        model, train_ds, val_ds, out_dir=out, phase1_epochs=phase1_epochs,
        phase2_epochs=phase2_epochs, phase1_lr=1e-3, phase2_lr=1e-4, unfreeze="top2",
        loss="ce+dice", tensorboard=False, verbose=0,
    )
    say(f"trained {result.epochs_completed} epochs in {result.wall_time_s:.0f} s "
        f"(best {result.monitor} {_fmt(result.best_value)})")

    paths = {"curve": out / "training_curve.png", "predictions": out / "predictions.png",
             "metrics": out / "metrics.json"}
    scores = evaluate(model, val_ds, num_classes=2, class_names=list(CLASS_NAMES),
                      out_json=paths["metrics"], verbose=False)
    say("validation: " + ", ".join(
        f"{k} {_fmt(scores[k])}" for k in ("mean_iou", "mean_dice", "pixel_accuracy",
                                           "pixel_error") if k in scores))
    plot_history(result.history, paths["curve"], phase_boundaries=result.phase_boundaries)
    images, masks = next(iter(val_ds))
    write_prediction_grid(model, images, masks, paths["predictions"])
    if result.best_checkpoint:
        paths["model"] = Path(result.best_checkpoint)
    for key, path in paths.items():
        say(f"wrote {key}: {path}")
    say(f"demo done in {time.perf_counter() - start:.0f} s")
    return paths


def _demo_datasets(sample_dir: str | os.PathLike, crop: int | None, batch_size: int,
                   seed: int, say: Say) -> tuple[Any, Any]:
    """Training (6 tiles, random crops and flips) and validation (2 tiles) pipelines."""
    from vggunet.data import make_dataset

    pairs = sample_pairs(sample_dir)
    train_pairs, val_pairs = pairs[:-2], pairs[-2:]
    say(f"data: {len(train_pairs)} training + {len(val_pairs)} validation ISBI 2012 tiles "
        f"from {Path(sample_dir)}")
    common = dict(num_classes=2, mask_format="binary", channels=3)
    train_ds = make_dataset(pairs=train_pairs, crop=(crop, crop) if crop else None, flip=True,
                            batch_size=batch_size, shuffle=True, seed=seed, cache=True,
                            **common)
    val_ds = make_dataset(pairs=val_pairs, batch_size=len(val_pairs), shuffle=False,
                          cache=True, **common)
    return train_ds, val_ds


def write_prediction_grid(model: Any, images: Any, masks: Any,
                          path: str | os.PathLike) -> Path:
    """Predicts a batch and writes the image / true mask / predicted mask grid.

    Scores become labels with `scores_to_labels`, so a one-channel sigmoid model is thresholded
    (at 0.5, or 0 for logits) rather than argmax-ed to all zeros.

    Args:
        model: a segmentation model mapping (B, H, W, C) to (B, H, W, K).
        images: (B, H, W, C) raw pixels.
        masks: (B, H, W) or (B, H, W, 1) true labels.
        path: the PNG to write.

    Returns:
        The path written.
    """
    import numpy as np

    from vggunet.evaluate import output_is_logits
    from vggunet.inference.labels import scores_to_labels
    from vggunet.plots import plot_predictions

    images, masks = np.asarray(images), np.asarray(masks)
    scores = np.asarray(model.predict(images, verbose=0))
    preds = scores_to_labels(scores, from_logits=output_is_logits(model))
    return plot_predictions(images, masks, preds, path, max_samples=len(images))


def _fmt(value: Any) -> str:
    try:
        return f"{float(value):.4f}"
    except (TypeError, ValueError):
        return str(value)
