"""Tiled prediction of large images: overlapping tiles blended with a linear-ramp window."""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import numpy as np

from vggunet.checks import check_int
from vggunet.console import Progress
from vggunet.errors import PredictionError
from vggunet.inference.predict import (
    _check_mirror_pad, _min_size, _mirror, _model_input, _prepare, _run_tta, predict_proba,
)


def _pair(value: Any, name: str) -> tuple[int, int]:
    values = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
                               for v in values):
        raise PredictionError(f"{name} must be an integer or a pair of integers, got {value!r}.")
    return int(values[0]), int(values[1])


def default_overlap(tile: int | Sequence[int]) -> int:
    """The tile overlap used when none is given: a quarter of the tile, at most 64 pixels.

    Args:
        tile: tile side, or (tile_h, tile_w).

    Returns:
        `min(64, min(tile) // 4)`.

    Example:
        >>> default_overlap(512), default_overlap((96, 128))
        (64, 24)
    """
    return min(64, min(_pair(tile, "tile")) // 4)


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


def _fit_tile(size: int, tile: int, overlap: int, multiple: int = 32,
              minimum: int = 32) -> int:
    """The smallest tile length, a multiple of `multiple`, that covers `size` with as few tiles
    as `tile` does (or `tile` itself when no such multiple exists).

    A 1024 px side in 512 px tiles with 64 px overlap needs 3 tiles, which 416 px tiles also
    cover: 9 × 416² instead of 9 × 512² pixels computed (1.48× the image instead of 2.25×), so
    the cost per megapixel stays flat across image sizes. Multiples of 32 avoid the model's
    internal padding. No tile is below `minimum`, the model's smallest input.
    """
    if size <= tile:
        return tile
    needed = len(_tile_starts(size, tile, overlap)[0])
    lowest = max(minimum, 2 * overlap + 1)
    for candidate in range(-(-lowest // multiple) * multiple, tile, multiple):
        if len(_tile_starts(size, candidate, overlap)[0]) <= needed:
            return candidate
    return tile


def predict_tiled(model: Any, image: Any, *, tile: int | Sequence[int] = 512, overlap: int = 64,
                  tta: bool = False, batch_size: int = 4, from_logits: bool = False,
                  mirror_pad: int = 0, verbose: bool = True) -> np.ndarray:
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
        tile: tile side, or (tile_h, tile_w); >= the model's minimum input size (32 px for
            most) and > 2 * overlap.
        overlap: pixels shared by neighbouring tiles (>= 0).
        tta: average each tile over the dihedral transforms.
        batch_size: tiles per forward pass.
        from_logits: apply softmax/sigmoid to each tile's output before blending.
        mirror_pad: pixels of mirrored context added around the whole image before tiling
            (see `predict_proba`); tiles inside the image already see their neighbours.
        verbose: show a progress bar (count and ETA) over the tile batches when there is more
            than one.

    Returns:
        (H, W, K) float32.
    """
    (tile_h, tile_w), overlap, batch_size, fixed = _check_tiling(model, tile, overlap, batch_size)
    mirror_pad = _check_mirror_pad(mirror_pad)
    if np.asarray(image).ndim == 4:
        raise PredictionError("predict_tiled takes one image (H, W[, C]); loop over a batch.")
    img = _prepare(image, _model_input(model)[2])
    if mirror_pad:
        out_h, out_w = img.shape[:2]
        whole = predict_tiled(model, _mirror(img, mirror_pad), tile=(tile_h, tile_w),
                              overlap=overlap, tta=tta, batch_size=batch_size,
                              from_logits=from_logits, verbose=verbose)
        return np.ascontiguousarray(whole[mirror_pad:mirror_pad + out_h,
                                          mirror_pad:mirror_pad + out_w])
    height, width = img.shape[:2]
    if not fixed and height <= tile_h and width <= tile_w:
        return predict_proba(model, img, tta=tta, from_logits=from_logits)
    if not fixed:
        tile_h = _fit_tile(height, tile_h, overlap, minimum=_min_size(model))
        tile_w = _fit_tile(width, tile_w, overlap, minimum=_min_size(model))
    run = functools.partial(_run_tta, model, tta=tta, from_logits=from_logits,
                            square_only=fixed and tile_h != tile_w)
    return _blend_tiles(run, img, (tile_h, tile_w), overlap, batch_size, verbose)


def _check_tiling(model: Any, tile: Any, overlap: Any,
                  batch_size: Any) -> tuple[tuple[int, int], int, int, bool]:
    """Checks tile, overlap and batch size against each other and the model's input.

    Returns `((tile_h, tile_w), overlap, batch_size, fixed)`, `fixed` when the model takes one
    input size only.
    """
    tile_h, tile_w = _pair(tile, "tile")
    overlap = check_int(overlap, "overlap", minimum=0, error=PredictionError)
    fixed_h, fixed_w, _ = _model_input(model)
    fixed = fixed_h is not None or fixed_w is not None
    for side in (tile_h, tile_w):
        if side < _min_size(model) and not fixed:
            raise PredictionError(f"tile must be >= {_min_size(model)} pixels (the model's "
                                  f"minimum input size), got {tile!r}.")
        if side <= 2 * overlap:
            raise PredictionError(
                f"tile ({tile!r}) must be larger than 2 * overlap ({2 * overlap}), so that "
                f"tiles advance; lower overlap or raise tile."
            )
    batch_size = check_int(batch_size, "batch_size", error=PredictionError)
    if fixed and (fixed_h, fixed_w) != (tile_h, tile_w):
        raise PredictionError(
            f"the model takes a fixed input of {fixed_h}×{fixed_w}; tile must be that size, "
            f"got {tile_h}×{tile_w}."
        )
    return (tile_h, tile_w), overlap, batch_size, fixed


def _blend_tiles(run: Callable[[np.ndarray], np.ndarray], img: np.ndarray,
                 tile: tuple[int, int], overlap: int, batch_size: int,
                 verbose: bool) -> np.ndarray:
    """Runs `run` on balanced batches of tiles and blends them into an (H, W, K) array."""
    (height, width), (tile_h, tile_w) = img.shape[:2], tile
    ys, top, bottom = _tile_starts(height, tile_h, overlap)
    xs, left, right = _tile_starts(width, tile_w, overlap)
    padded = np.pad(img, ((top, bottom), (left, right), (0, 0)), mode="reflect")
    window = np.outer(_window_1d(tile_h, overlap), _window_1d(tile_w, overlap))
    acc: np.ndarray | None = None
    weight = np.zeros((height, width), dtype=np.float32)
    positions = [(y, x) for y in ys for x in xs]
    # Balanced batches (9 tiles at batch_size 4: 3+3+3, not 4+4+1): a lone last tile runs at a
    # fraction of the throughput and costs one more traced shape.
    n_batches = math.ceil(len(positions) / batch_size)
    bounds = [round(i * len(positions) / n_batches) for i in range(n_batches + 1)]
    with Progress(n_batches, unit="tile batch", verbose=verbose) as progress:
        for start, stop in zip(bounds, bounds[1:]):
            chunk = positions[start:stop]
            out = run(np.stack([padded[y:y + tile_h, x:x + tile_w] for y, x in chunk]))
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
            progress.advance()
    assert acc is not None
    acc /= weight[..., None]
    return acc
