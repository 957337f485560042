"""Inference with vggunet models: probabilities, masks, tiling, test-time augmentation, saving.

Models built by `build_vgg_unet` take raw pixels in [0, 255] of any H×W >= 32 and return
per-pixel probabilities; this module feeds them images of any size and shape:

* `predict_proba` / `predict_mask` — one image (H, W) / (H, W, C), a batch (B, H, W, C), or a
  list of images of mixed sizes. Grey images are repeated to 3 channels for RGB models, images
  smaller than 32 px are reflect-padded and cropped back, fixed-input models (the lab U-Net)
  are tiled with their input size.
* `predict_tiled` — large images in overlapping tiles blended with a smooth window; memory is
  bounded by the tile batch plus one (H, W, K) accumulator.
* `tta=True` — the mean of the probabilities over the 8 dihedral transforms (flips, 90° turns).
* `mirror_pad=N` — the U-Net paper's border trick: the image is extended by N mirrored pixels on
  every side before the forward pass and the prediction cropped back, so border pixels are
  predicted with context instead of the convolutions' zero padding.
* `save_mask_png`, `colorize`, `save_overlay`, `predict_folder` — writing results (atomically).

The lab's `create_mask` is kept, in numpy, for the notebooks.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

MIN_SIZE = 32
"""The smallest H or W a `build_vgg_unet` model accepts (its total stride)."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""The file types `predict_folder` reads (case-insensitive)."""


class PredictionError(ValueError):
    """An image or argument that prediction cannot use (NaN pixels, wrong channels, ...)."""


class OutputError(PredictionError, OSError):
    """An output file or folder that cannot be written (a `PredictionError` and an `OSError`)."""


# --------------------------------------------------------------------------------------------
# The lab's create_mask
# --------------------------------------------------------------------------------------------


def create_mask(pred_mask: Any) -> np.ndarray:
    """The lab's `create_mask` in numpy: the first image's class indices, with a channel axis.

    The lab code is `tf.argmax(pred_mask, axis=-1)[..., tf.newaxis][0]`. For a batch
    (B, H, W, K) this returns the (H, W, 1) mask of the *first* image, exactly as the lab does.
    A single (H, W, K) prediction is treated as a batch of one, so it also gives (H, W, 1) (the
    lab code would index the first row instead). With K = 1 (a sigmoid output) the mask is
    `probability > 0.5` rather than the argmax (which would always be 0).

    Args:
        pred_mask: (B, H, W, K) or (H, W, K) scores, e.g. `model.predict(images)`.

    Returns:
        An int64 array of shape (H, W, 1) (tf.argmax's dtype).

    Example:
        >>> import numpy as np
        >>> scores = np.array([[[[0.9, 0.1], [0.2, 0.8]],
        ...                     [[0.3, 0.7], [0.6, 0.4]]]])     # (1, 2, 2, K=2)
        >>> create_mask(scores)[..., 0]
        array([[0, 1],
               [1, 0]])
    """
    pred = np.asarray(pred_mask)
    if pred.ndim == 3:
        pred = pred[np.newaxis]
    if pred.ndim != 4 or pred.shape[0] == 0 or pred.shape[-1] == 0:
        raise PredictionError(
            f"create_mask expects (B, H, W, K) or (H, W, K) scores, got shape {pred.shape}."
        )
    if pred.shape[-1] == 1:
        mask = (pred[..., 0] > 0.5).astype(np.int64)
    else:
        mask = np.argmax(pred, axis=-1).astype(np.int64)
    return mask[..., np.newaxis][0]


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


def _prepare(image: Any, channels: int, what: str = "image") -> np.ndarray:
    """Checks one image and returns it as float32 (H, W, channels)."""
    array = np.asarray(image)
    if array.dtype == object:
        raise PredictionError(
            f"{what} is a ragged/object array of shape {array.shape}; pass images of different "
            f"sizes as a list, not as one array."
        )
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise PredictionError(f"{what} must hold numbers, got dtype {array.dtype}.")
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
    if isinstance(mirror_pad, bool) or not isinstance(mirror_pad, (int, np.integer)) \
            or mirror_pad < 0:
        raise PredictionError(f"mirror_pad must be an integer >= 0, got {mirror_pad!r}.")
    return int(mirror_pad)


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
    H×W, images smaller than 32 px on a side are reflect-padded (centred) to 32 and the output
    is cropped back. Models with a fixed input size (e.g. the lab U-Net, 96×128) are run
    through `predict_tiled` with tiles of exactly that size, whatever the image's size.

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
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PredictionError(f"batch_size must be a positive integer, got {batch_size!r}.")
    mirror_pad = _check_mirror_pad(mirror_pad)
    fixed_h, fixed_w, channels = _model_input(model)
    images, kind = _split_input(image)
    prepared = [
        _prepare(img, channels, "image" if kind == "single" else f"image {i}")
        for i, img in enumerate(images)
    ]
    results: list[np.ndarray | None] = [None] * len(prepared)
    if fixed_h is not None or fixed_w is not None:
        if fixed_h is None or fixed_w is None:
            raise PredictionError(
                f"models with only one fixed spatial size are not supported "
                f"(input {fixed_h}×{fixed_w})."
            )
        overlap = min(fixed_h, fixed_w) // 4
        for i, img in enumerate(prepared):
            results[i] = predict_tiled(
                model, img, tile=(fixed_h, fixed_w), overlap=overlap, tta=tta,
                batch_size=batch_size, from_logits=from_logits, mirror_pad=mirror_pad,
            )
    else:
        # Group same-shape images so they can share forward passes.
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, img in enumerate(prepared):
            groups.setdefault(img.shape, []).append(i)
        for shape, indices in groups.items():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                padded = [_pad_to_min(_mirror(prepared[i], mirror_pad), MIN_SIZE)
                          for i in chunk]
                top, left = padded[0][1]
                top, left = top + mirror_pad, left + mirror_pad
                out = _run_tta(model, np.stack([p for p, _ in padded]), tta, from_logits)
                out = out[:, top:top + shape[0], left:left + shape[1]]
                for i, o in zip(chunk, out):
                    results[i] = np.ascontiguousarray(o, dtype=np.float32)
    if kind == "single":
        return results[0]
    if kind == "batch":
        return np.stack(results)
    return results


def _mask_from_proba(proba: np.ndarray) -> np.ndarray:
    if proba.shape[-1] == 1:
        return (proba[..., 0] > 0.5).astype(np.int32)
    return np.argmax(proba, axis=-1).astype(np.int32)


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
        return [_mask_from_proba(p) for p in proba]
    return _mask_from_proba(proba)


def _pair(value: Any, name: str) -> tuple[int, int]:
    values = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
                               for v in values):
        raise PredictionError(f"{name} must be an integer or a pair of integers, got {value!r}.")
    return int(values[0]), int(values[1])


def _window_1d(length: int, overlap: int) -> np.ndarray:
    """A linear ramp over `overlap` pixels at each end, 1 in the middle, > 0 everywhere."""
    index = np.arange(length, dtype=np.float32)
    distance = np.minimum(index, length - 1 - index)
    return np.minimum(1.0, (distance + 1.0) / (overlap + 1.0)).astype(np.float32)


def _tile_starts(size: int, tile: int, overlap: int) -> tuple[list[int], int, int]:
    """Tile offsets along one axis in padded coordinates, and the (before, after) padding.

    The image gets `overlap // 2` pixels of margin before it, so its first pixels are not on the
    lowest-weight ramp of the first tile, and enough after it that the last tile is full-size.
    """
    if size <= tile:
        before = (tile - size) // 2
        return [0], before, tile - size - before
    stride = tile - overlap
    before = overlap // 2
    # Fewest tiles that leave at least `before` pixels of margin after the image too.
    count = max(1, math.ceil((size + 2 * before - tile) / stride)) + 1
    total = (count - 1) * stride + tile
    return [i * stride for i in range(count)], before, total - size - before


def _fit_tile(size: int, tile: int, overlap: int, multiple: int = 32) -> int:
    """The smallest tile length, a multiple of `multiple`, that covers `size` with as few tiles
    as `tile` does (or `tile` itself when no such multiple exists).

    A 1024 px side in 512 px tiles with 64 px overlap needs 3 tiles, which 416 px tiles also
    cover: 9 × 416² instead of 9 × 512² pixels computed (1.48× the image instead of 2.25×), so
    the cost per megapixel stays flat across image sizes. Multiples of 32 avoid the model's
    internal padding.
    """
    if size <= tile:
        return tile
    needed = len(_tile_starts(size, tile, overlap)[0])
    lowest = max(MIN_SIZE, 2 * overlap + 1)
    for candidate in range(-(-lowest // multiple) * multiple, tile, multiple):
        if len(_tile_starts(size, candidate, overlap)[0]) <= needed:
            return candidate
    return tile


def predict_tiled(model: Any, image: Any, *, tile: int | Sequence[int] = 512, overlap: int = 64,
                  tta: bool = False, batch_size: int = 4,
                  from_logits: bool = False, mirror_pad: int = 0) -> np.ndarray:
    """Predicts one large image in overlapping tiles and blends them.

    The image is reflect-padded so that every tile is full-size (and by `overlap // 2` on the
    top/left so the image's first pixels are inside a tile's ramp); tiles with stride
    `tile - overlap` are predicted `batch_size` at a time, each tile's probabilities weighted by a
    separable linear-ramp window (rising over `overlap` pixels from each edge, > 0 everywhere),
    accumulated into one (H, W, K) float32 array and one (H, W) weight array, and divided by
    the accumulated weight. Peak memory is the padded image, one tile batch and the two
    accumulators: the tile stack of the whole image is never built.

    For a model that accepts any size, `tile` is the largest tile: along each axis the tile is
    shrunk to the smallest multiple of 32 that needs no more tiles (a 1024 px side takes three
    416 px tiles rather than three 512 px ones), which keeps the time per megapixel flat across
    image sizes. If the image fits in one tile, it is predicted
    directly (no padding), so the result equals `predict_proba` exactly. For a model with a
    fixed input size, `tile` must be that size; with `tta` and a non-square fixed tile only the
    4 transforms that keep H and W (identity, flips, 180°) are used.

    Args:
        model: a Keras model mapping (B, h, w, C) to (B, h, w, K).
        image: (H, W) or (H, W, C) raw pixels (one image).
        tile: tile side, or (tile_h, tile_w); >= 32 and > 2 * overlap.
        overlap: pixels shared by neighbouring tiles (>= 0).
        tta: average each tile over the dihedral transforms.
        batch_size: tiles per forward pass.
        from_logits: apply softmax/sigmoid to each tile's output before blending.
        mirror_pad: pixels of mirrored context added around the whole image before tiling
            (see `predict_proba`); tiles inside the image already see their neighbours.

    Returns:
        (H, W, K) float32.
    """
    tile_h, tile_w = _pair(tile, "tile")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)) or overlap < 0:
        raise PredictionError(f"overlap must be an integer >= 0, got {overlap!r}.")
    overlap = int(overlap)
    fixed_h, fixed_w, channels = _model_input(model)
    fixed = fixed_h is not None or fixed_w is not None
    for side in (tile_h, tile_w):
        if side < MIN_SIZE and not fixed:
            raise PredictionError(f"tile must be >= {MIN_SIZE} pixels, got {tile!r}.")
        if side <= 2 * overlap:
            raise PredictionError(
                f"tile ({tile!r}) must be larger than 2 * overlap ({2 * overlap}), so that "
                f"tiles advance; lower overlap or raise tile."
            )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PredictionError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if fixed and (fixed_h, fixed_w) != (tile_h, tile_w):
        raise PredictionError(
            f"the model takes a fixed input of {fixed_h}×{fixed_w}; tile must be that size, "
            f"got {tile_h}×{tile_w}."
        )
    mirror_pad = _check_mirror_pad(mirror_pad)
    if np.asarray(image).ndim == 4:
        raise PredictionError("predict_tiled takes one image (H, W[, C]); loop over a batch.")
    img = _prepare(image, channels)
    if mirror_pad:
        out_h, out_w = img.shape[:2]
        whole = predict_tiled(model, _mirror(img, mirror_pad), tile=(tile_h, tile_w),
                              overlap=overlap, tta=tta, batch_size=batch_size,
                              from_logits=from_logits)
        return np.ascontiguousarray(whole[mirror_pad:mirror_pad + out_h,
                                          mirror_pad:mirror_pad + out_w])
    height, width = img.shape[:2]
    if not fixed and height <= tile_h and width <= tile_w:
        return predict_proba(model, img, tta=tta, from_logits=from_logits)

    if not fixed:
        tile_h = _fit_tile(height, tile_h, overlap)
        tile_w = _fit_tile(width, tile_w, overlap)
    ys, top, bottom = _tile_starts(height, tile_h, overlap)
    xs, left, right = _tile_starts(width, tile_w, overlap)
    padded = np.pad(img, ((top, bottom), (left, right), (0, 0)), mode="reflect")
    window = np.outer(_window_1d(tile_h, overlap), _window_1d(tile_w, overlap))
    square_only = fixed and tile_h != tile_w

    acc: np.ndarray | None = None
    weight = np.zeros((height, width), dtype=np.float32)
    positions = [(y, x) for y in ys for x in xs]
    # Balanced batches (9 tiles at batch_size 4: 3+3+3, not 4+4+1): a lone last tile runs at a
    # fraction of the throughput and costs one more traced shape.
    n_batches = math.ceil(len(positions) / batch_size)
    bounds = [round(i * len(positions) / n_batches) for i in range(n_batches + 1)]
    for start, stop in zip(bounds, bounds[1:]):
        chunk = positions[start:stop]
        batch = np.stack([padded[y:y + tile_h, x:x + tile_w] for y, x in chunk])
        out = _run_tta(model, batch, tta, from_logits, square_only=square_only)
        if acc is None:
            acc = np.zeros((height, width, out.shape[-1]), dtype=np.float32)
        for (y, x), probs in zip(chunk, out):
            # The tile's part inside the image, in image and in tile coordinates.
            y0, y1 = max(y, top), min(y + tile_h, top + height)
            x0, x1 = max(x, left), min(x + tile_w, left + width)
            if y0 >= y1 or x0 >= x1:
                continue
            w = window[y0 - y:y1 - y, x0 - x:x1 - x]
            region = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
            acc[region] += probs[y0 - y:y1 - y, x0 - x:x1 - x] * w[..., None]
            weight[region] += w
    assert acc is not None
    acc /= weight[..., None]
    return acc


# --------------------------------------------------------------------------------------------
# Writing results
# --------------------------------------------------------------------------------------------


def _prepare_folder(path: Path) -> None:
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create the output folder '{folder}': {error}") from error
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"the output folder '{folder}' is not writable.")


def _atomic_save(pil_image: Any, path: str | os.PathLike) -> Path:
    """Saves a PIL image as PNG through a temporary file in the same folder and `os.replace`."""
    path = Path(path)
    _prepare_folder(path)
    # Not tempfile.mkstemp: its 0600 mode would survive os.replace; open() honours the umask.
    temp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        stream = open(temp, "xb")
    except OSError as error:
        raise OutputError(f"cannot write in the output folder '{path.parent}': {error}") from error
    try:
        with stream:
            pil_image.save(stream, format="PNG")
        os.replace(temp, path)
    except BaseException as error:
        try:
            os.unlink(temp)
        except OSError:
            pass
        if isinstance(error, OSError) and not isinstance(error, OutputError):
            raise OutputError(f"cannot write '{path}': {error}") from error
        raise
    return path


def _check_mask(mask: Any) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2 or array.size == 0:
        raise PredictionError(
            f"a mask must be (H, W) or (H, W, 1) class indices, got {array.shape}."
        )
    if array.dtype == bool:
        return array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating):
            raise PredictionError(
                f"a mask must hold integer class indices, got dtype {array.dtype}."
            )
        _check_finite(array, "mask")
        if np.any(array != np.round(array)):
            raise PredictionError("a mask must hold integer class indices, got fractional values.")
    array = array.astype(np.int64)
    if array.min() < 0:
        raise PredictionError(f"mask class indices must be >= 0, got {int(array.min())}.")
    return array


def save_mask_png(mask: Any, path: str | os.PathLike) -> Path:
    """Writes class indices as a PNG: 8-bit grey for indices <= 255, 16-bit up to 65535.

    Parent folders are created; the file is written atomically (temporary file, then
    `os.replace`). Reading it back with PIL (`np.asarray(Image.open(path))`) gives the indices.

    Args:
        mask: (H, W) or (H, W, 1) non-negative integer class indices.
        path: the .png to write.

    Returns:
        The path written.
    """
    from PIL import Image

    array = _check_mask(mask)
    top = int(array.max())
    if top > 65535:
        raise PredictionError(f"mask class index {top} does not fit a 16-bit PNG (max 65535).")
    dtype = np.uint8 if top <= 255 else np.uint16
    return _atomic_save(Image.fromarray(np.ascontiguousarray(array.astype(dtype))), path)


def default_palette(n: int) -> np.ndarray:
    """`n` distinct RGB colours (the PASCAL VOC colour map: class 0 black, 1 dark red, ...).

    Bits of the class index are spread over the high bits of R, G and B, so all 2**24 indices
    get distinct colours.

    Args:
        n: number of classes.

    Returns:
        (n, 3) uint8 RGB colours, row i for class i.

    Example:
        >>> default_palette(3)
        array([[  0,   0,   0],
               [128,   0,   0],
               [  0, 128,   0]], dtype=uint8)
    """
    index = np.arange(n, dtype=np.int64)
    rgb = np.zeros((n, 3), dtype=np.int64)
    c = index.copy()
    for j in range(8):
        for channel in range(3):
            rgb[:, channel] |= ((c >> channel) & 1) << (7 - j)
        c >>= 3
    return rgb.astype(np.uint8)


def colorize(mask: Any, palette: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Colours a class-index mask.

    Args:
        mask: (H, W) or (H, W, 1) class indices.
        palette: RGB colours indexed by class ([[r, g, b], ...], 0-255); default
            `default_palette`. Must have an entry for every class in the mask.

    Returns:
        (H, W, 3) uint8.

    Example:
        >>> import numpy as np
        >>> colorize(np.array([[0, 1], [2, 1]]))[0]
        array([[  0,   0,   0],
               [128,   0,   0]], dtype=uint8)
    """
    array = _check_mask(mask)
    top = int(array.max())
    if palette is None:
        colours = default_palette(top + 1)
    else:
        colours = np.asarray(palette)
        if colours.ndim != 2 or colours.shape[1] != 3 or len(colours) == 0:
            raise PredictionError(
                f"palette must be a list of RGB triples, got shape {colours.shape}."
            )
        if not np.issubdtype(colours.dtype, np.number) or colours.min() < 0 or colours.max() > 255:
            raise PredictionError("palette colours must be numbers in 0-255.")
        if top >= len(colours):
            raise PredictionError(
                f"the mask has class {top} but the palette has only {len(colours)} colours."
            )
        colours = colours.astype(np.uint8)
    return colours[array]


def _as_rgb_uint8(image: Any) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise PredictionError(
            f"an overlay image must be grey (H, W) or RGB (H, W, 3), got shape {array.shape}."
        )
    array = array[..., :3].astype(np.float32)
    _check_finite(array)
    return np.clip(np.round(array), 0, 255).astype(np.uint8)


def overlay_image(image: Any, mask: Any, *, alpha: float = 0.5,
            palette: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """`(1 - alpha) * image + alpha * colorize(mask)` as (H, W, 3) uint8 (image in raw pixels).

    Args:
        image: (H, W), (H, W, 1) or (H, W, 3) raw pixels.
        mask: (H, W) class indices of the same height and width.
        alpha: weight of the mask colours, in [0, 1].
        palette: RGB colours per class (default `default_palette`).

    Returns:
        (H, W, 3) uint8 blended image.

    Example:
        >>> import numpy as np
        >>> overlay_image(np.full((1, 2, 3), 200, "uint8"), np.array([[0, 1]]))[0, :, 0]
        array([100, 164], dtype=uint8)
"""
    if not 0.0 <= float(alpha) <= 1.0:
        raise PredictionError(f"alpha must be in [0, 1], got {alpha!r}.")
    rgb = _as_rgb_uint8(image)
    colours = colorize(mask, palette)
    if rgb.shape[:2] != colours.shape[:2]:
        raise PredictionError(
            f"image {rgb.shape[:2]} and mask {colours.shape[:2]} differ in height/width."
        )
    blended = (1.0 - alpha) * rgb.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def save_overlay(image: Any, mask: Any, path: str | os.PathLike, alpha: float = 0.5,
                 palette: Sequence[Sequence[int]] | None = None) -> Path:
    """Writes `overlay_image(image, mask)` as an RGB PNG (atomically, creating parent folders).

    Every pixel is blended, background included (class 0 is black in the default palette).

    Args:
        image: (H, W), (H, W, 1) or (H, W, 3) raw pixels.
        mask: (H, W) class indices.
        path: destination `.png` file.
        alpha: weight of the mask colours, in [0, 1].
        palette: RGB colours per class (default `default_palette`).

    Returns:
        The path written.
    """
    from PIL import Image

    blended = overlay_image(image, mask, alpha=alpha, palette=palette)
    return _atomic_save(Image.fromarray(blended), path)


# --------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------


def read_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """Reads an image with PIL as float32 raw pixels.

    Grey images stay (H, W) (predict repeats them to the model's channels); with `channels=3`
    colour images become (H, W, 3) RGB (alpha dropped, palettes expanded); with `channels=1`
    everything is converted to grey. 16-bit images are scaled to 0-255. EXIF orientation is
    applied; of a multi-frame file only the first frame is read.

    Args:
        path: the image file.
        channels: 1 (grey) or 3 (RGB).

    Returns:
        float32 (H, W) or (H, W, 3) raw pixel values.

    Raises:
        PredictionError: the file is missing, not an image, truncated or corrupt, or declares
            more pixels than PIL's `Image.MAX_IMAGE_PIXELS` allows.
    """
    import struct
    import zlib

    from PIL import Image, ImageOps, UnidentifiedImageError

    if channels not in (1, 3):
        raise PredictionError(f"channels must be 1 or 3, got {channels!r}.")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode.startswith("I;16"):
                return np.asarray(img, dtype=np.float32) / 257.0
            if img.mode in ("I", "F"):
                if channels == 3 or img.mode == "F":
                    return np.asarray(img, dtype=np.float32)
            if channels == 1 or img.mode in ("L", "1", "LA"):
                return np.asarray(img.convert("L"), dtype=np.float32)
            return np.asarray(img.convert("RGB"), dtype=np.float32)
    # PIL reports damaged files with many exception types (ValueError for a short chunk,
    # struct.error, EOFError, DecompressionBombError ...); all mean "cannot read this image".
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError,
            TypeError, KeyError, AssertionError, struct.error, zlib.error, MemoryError,
            Image.DecompressionBombError) as error:
        raise PredictionError(f"cannot read image '{path}': {type(error).__name__}: "
                              f"{error}") from error


def _inside(folder: Path, name: str) -> Path:
    target = (folder / name).resolve()
    if target.parent != folder:
        raise PredictionError(f"output name {name!r} would be written outside '{folder}'.")
    return target


def predict_folder(model: Any, input_dir: str | os.PathLike, output_dir: str | os.PathLike, *,
                   tile: int | Sequence[int] | None = None, tta: bool = False,
                   mirror_pad: int = 0, overlay: bool = True,
                   channels: int = 3, from_logits: bool = False,
                   palette: Sequence[Sequence[int]] | None = None) -> list[Path]:
    """Predicts every image in a folder and writes `<stem>.png` masks (and overlays).

    Reads the .png/.jpg/.jpeg/.bmp/.tif/.tiff files directly in `input_dir` (sorted by name,
    not recursive) with `read_image`, predicts with `predict_proba` (or `predict_tiled` with
    `overlap = min(64, tile // 4)` when `tile` is given), and writes into `output_dir` the mask
    `<stem>.png` (`save_mask_png`) and, with `overlay`, `<stem>_overlay.png`. Before predicting
    anything it refuses output names that collide (`a.png` and `a.jpg`), would overwrite an input
    file, or would land outside `output_dir`.

    Args:
        model: a Keras segmentation model.
        input_dir: folder of images.
        output_dir: folder for the masks and overlays (created).
        tile: predict in tiles of this size (int or (H, W)) instead of whole images.
        tta: average over the 8 flips/rotations.
        mirror_pad: pixels of mirrored context added on each side (see `predict_proba`).
        overlay: also write `<stem>_overlay.png`.
        channels: read images as 1 (grey) or 3 (RGB) channels.
        from_logits: the model outputs logits.
        palette: RGB colours per class for the overlays.

    Returns:
        The written paths, in order (mask, then its overlay, per image).
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise PredictionError(f"input folder '{input_dir}' does not exist or is not a folder.")
    if channels not in (1, 3):
        raise PredictionError(f"channels must be 1 or 3, got {channels!r}.")
    mirror_pad = _check_mirror_pad(mirror_pad)
    tile_hw = None if tile is None else _pair(tile, "tile")
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create the output folder '{output_dir}': {error}") from error
    out_root = output_dir.resolve()

    sources = sorted(p for p in input_dir.iterdir()
                     if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    inputs = {p.resolve() for p in sources}
    plan: list[tuple[Path, Path, Path | None]] = []
    seen: dict[Path, Path] = {}
    for source in sources:
        names = [f"{source.stem}.png"] + ([f"{source.stem}_overlay.png"] if overlay else [])
        targets = [_inside(out_root, name) for name in names]
        for target in targets:
            if target in seen:
                raise PredictionError(
                    f"'{source.name}' and '{seen[target].name}' would both write '{target.name}'."
                )
            if target in inputs:
                raise PredictionError(
                    f"writing '{target}' would overwrite an input image; use another output folder."
                )
            seen[target] = source
        plan.append((source, targets[0], targets[1] if overlay else None))

    written: list[Path] = []
    for source, mask_path, overlay_path in plan:
        image = read_image(source, channels)
        if tile is None:
            proba = predict_proba(model, image, tta=tta, from_logits=from_logits,
                                  mirror_pad=mirror_pad)
        else:
            proba = predict_tiled(model, image, tile=tile, overlap=min(64, min(tile_hw) // 4),
                                  tta=tta, from_logits=from_logits, mirror_pad=mirror_pad)
        mask = _mask_from_proba(proba)
        written.append(save_mask_png(mask, mask_path))
        if overlay_path is not None:
            written.append(save_overlay(image, mask, overlay_path, palette=palette))
    return written


__all__ = [
    "IMAGE_SUFFIXES",
    "MIN_SIZE",
    "OutputError",
    "PredictionError",
    "colorize",
    "create_mask",
    "default_palette",
    "overlay_image",
    "predict_folder",
    "predict_mask",
    "predict_proba",
    "predict_tiled",
    "read_image",
    "save_mask_png",
    "save_overlay",
]
