"""Inference with vggunet models: probabilities, masks, tiling, test-time augmentation, saving.

Models built by `build_vgg_unet` take raw pixels in [0, 255] of any H×W >= their backbone's
minimum (32 px for most, 75 for Inception; `model.min_input_size`) and return per-pixel
probabilities; this module feeds them images of any size and shape:

* `predict_proba` / `predict_mask` — one image (H, W) / (H, W, C), a batch (B, H, W, C), or a
  list of images of mixed sizes. Grey images are repeated to 3 channels for RGB models, images
  smaller than the model's minimum are reflect-padded and cropped back, fixed-input models
  (the lab U-Net) are tiled with their input size.
* `predict_tiled` — large images in overlapping tiles blended with a smooth window; memory is
  bounded by the tile batch plus one (H, W, K) accumulator.
* `tta=True` — the mean of the probabilities over the 8 dihedral transforms (flips, 90° turns).
* `mirror_pad=N` — the U-Net paper's border trick: the image is extended by N mirrored pixels on
  every side before the forward pass and the prediction cropped back, so border pixels are
  predicted with context instead of the convolutions' zero padding.
* `save_mask_png`, `colorize`, `save_overlay`, `predict_folder` — writing results (atomically).

Scores become class labels through `vggunet.inference.labels.scores_to_labels` (which also
holds the lab's `create_mask`).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

import numpy as np

from vggunet.checks import check_int
from vggunet.errors import PredictionError
from vggunet.inference.labels import scores_to_labels

MIN_SIZE = 32
"""The smallest H or W a `build_vgg_unet` model accepts (its total stride): the default for models
that do not record their own `min_input_size`."""


def _min_size(model: Any) -> int:
    """The smallest H and W `model` takes: its recorded `min_input_size`, else `MIN_SIZE`."""
    return int(getattr(model, "min_input_size", None) or MIN_SIZE)


# --------------------------------------------------------------------------------------------
# Input checking
# --------------------------------------------------------------------------------------------


def _model_input(model: Any) -> tuple[int | None, int | None, int]:
    """(H, W, C) of the model's single image input; H and W are None when any size is accepted."""
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise PredictionError(
            f"predict needs a Keras model with one image input, got {type(model).__name__} with "
            f"{0 if not inputs else len(inputs)} inputs."
        )
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or shape[-1] is None:
        raise PredictionError(
            f"the model input must be (batch, height, width, channels) with known channels, "
            f"got {shape}."
        )
    height, width, channels = shape[1:]
    return (None if height is None else int(height), None if width is None else int(width),
            int(channels))


def _check_finite(image: np.ndarray, what: str = "image") -> None:
    bad = ~np.isfinite(image)
    count = int(bad.sum())
    if count:
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        n_nan = int(np.isnan(image).sum())
        raise PredictionError(
            f"{what} contains {count} non-finite value(s) ({n_nan} NaN, {count - n_nan} inf) "
            f"of {image.size}; the first at index {first}."
        )


def _check_numbers(array: np.ndarray, what: str, reader: str) -> None:
    """Refuses a non-numeric array; a lone string is taken for a path and `reader` suggested."""
    if np.issubdtype(array.dtype, np.number) or array.dtype == bool:
        return
    hint = (f" ({array.item()!r} looks like a path: read the file first, e.g. with {reader})"
            if array.ndim == 0 and array.dtype.kind in "US" else "")
    raise PredictionError(f"{what} must hold numbers, got dtype {array.dtype}{hint}.")


def _prepare(image: Any, channels: int, what: str = "image") -> np.ndarray:
    """Checks one image and returns it as float32 (H, W, channels)."""
    array = np.asarray(image)
    if array.dtype == object:
        raise PredictionError(
            f"{what} is a ragged/object array of shape {array.shape}; pass images of different "
            f"sizes as a list, not as one array."
        )
    _check_numbers(array, what, "vggunet.data.read_image, or use predict_image_file")
    if array.ndim == 2:
        array = array[..., np.newaxis]
    if array.ndim != 3:
        raise PredictionError(
            f"{what} must be (H, W) or (H, W, C), got shape {array.shape}."
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise PredictionError(f"{what} is empty: shape {array.shape}.")
    array = array.astype(np.float32, copy=False)
    _check_finite(array, what)
    got = array.shape[-1]
    if got != channels:
        if got == 1:
            array = np.repeat(array, channels, axis=-1)
        else:
            raise PredictionError(
                f"{what} has {got} channels but the model expects {channels} "
                f"(shape {array.shape}); grey (H, W) or (H, W, 1) images are repeated "
                f"automatically, other channel counts are not converted."
            )
    return array


def _split_input(image: Any) -> tuple[list[Any], str]:
    """Splits the argument of `predict_proba` into images; returns (images, kind)."""
    if isinstance(image, (list, tuple)):
        if not image:
            raise PredictionError("got an empty list of images.")
        return list(image), "list"
    array = np.asarray(image)
    if array.dtype == object:
        raise PredictionError(
            f"got a ragged/object array of shape {array.shape}; pass images of different sizes "
            f"as a list, not as one array."
        )
    if array.ndim == 4:
        if array.shape[0] == 0:
            raise PredictionError(f"got an empty batch: shape {array.shape}.")
        return list(array), "batch"
    return [array], "single"


# --------------------------------------------------------------------------------------------
# Model calls, probabilities, dihedral transforms
# --------------------------------------------------------------------------------------------


def _to_proba(scores: np.ndarray, from_logits: bool) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float32)
    if not from_logits:
        return scores
    if scores.shape[-1] == 1:
        return (1.0 / (1.0 + np.exp(-scores))).astype(np.float32)
    shifted = scores - scores.max(axis=-1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=-1, keepdims=True)
    return shifted


@contextlib.contextmanager
def _quiet_retracing() -> Iterator[None]:
    """Silences TensorFlow's "triggered tf.function retracing" warning for the duration.

    `predict_on_batch` traces its function once per input shape; images of many sizes (folders,
    lists, TTA's swapped H/W, a smaller last tile batch) retrace by design, which is cheaper
    than running the model eagerly but makes TensorFlow log a warning every few calls.
    """
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)


def _run(model: Any, batch: np.ndarray, from_logits: bool) -> np.ndarray:
    """One forward pass on a (B, H, W, C) batch; returns (B, H, W, K) float32 probabilities."""
    with _quiet_retracing():
        out = model.predict_on_batch(np.ascontiguousarray(batch, dtype=np.float32))
    if isinstance(out, (list, tuple, dict)):
        raise PredictionError("the model has several outputs; predict needs one (B, H, W, K).")
    out = np.asarray(out)
    if out.ndim != 4 or out.shape[:3] != batch.shape[:3]:
        raise PredictionError(
            f"the model maps input {batch.shape} to {out.shape}; predict needs an output of the "
            f"input's (B, H, W) with a class axis last."
        )
    return _to_proba(out, from_logits)


# (k, flip): x -> rot90(flip_w(x) if flip else x, k) on the (H, W) axes of a (B, H, W, C) array.
_DIHEDRAL = tuple((k, flip) for flip in (False, True) for k in range(4))


def _forward(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    if flip:
        x = x[:, :, ::-1]
    return np.rot90(x, k, axes=(1, 2))


def _inverse(y: np.ndarray, k: int, flip: bool) -> np.ndarray:
    y = np.rot90(y, -k, axes=(1, 2))
    if flip:
        y = y[:, :, ::-1]
    return y


def _run_tta(model: Any, batch: np.ndarray, tta: bool, from_logits: bool,
             square_only: bool = False) -> np.ndarray:
    """`_run`, averaged over the dihedral transforms when `tta`.

    `square_only` keeps the 4 transforms that do not swap H and W (for fixed non-square inputs).
    """
    if not tta:
        return _run(model, batch, from_logits)
    transforms = [t for t in _DIHEDRAL if not (square_only and t[0] % 2)]
    total = None
    for k, flip in transforms:
        out = _inverse(_run(model, _forward(batch, k, flip), from_logits), k, flip)
        total = out.astype(np.float32, copy=True) if total is None else total + out
    return total / np.float32(len(transforms))


def _pad_to_min(image: np.ndarray, minimum: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pads H and W up to `minimum` (centred); returns the image and its (top, left)."""
    height, width = image.shape[:2]
    pad_h, pad_w = max(0, minimum - height), max(0, minimum - width)
    if not (pad_h or pad_w):
        return image, (0, 0)
    top, left = pad_h // 2, pad_w // 2
    padded = np.pad(image, ((top, pad_h - top), (left, pad_w - left), (0, 0)), mode="reflect")
    return padded, (top, left)


def _check_mirror_pad(mirror_pad: Any) -> int:
    return check_int(mirror_pad, "mirror_pad", minimum=0, error=PredictionError)


def _mirror(image: np.ndarray, pad: int) -> np.ndarray:
    """Extends an (H, W, C) image by `pad` mirrored pixels on every side (edge not repeated)."""
    if not pad:
        return image
    return np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")


# --------------------------------------------------------------------------------------------
# Public prediction API
# --------------------------------------------------------------------------------------------


def predict_proba(model: Any, image: Any, *, tta: bool = False, batch_size: int = 1,
                  from_logits: bool = False, mirror_pad: int = 0) -> Any:
    """Per-pixel class probabilities for one image, a batch, or a list of images.

    Images are raw pixels (the models preprocess inside). Every image is checked: NaN/inf
    values and a channel count other than the model's raise `PredictionError`; a grey image
    (H, W) or (H, W, 1) is repeated to the model's channel count. For models that take any
    H×W, images smaller than the model's minimum (`model.min_input_size`, else 32 px) on a
    side are reflect-padded (centred) to it and the output is cropped back. Models with a
    fixed input size (e.g. the lab U-Net, 96×128) are run through `predict_tiled` with tiles
    of exactly that size, whatever the image's size.

    The output is what the model outputs per pixel (probabilities for `build_vgg_unet`
    models) as float32; with `from_logits=True` a softmax (sigmoid for one channel) is applied
    first, as needed for logit models such as `build_unet`. With `tta=True` probabilities are
    averaged over the 8 flips/90° rotations (see `predict_tiled` for fixed-size models).
    With `mirror_pad=N` each image is extended by N mirrored pixels on every side before the
    forward pass and the output cropped back (the U-Net paper's overlap-tile context), so the
    border pixels see image-like context rather than zeros, for ((H+2N)(W+2N))/(HW) times the
    pixels. It suits models trained on whole images or valid-convolution tiles; a model trained
    on zero-padded random crops has learned zero padding at borders (on ISBI, `mirror_pad=64`
    raised such a model's pixel error by 0.0003-0.0005; BENCHMARKS.md).

    Args:
        model: a Keras model mapping (B, H, W, C) pixels to (B, H, W, K).
        image: (H, W) or (H, W, C) image; (B, H, W, C) batch; or a list of images, which may
            have different sizes (a ragged numpy array is refused: pass a list).
        tta: average over the 8 dihedral transforms.
        batch_size: images per forward pass (same-size images only are stacked).
        from_logits: apply softmax/sigmoid to the model output.
        mirror_pad: pixels of mirrored context added on each side (0 = none).

    Returns:
        (H, W, K) float32 for one image, (B, H, W, K) for a batch array, and a list of
        (H_i, W_i, K) arrays for a list.

    Example:
        >>> import numpy as np
        >>> from vggunet import build_unet
        >>> lab = build_unet(input_size=(32, 32, 3), n_filters=2, n_classes=3)  # fixed size, logits
        >>> proba = predict_proba(lab, np.zeros((40, 50, 3), "float32"), from_logits=True)
        >>> proba.shape, bool(np.allclose(proba.sum(axis=-1), 1.0, atol=1e-5))
        ((40, 50, 3), True)
    """
    batch_size = check_int(batch_size, "batch_size", error=PredictionError)
    mirror_pad = _check_mirror_pad(mirror_pad)
    fixed_h, fixed_w, channels = _model_input(model)
    images, kind = _split_input(image)
    prepared = [
        _prepare(img, channels, "image" if kind == "single" else f"image {i}")
        for i, img in enumerate(images)
    ]
    options = dict(tta=tta, batch_size=batch_size, from_logits=from_logits, mirror_pad=mirror_pad)
    if fixed_h is not None or fixed_w is not None:
        results = _predict_fixed_size(model, prepared, (fixed_h, fixed_w), **options)
    else:
        results = _predict_any_size(model, prepared, **options)
    if kind == "single":
        return results[0]
    if kind == "batch":
        return np.stack(results)
    return results


def _predict_fixed_size(model: Any, prepared: list[np.ndarray], size: tuple[Any, Any],
                        **options: Any) -> list[np.ndarray]:
    """Each image through `predict_tiled` with tiles of the model's fixed input size."""
    fixed_h, fixed_w = size
    if fixed_h is None or fixed_w is None:
        raise PredictionError(
            f"models with only one fixed spatial size are not supported "
            f"(input {fixed_h}×{fixed_w})."
        )
    from vggunet.inference.tiling import predict_tiled  # tiling builds on this module

    overlap = min(fixed_h, fixed_w) // 4
    # No bar here: predict_proba is the low-level call; predict_tiled shows one when called.
    return [predict_tiled(model, img, tile=(fixed_h, fixed_w), overlap=overlap, verbose=False,
                          **options) for img in prepared]


def _predict_any_size(model: Any, prepared: list[np.ndarray], *, tta: bool, batch_size: int,
                      from_logits: bool, mirror_pad: int) -> list[np.ndarray]:
    """Same-shape images stacked `batch_size` at a time (mirrored, padded to the model's
    minimum size, cropped back)."""
    results: list[np.ndarray] = [np.empty(0)] * len(prepared)
    groups: dict[tuple[int, ...], list[int]] = {}
    minimum = _min_size(model)
    for i, img in enumerate(prepared):
        groups.setdefault(img.shape, []).append(i)
    for shape, indices in groups.items():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            padded = [_pad_to_min(_mirror(prepared[i], mirror_pad), minimum) for i in chunk]
            top, left = padded[0][1]
            top, left = top + mirror_pad, left + mirror_pad
            out = _run_tta(model, np.stack([p for p, _ in padded]), tta, from_logits)
            out = out[:, top:top + shape[0], left:left + shape[1]]
            for i, o in zip(chunk, out):
                results[i] = np.ascontiguousarray(o, dtype=np.float32)
    return results


def predict_mask(model: Any, image: Any, *, tta: bool = False, batch_size: int = 1,
                 from_logits: bool = False, mirror_pad: int = 0) -> Any:
    """Class-index masks: the argmax of `predict_proba` (`probability > 0.5` for one channel).

    Takes the same inputs as `predict_proba`; returns (H, W) int32 for one image, (B, H, W) for
    a batch array and a list of (H_i, W_i) for a list.

    Args:
        model: a Keras model mapping (B, H, W, C) pixels to (B, H, W, K).
        image: (H, W) or (H, W, C) image; (B, H, W, C) batch; or a list of images.
        tta: average over the 8 dihedral transforms before the argmax.
        batch_size: images per forward pass.
        from_logits: the model outputs logits (only matters for one output channel, where the
            threshold is applied to the sigmoid).
        mirror_pad: pixels of mirrored context added on each side (see `predict_proba`).

    Returns:
        (H, W) int32 class indices for one image, (B, H, W) for a batch array, a list of
        (H_i, W_i) arrays for a list.

    Example:
        >>> import numpy as np
        >>> from vggunet import build_unet
        >>> lab = build_unet(input_size=(32, 32, 3), n_filters=2, n_classes=3)
        >>> mask = predict_mask(lab, np.zeros((40, 50, 3), "float32"), from_logits=True)
        >>> mask.shape, mask.dtype, bool(mask.max() < 3)
        ((40, 50), dtype('int32'), True)
    """
    proba = predict_proba(model, image, tta=tta, batch_size=batch_size, from_logits=from_logits,
                          mirror_pad=mirror_pad)
    if isinstance(proba, list):
        return [scores_to_labels(p) for p in proba]
    return scores_to_labels(proba)
